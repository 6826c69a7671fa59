"""Device-test script: a busy loop that never calls checkpoint(), so only SIGTERM stops it."""


def main() -> None:
    n = 0
    while True:
        n += 1
