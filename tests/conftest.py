"""Session-wide guarantees: every test run ends with no child process left behind."""

from __future__ import annotations

from collections.abc import Iterator

import psutil
import pytest

# The multiprocessing forkserver and resource tracker are per-interpreter helpers that exit with
# pytest itself; anything else still alive at the end was leaked by a test.
_HELPERS = ("forkserver", "resource_tracker")


def _leaked() -> list[psutil.Process]:
    leaked = []
    for child in psutil.Process().children(recursive=True):
        try:
            cmdline = " ".join(child.cmdline())
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        if not any(h in cmdline for h in _HELPERS):
            leaked.append(child)
    return leaked


@pytest.fixture(scope="session", autouse=True)
def no_child_process_left() -> Iterator[None]:
    yield
    leaked = _leaked()
    if leaked:
        for p in leaked:
            p.kill()
        desc = [f"{p.pid}: {' '.join(p.cmdline())}" for p in leaked]
        pytest.fail(f"child processes left behind by the test session: {desc}")
