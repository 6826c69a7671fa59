"""A broken store: refused with a typed error naming the file and the cause; a damaged file is
moved aside, never written over; a write failure is reported and loses nothing committed."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from tango_oet.store import Store, StoreCorrupt, StoreError, StoreInUse, StoreOptions
from tango_oet.store.schema import MIGRATIONS
from tests.store.conftest import Child, is_root, make_summary, remount
from tests.waiting import Recorder

OpenStore = Callable[..., Store]
Mount = Callable[[str], Path]


def _filled(open_store: OpenStore, where: Path, count: int = 3) -> list[int]:
    store = open_store(where)
    ids = [store.allocate_id() for _ in range(count)]
    for pid in ids:
        store.record_summary(make_summary(pid))
    store.close()
    return ids


# ---- cannot be opened ---------------------------------------------------------------------
def test_a_directory_that_cannot_be_created_is_refused_naming_it(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreError) as refused:
        Store(blocker / "history" / "dev.sqlite3")
    assert str(blocker) in str(refused.value)
    assert "cannot create its directory" in refused.value.problem


def test_a_read_only_directory_is_refused_naming_the_file(tmpfs: Mount) -> None:
    where = tmpfs("1m")
    remount(where, "ro")
    path = where / "dev.sqlite3"
    with pytest.raises(StoreError) as refused:
        Store(path)
    assert str(path) in str(refused.value)
    assert "Read-only file system" in str(refused.value)


@pytest.mark.skipif(is_root(), reason="root writes anywhere: the tmpfs test covers it")
def test_an_unwritable_directory_is_refused_naming_the_file(tmp_path: Path) -> None:
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(StoreError, match=r"dev\.sqlite3"):
            Store(tmp_path / "dev.sqlite3")
    finally:
        tmp_path.chmod(0o755)


def test_an_existing_store_on_a_read_only_disk_is_refused_and_left_intact(
    tmpfs: Mount, open_store: OpenStore
) -> None:
    where = tmpfs("4m")
    path = where / "dev.sqlite3"
    ids = _filled(open_store, path)
    remount(where, "ro")
    with pytest.raises(StoreError, match=r"dev\.sqlite3"):
        Store(path)
    remount(where, "rw")
    assert [p.id for p in open_store(path).load(10).procedures] == ids


def test_a_second_owner_is_refused_while_the_first_holds_the_file(
    child: Callable[..., Child], path: Path
) -> None:
    holder = child("hold", str(path))
    holder.message()
    with pytest.raises(StoreInUse, match=f"in use by another open store \\(pid {holder.popen.pid}"):
        Store(path)
    holder.kill()  # a dead owner's lock goes with it (flock): kill -9 never blocks a restart
    Store(path).close()


# ---- damaged files ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "damage",
    ["garbage", "truncated", "empty"],
)
def test_a_damaged_file_is_moved_aside_untouched_and_refused(
    open_store: OpenStore, path: Path, damage: str
) -> None:
    _filled(open_store, path, 300)
    if damage == "garbage":
        path.write_bytes(b"this is not a database" * 100)
    elif damage == "truncated":
        with path.open("r+b") as f:
            f.truncate(path.stat().st_size // 2)
    else:
        path.write_bytes(b"")
    damaged = path.read_bytes()

    with pytest.raises(StoreCorrupt) as refused:
        Store(path)
    error = refused.value
    assert str(path) in str(error) and str(error.moved_to) in str(error)
    assert error.moved_to.name.startswith("dev.sqlite3.corrupt-")
    assert error.moved_to.read_bytes() == damaged
    assert not path.exists()  # no fresh store was started by that open


def test_after_a_damaged_file_the_next_open_starts_anew_with_ids_after_the_old_ones(
    open_store: OpenStore, path: Path
) -> None:
    _filled(open_store, path, 300)
    with path.open("r+b") as f:  # the counters page survives, a later page does not
        f.truncate(path.stat().st_size // 2)
    with pytest.raises(StoreCorrupt) as refused:
        Store(path)

    fresh = open_store()
    assert fresh.allocate_id() > 300
    (notice,) = fresh.notices
    assert "a new store was started" in notice and str(refused.value.moved_to) in notice


def test_a_foreign_sqlite_file_is_refused_and_left_where_it_is(path: Path) -> None:
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE accounts (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="not an OETScheduler store") as refused:
        Store(path)
    assert not isinstance(refused.value, StoreCorrupt)
    assert path.exists()


def test_a_file_from_a_newer_release_is_refused_and_left_as_it_is(
    open_store: OpenStore, path: Path
) -> None:
    _filled(open_store, path)
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this release"):
        Store(path)
    assert os.path.exists(path)


# ---- write failures after open ---------------------------------------------------------------
def test_a_full_disk_is_reported_loses_nothing_committed_and_recovers(tmpfs: Mount) -> None:
    where = tmpfs("4m")
    filler = where / "filler"
    filler.write_bytes(b"\0" * 3_500_000)
    health: Recorder[tuple[bool, str]] = Recorder()
    options = StoreOptions(
        commit_interval=0.0, retry_interval=0.01, max_retry_interval=0.05, output_lines=50
    )
    store = Store(where / "dev.sqlite3", options=options, on_health=lambda *h: health(h))
    try:
        ids = [store.allocate_id() for _ in range(3)]
        for pid in ids:
            store.record_summary(make_summary(pid))
        store.flush()
        big = ["x" * 10_000] * 10
        for _ in range(100):
            store.append_output(ids[0], big)
        seen = health.wait_for(lambda s: any(not ok for ok, _ in s), what="disk full reported")
        message = next(why for ok, why in seen if not ok)
        assert "dev.sqlite3" in message and "full" in message
        store.record_summary(make_summary(4))  # accepted while the disk is full

        filler.unlink()
        health.wait_for(lambda s: s[-1][0], what="healthy once there is room")
        store.flush()
        restored = store.load(10)
        assert [p.id for p in restored.procedures] == [*ids, 4]
    finally:
        store.close()


def test_a_file_size_limit_is_reported_and_the_file_stays_readable(
    child: Callable[..., Child], open_store: OpenStore, path: Path
) -> None:
    filler = child("fill", str(path), "100000")
    report = filler.message()
    assert report.get("ok") is False or "flush_error" in report
    if "flush_error" in report:
        report = filler.message()
    assert str(path) in report["message"]
    filler.kill()
    restored = open_store().load(10)
    assert [p.id for p in restored.procedures] == [1]
