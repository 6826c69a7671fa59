"""Fixtures for store tests: a store file per test, summaries to record, child processes, tmpfs."""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tango_oet.domain.requests import ProcedureInput
from tango_oet.domain.scripts import EmbeddedScript, FilesystemScript, GitRef, GitScript, Script
from tango_oet.domain.states import ProcedureState
from tango_oet.domain.summary import CallRecord, ErrorInfo, ProcedureSummary, Progress, utc_now
from tango_oet.store import Store, StoreOptions

CHILD = Path(__file__).with_name("child.py")
ROOT = Path(__file__).resolve().parents[2]

#: Tests gather no batches: a change is committed as soon as the writer sees it.
FAST = StoreOptions(commit_interval=0.0, retry_interval=0.01, max_retry_interval=0.05)

S = ProcedureState


def make_summary(
    pid: int,
    state: ProcedureState = S.READY,
    *,
    script: Script | None = None,
    commit: str | None = None,
    calls: tuple[CallRecord, ...] = (),
    error: ErrorInfo | None = None,
    progress: Progress | None = None,
) -> ProcedureSummary:
    now = utc_now()
    history = ((S.CREATING, now),) if state is S.CREATING else ((S.CREATING, now), (state, now))
    return ProcedureSummary(
        id=pid,
        state=state,
        script=script or FilesystemScript(f"/scripts/s{pid}.py"),
        init=ProcedureInput(args=(1, "é€"), kwargs={"k": [1, 2]}),
        history=history,
        calls=calls,
        progress=progress,
        error=error,
        pid=4000 + pid,
        git_commit=commit,
    )


def git_summary(pid: int, commit: str = "a" * 40) -> ProcedureSummary:
    script = GitScript("obs/field.py", GitRef("https://example.org/obs.git", branch="main"))
    return make_summary(pid, S.COMPLETE, script=script, commit=commit)


def embedded_summary(pid: int, source: str) -> ProcedureSummary:
    return make_summary(pid, S.COMPLETE, script=EmbeddedScript("inline", source))


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "history" / "dev.sqlite3"


@pytest.fixture
def open_store(path: Path) -> Iterator[Callable[..., Store]]:
    """Open stores on `path` (or another file) that are closed when the test ends."""
    opened: list[Store] = []

    def open_(where: Path | None = None, **kwargs: Any) -> Store:
        kwargs.setdefault("options", FAST)
        store = Store(where or path, **kwargs)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


class Child:
    """tests/store/child.py in its own interpreter: a store owner the test can kill -9."""

    def __init__(self, *args: str, preexec: Callable[[], None] | None = None) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, str(CHILD), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            preexec_fn=preexec,
        )
        self._selector = selectors.DefaultSelector()
        assert self.popen.stdout is not None
        self._selector.register(self.popen.stdout, selectors.EVENT_READ)

    def message(self, timeout: float = 20.0) -> dict[str, Any]:
        """The next JSON line the child prints; raises with its stderr if none comes."""
        assert self.popen.stdout is not None
        if not self._selector.select(timeout):
            self.kill()
            raise AssertionError(f"the child said nothing within {timeout} s: {self._err()}")
        line = self.popen.stdout.readline()
        if not line:
            self.popen.wait(10)
            raise AssertionError(f"the child exited ({self.popen.returncode}): {self._err()}")
        result: dict[str, Any] = json.loads(line)
        return result

    def kill(self) -> None:
        """kill -9, and reap it."""
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(10)

    def _err(self) -> str:
        assert self.popen.stderr is not None
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)
        return self.popen.stderr.read().decode(errors="replace")[-3000:]

    def close(self) -> None:
        self.kill()
        for stream in (self.popen.stdin, self.popen.stdout, self.popen.stderr):
            if stream is not None:
                stream.close()
        self._selector.close()


@pytest.fixture
def child() -> Iterator[Callable[..., Child]]:
    started: list[Child] = []

    def start(*args: str, preexec: Callable[[], None] | None = None) -> Child:
        c = Child(*args, preexec=preexec)
        started.append(c)
        return c

    yield start
    for c in started:
        c.close()


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mount a small tmpfs (root only); skips, saying why, where the host does not allow it."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        where = tmp_path / f"tmpfs{len(mounted)}"
        where.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True)


def remount(where: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(where)], check=True)


def is_root() -> bool:
    return os.geteuid() == 0
