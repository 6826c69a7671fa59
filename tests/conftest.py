"""Session-wide guarantees: every test run ends with no child process left behind."""

from __future__ import annotations

from collections.abc import Iterator

import psutil
import pytest

# The multiprocessing forkserver and resource tracker are per-interpreter helpers that exit with
# pytest itself; anything else still alive at the end was leaked by a test. Only DIRECT children
# can be helpers: workers are forked by the forkserver and share its command line.
_HELPERS = ("forkserver", "resource_tracker")


def _leaked() -> list[psutil.Process]:
    me = psutil.Process()
    helpers = set()
    for child in me.children():
        try:
            if any(h in " ".join(child.cmdline()) for h in _HELPERS):
                helpers.add(child.pid)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    leaked = []
    for proc in me.children(recursive=True):
        try:
            if proc.pid in helpers or proc.status() == psutil.STATUS_ZOMBIE:
                continue
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        leaked.append(proc)
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
