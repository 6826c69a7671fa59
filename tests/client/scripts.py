"""Embedded test scripts for client and CLI tests (sent as `embedded://` source)."""

from __future__ import annotations

#: Each step waits for a gate file the test creates once it has seen the previous step's event,
#: so the order of what the client receives is fixed by the test, not by timing.
GATED = """
import os
import time

from tango_oet.scripting import checkpoint, progress, publish

_gates = ""


def init(gates):
    global _gates
    _gates = gates


def _wait(name):
    while not os.path.exists(os.path.join(_gates, name)):
        checkpoint()
        time.sleep(0.002)  # polls a file the test creates


def main():
    print("first line")
    _wait("1")
    publish("step", n=1)
    _wait("2")
    progress(1, 2, "half way")
    _wait("3")
    print("last line")
    return "done"
"""

#: Blocks in checkpoint() until stopped (or until the gate file exists).
WAIT_GATE = """
import os
import time

from tango_oet.scripting import checkpoint


def main(gate):
    print("waiting for", gate)
    while not os.path.exists(gate):
        checkpoint()
        time.sleep(0.002)  # polls a file the test creates
    return "released"
"""

RAISES = """
def main():
    raise RuntimeError("broken on purpose")
"""

ADD = """
def main(a, b=0, *, scale=1):
    return (a + b) * scale
"""
