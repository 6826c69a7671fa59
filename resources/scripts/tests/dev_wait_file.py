"""Device-test script: `main` returns once a file exists (the test's gate); honours Stop/Pause."""

import os
import time

from tango_oet.scripting import checkpoint

_gate = ""


def init(gate: str) -> None:
    global _gate
    _gate = gate


def main(result: str = "released") -> str:
    while not os.path.exists(_gate):
        checkpoint()  # pause and cooperative stop take effect here
        time.sleep(0.002)  # poll the gate file; the test itself never sleeps
    return result
