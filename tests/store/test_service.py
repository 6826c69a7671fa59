"""The store as the service uses it, and issue 9 through the service's `health()`.

Issue 9: a broken store (unwritable directory, corrupt file, disk full) makes State FAULT with a
Status naming the file and the error; the device keeps answering; nothing already stored is
lost; a corrupt file is kept aside. The device turns a service that cannot be built into FAULT
with the exception's text (init_device) and an unhealthy one into FAULT with `health()`'s
message (on_idle); these tests check what the service gives it.
"""

from __future__ import annotations

import errno
import os
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tango_oet.domain import EmbeddedScript, PrepareRequest, ProcedureInput, ProcedureState
from tango_oet.execution.supervisor import StopDeadlines
from tango_oet.service import ScriptExecutionService, ServiceConfig, ServiceEvent, StateChanged
from tango_oet.store import Store, StoreCorrupt, StoreError
from tests.store.conftest import FAST, make_summary, remount
from tests.waiting import Recorder

S = ProcedureState
NAME = "test/store/1"
Mount = Callable[[str], Path]


# ---- the calls the service makes ---------------------------------------------------------------
def test_the_calls_the_service_makes_keep_their_meaning(path: Path) -> None:
    store = Store(path, options=FAST)
    try:
        assert store.peek_ids(2) == [1, 2]
        first, second = store.allocate_id(), store.allocate_id()
        store.save(make_summary(first, S.COMPLETE))
        store.save(make_summary(second, S.RUNNING))
        store.append_output(second, ["hello", "world"])
        store.append_event(second, {"id": second, "topic": "t", "payload": 1, "seq": 1})
        store.flush()
        assert store.health()[0]
    finally:
        store.close()
    reopened = Store(path, options=FAST)
    try:
        restored = reopened.restore(10, 1)
        assert [s["id"] for s in restored.summaries] == [first, second]
        assert restored.summaries[-1]["state"] == "RUNNING"
        assert restored.output == (f"{second} world",)
        assert restored.next_id == second + 1 == reopened.peek_ids(1)[0]
    finally:
        reopened.close()


# ---- issue 9 through a real service ------------------------------------------------------------
class Engine:
    """A named service (so its history is durable) with a recorder of what it published."""

    def __init__(self, data_dir: Path) -> None:
        config = ServiceConfig(
            instance_name=NAME,
            data_dir=data_dir,
            pool_size=1,
            deadlines=StopDeadlines(cooperative_s=0.02, term_s=1.0, kill_s=3.0),
        )
        self.service = ScriptExecutionService(config)
        self.events: Recorder[ServiceEvent] = Recorder()
        self.service.subscribe(self.events)
        self.service.open()

    def prepare(self, **kwargs: object) -> int:
        script = EmbeddedScript("test", textwrap.dedent("def main():\n    return 1\n"))
        return self.service.prepare(PrepareRequest(script, ProcedureInput((), dict(kwargs))))

    def wait_ready(self, pid: int) -> None:
        def ready(events: list[ServiceEvent]) -> bool:
            return any(
                isinstance(e, StateChanged) and e.procedure_id == pid and e.state is S.READY
                for e in events
            )

        self.events.wait_for(ready, 30.0, f"procedure {pid} READY")

    def wait_health(self, healthy: bool, timeout: float = 30.0) -> str:
        """The device polls health() (on_idle); so does this, until it says `healthy`."""
        deadline = time.monotonic() + timeout
        pause = threading.Event()
        while True:
            ok, why = self.service.health()
            if ok is healthy:
                return why
            if time.monotonic() > deadline:
                raise AssertionError(f"health not {healthy} after {timeout} s; last: {why!r}")
            pause.wait(0.02)


@pytest.fixture
def engines() -> Iterator[Callable[[Path], Engine]]:
    started: list[Engine] = []

    def start(data_dir: Path) -> Engine:
        engine = Engine(data_dir)
        started.append(engine)
        return engine

    yield start
    for engine in started:
        engine.service.shutdown()


def store_file(data_dir: Path) -> Path:
    return data_dir / "history" / f"{NAME.replace('/', '_')}.sqlite3"


def fill(where: Path) -> Path:
    """A file that takes every free block of the file system `where` is on."""
    filler = where / "filler"
    chunk = b"\0" * 65536
    with filler.open("wb") as f:
        try:
            while True:
                f.write(chunk)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return filler


def test_a_full_disk_makes_the_service_unhealthy_naming_the_file_and_loses_nothing(
    tmpfs: Mount, engines: Callable[[Path], Engine]
) -> None:
    where = tmpfs("8m")
    engine = engines(where)
    stored = engine.prepare()
    engine.wait_ready(stored)
    filler = fill(where)

    # Its summary (with a large argument) needs room the disk does not have.
    waiting = engine.prepare(big="x" * 500_000)
    why = engine.wait_health(False)
    assert str(store_file(where)) in why and "full" in why, why
    # The service keeps answering, from memory.
    assert [s.id for s in engine.service.list()] == [stored, waiting]
    assert engine.service.describe(waiting).init.kwargs["big"] == "x" * 500_000

    filler.unlink()
    engine.wait_health(True)  # the kept changes are retried and written
    engine.service.shutdown()

    again = engines(where)
    assert [s.id for s in again.service.list()] == [stored, waiting]
    assert again.service.describe(waiting).init.kwargs["big"] == "x" * 500_000


def test_a_corrupt_store_stops_the_service_naming_the_file_and_is_kept_aside(
    tmp_path: Path, engines: Callable[[Path], Engine]
) -> None:
    engine = engines(tmp_path)
    first = engine.prepare()
    engine.wait_ready(first)
    engine.service.shutdown()
    path = store_file(tmp_path)
    damaged = b"this is not sqlite" + os.urandom(4096)
    path.write_bytes(damaged)

    with pytest.raises(StoreCorrupt) as caught:
        engines(tmp_path)
    assert str(path) in str(caught.value) and "moved aside" in str(caught.value)
    assert caught.value.moved_to.read_bytes() == damaged  # kept, as it was found
    assert not path.exists()

    # The next start (the operator's Init) begins a new store; ids do not repeat the old ones.
    after = engines(tmp_path)
    assert after.service.list() == []
    assert after.prepare() > first


def test_an_unwritable_directory_stops_the_service_naming_the_file(
    tmpfs: Mount, engines: Callable[[Path], Engine]
) -> None:
    where = tmpfs("1m")
    remount(where, "ro")
    with pytest.raises(StoreError) as caught:
        engines(where)
    assert str(store_file(where)) in str(caught.value)
    assert caught.value.reason == "OET_StoreUnavailable"
