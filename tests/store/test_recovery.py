"""After the server went away: what was live is final in the record, at the restart's time."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from tango_oet.domain.states import ProcedureState as S
from tango_oet.domain.summary import summary_from_json
from tango_oet.store import Store
from tests.store.conftest import Child

OpenStore = Callable[..., Store]
RESTART = datetime(2026, 12, 2, 21, 30, 0, 123456, tzinfo=UTC)
RESTART_ISO = "2026-12-02T21:30:00.123456Z"


def _after_kill_9(child: Callable[..., Child], path: Path) -> dict[str, object]:
    owner = child("live", str(path))
    said = owner.message()
    owner.kill()
    return said


def test_live_procedures_are_listed_with_their_last_recorded_state_and_pid(
    child: Callable[..., Child], open_store: OpenStore, path: Path
) -> None:
    said = _after_kill_9(child, path)
    live = open_store().interrupted()
    states = said["states"]
    assert isinstance(states, list)
    expected = [(i + 1, s) for i, s in enumerate(states) if s not in ("COMPLETE", "FAILED")]
    assert [(p.id, p.state) for p in live] == expected
    assert [p.pid for p in live] == [4000 + pid for pid, _ in expected]


def test_mark_interrupted_fails_every_live_procedure_with_server_restarted(
    child: Callable[..., Child], open_store: OpenStore, path: Path
) -> None:
    _after_kill_9(child, path)
    store = open_store()
    recovery = store.mark_interrupted(RESTART)
    assert recovery.time == RESTART_ISO
    assert [p.state for p in recovery.procedures] == [
        "READY",
        "RUNNING",
        "PAUSED",
        "STOPPING",
        "CREATING",
    ]
    store.close()

    restored = open_store().load(10)
    by_id = {p.id: p for p in restored.procedures}
    for was in recovery.procedures:
        record = by_id[was.id]
        assert record.state == "FAILED"
        assert record.summary["history"][-1] == ["FAILED", RESTART_ISO]
        assert record.summary["history"][:-1] == was.summary["history"][:-1]
        error = record.summary["error"]
        assert error["type"] == "ServerRestarted"
        assert f"was {was.state}" in error["message"] and RESTART_ISO in error["message"]
        assert record.to_summary().state is S.FAILED
    assert by_id[1].summary["error"] is None  # a final procedure is left as it was
    assert by_id[7].state == "FAILED" and by_id[7].summary["error"] is None
    assert by_id[1].state == "COMPLETE"


def test_a_procedure_whose_process_was_not_accounted_for_becomes_unknown(
    child: Callable[..., Child], open_store: OpenStore, path: Path
) -> None:
    _after_kill_9(child, path)
    store = open_store()
    store.mark_interrupted(RESTART, unaccounted={3})
    states = {p.id: p.state for p in store.load(10).procedures}
    assert states[3] == "UNKNOWN"
    assert states[2] == "FAILED"
    assert store.interrupted() == []


def test_the_running_queue_item_fails_waiting_ones_wait_again_and_the_queue_is_idle(
    child: Callable[..., Child], open_store: OpenStore, path: Path
) -> None:
    said = _after_kill_9(child, path)
    store = open_store()
    assert store.load(0).queue.state == "RUNNING"
    recovery = store.mark_interrupted(RESTART)
    assert recovery.queue_items == (said["running"],)
    assert recovery.queue_was == "RUNNING"
    queue = store.load(0).queue
    assert queue.state == "IDLE"
    assert [(i.id, i.state) for i in queue.items] == [(said["waiting"], "PENDING")]
    (failed,) = queue.finished
    assert (failed.id, failed.state, failed.ended) == (said["running"], "FAILED", RESTART_ISO)
    assert failed.to_json()["error"]["type"] == "ServerRestarted"


def test_recovery_is_committed_when_it_returns(
    child: Callable[..., Child], open_store: OpenStore, path: Path
) -> None:
    _after_kill_9(child, path)
    recovery = open_store().mark_interrupted(RESTART)
    # No close: read the file as a second process would.
    from tango_oet.store.reads import connect_reader
    from tango_oet.store.recovery import live_procedures

    conn = connect_reader(path)
    try:
        assert live_procedures(conn) == []
    finally:
        conn.close()
    assert all(summary_from_json(p.summary).state is S.FAILED for p in recovery.procedures)
