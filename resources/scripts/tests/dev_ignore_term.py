"""Device-test script: ignores SIGTERM and never checks for a stop; only SIGKILL ends it."""

import signal


def init() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def main() -> None:
    n = 0
    while True:
        n += 1
