"""The writer thread: the engine never waits on the disk; batches; failures are loud and retried;
the thread never dies silently."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tango_oet.domain.states import ProcedureState as S
from tango_oet.store import Store, StoreError, StoreOptions
from tango_oet.store import writes as writes_module
from tests.store.conftest import FAST, make_summary
from tests.waiting import Recorder

OpenStore = Callable[..., Store]


def test_enqueueing_never_waits_for_the_disk(open_store: OpenStore, path: Path) -> None:
    store = open_store(options=StoreOptions(commit_interval=0.0, busy_timeout_ms=60_000))
    store.record_summary(make_summary(1))
    store.flush()
    # Another process's write transaction holds the file: every commit must wait for it.
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        for pid in range(2, 2002):
            store.record_summary(make_summary(pid))
            store.append_output(pid, ["a line"])
        with pytest.raises(StoreError, match="timed out"):
            store.flush(timeout=0.2)
        assert [p.id for p in _committed(path)] == [1]
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    store.flush()
    assert len(_committed(path)) == 2001


def test_changes_are_committed_in_batches_the_latest_summary_winning(
    open_store: OpenStore,
) -> None:
    store = open_store(options=StoreOptions(commit_interval=0.05))
    for _ in range(100):
        for pid in (1, 2, 3):
            store.record_summary(make_summary(pid, S.RUNNING))
    store.flush()
    stats = store.stats()
    assert stats.enqueued == 300
    assert stats.commits < 10
    assert stats.written_summaries < 30


def test_flush_makes_everything_enqueued_before_it_visible_to_any_reader(
    open_store: OpenStore, path: Path
) -> None:
    store = open_store(options=StoreOptions(commit_interval=60.0))  # only flush commits
    store.record_summary(make_summary(1, S.COMPLETE))
    store.flush()
    assert [s.state for s in _committed(path)] == ["COMPLETE"]


def test_a_failing_write_is_reported_kept_and_retried_until_it_succeeds(
    open_store: OpenStore, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    health: Recorder[tuple[bool, str]] = Recorder()
    store = open_store(on_health=lambda ok, why: health((ok, why)))
    store.record_summary(make_summary(1))
    store.flush()
    broken = threading.Event()
    broken.set()
    real = writes_module.BatchWriter.write

    def write(self: Any, pending: Any) -> Any:
        if broken.is_set():
            raise sqlite3.OperationalError("disk I/O error")
        return real(self, pending)

    monkeypatch.setattr(writes_module.BatchWriter, "write", write)
    store.record_summary(make_summary(2))
    with pytest.raises(StoreError, match="disk I/O error"):
        store.flush()
    health.wait_for(lambda seen: any(not ok for ok, _ in seen), what="an unhealthy report")
    ok, message = store.health()
    assert not ok and str(path) in message and "disk I/O error" in message
    broken.clear()
    health.wait_for(lambda seen: seen[-1][0], what="healthy again after the retry")
    assert [p.id for p in _committed(path)] == [1, 2]


def test_a_writer_that_dies_of_a_bug_says_so_and_releases_waiters(
    open_store: OpenStore, path: Path
) -> None:
    health: Recorder[tuple[bool, str]] = Recorder()
    store = open_store(on_health=lambda ok, why: health((ok, why)))
    store._writer.put((99,))  # an operation the writer cannot understand: a bug
    health.wait_for(lambda seen: bool(seen) and not seen[-1][0], what="the death report")
    ok, message = store.health()
    assert not ok and "writer thread died" in message and str(path) in message
    with pytest.raises(StoreError, match="died"):
        store.flush(timeout=30)  # at once, not after the timeout


def test_a_sqlite3_cli_users_write_lock_only_delays_commits(
    open_store: OpenStore, path: Path
) -> None:
    store = open_store(options=StoreOptions(commit_interval=0.0, busy_timeout_ms=60_000))
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    store.record_summary(make_summary(1))
    blocker.execute("ROLLBACK")
    blocker.close()
    store.flush()
    assert store.health()[0]
    assert [p.id for p in _committed(path)] == [1]


def test_fast_options_are_what_the_tests_use() -> None:
    assert FAST.commit_interval == 0.0


def _committed(path: Path) -> list[Any]:
    """What an independent reader sees in the file."""
    from tango_oet.store.reads import connect_reader, load

    conn = connect_reader(path)
    try:
        ids = {"procedure": 1, "queue_item": 1}
        return list(
            load(conn, limit=10_000, output_lines=0, finished_items=0, next_ids=ids).procedures
        )
    finally:
        conn.close()
