"""The command runner: output, exit codes, and killing the whole process group on cancel/timeout."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import psutil
import pytest

from tango_oet.domain.errors import EnvironmentError_
from tango_oet.environments.procs import Cancelled, clean_env, run

NEVER = threading.Event()


def test_output_and_exit_code() -> None:
    done = run(["sh", "-c", "echo out; echo err >&2; exit 3"], cancel=NEVER, timeout=30)
    assert done.returncode == 3
    assert "out" in done.output and "err" in done.output


def test_tail_is_bounded() -> None:
    done = run(["sh", "-c", "yes line | head -n 5000; echo LAST"], cancel=NEVER, timeout=30)
    tail = done.tail(100)
    assert len(tail) <= 101 and tail.endswith("LAST")


def test_clean_env_hides_the_servers_python(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", "/server/site-packages")
    monkeypatch.setenv("VIRTUAL_ENV", "/server/venv")
    env = clean_env({"EXTRA": "1"})
    assert "PYTHONPATH" not in env and "VIRTUAL_ENV" not in env and env["EXTRA"] == "1"


def _background_pid(fifo: Path, started: list[int], cancel: threading.Event | None) -> None:
    with open(fifo) as f:  # blocks until the command has started its background child
        started.append(int(f.read().split()[0]))
    if cancel is not None:
        cancel.set()


def live_children() -> set[int]:
    """Our live descendants (other tests' helpers, e.g. a forkserver, may be among them)."""
    pids = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                pids.add(child.pid)
        except psutil.NoSuchProcess:
            pass
    return pids


def assert_gone(pid: int, timeout: float = 10.0) -> None:
    """`pid` is dead: gone, or a zombie (an orphan waits for init to reap it, which can be slow)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        # SIGKILL is delivered when the target is next scheduled: a few ms at most.
        assert time.monotonic() < deadline, f"process {pid} survived"
        time.sleep(0.005)


def test_cancel_kills_the_group_promptly(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    cancel = threading.Event()
    started: list[int] = []
    watcher = threading.Thread(target=_background_pid, args=(fifo, started, cancel))
    watcher.start()
    before = live_children()
    t0 = time.monotonic()
    with pytest.raises(Cancelled, match=r"^cancelled$"):
        # The grandchild `sleep` is what a naive kill of the direct child would leave behind.
        run(["sh", "-c", f"sleep 600 & echo $! > {fifo}; wait"], cancel=cancel, timeout=600)
    watcher.join()
    assert time.monotonic() - t0 < 10
    assert_gone(started[0])
    assert live_children() <= before


def test_timeout_kills_the_group(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    started: list[int] = []
    watcher = threading.Thread(target=_background_pid, args=(fifo, started, None))
    watcher.start()
    with pytest.raises(EnvironmentError_, match="timed out after"):
        run(["sh", "-c", f"sleep 600 & echo $! > {fifo}; wait"], cancel=NEVER, timeout=0.5)
    watcher.join()
    assert_gone(started[0])


def test_leftover_children_are_swept_after_a_normal_exit(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    started: list[int] = []
    watcher = threading.Thread(target=_background_pid, args=(fifo, started, None))
    watcher.start()
    # The shell exits at once, leaving its background child running in the group.
    done = run(["sh", "-c", f"sleep 600 & echo $! > {fifo}"], cancel=NEVER, timeout=60)
    watcher.join()
    assert done.returncode == 0
    assert_gone(started[0])


def test_missing_executable() -> None:
    with pytest.raises(EnvironmentError_, match="cannot run"):
        run(["/nonexistent/tool"], cancel=NEVER, timeout=5)
