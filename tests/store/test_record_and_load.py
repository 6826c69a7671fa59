"""What is recorded comes back: the latest summary of each procedure, its tails, the device's
output, user events and embedded sources; erasing and retention remove exactly what they say."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from tango_oet.domain.scripts import EmbeddedScript
from tango_oet.domain.states import ProcedureState as S
from tango_oet.store import Store, StoreOptions
from tests.store.conftest import FAST, embedded_summary, make_summary

OpenStore = Callable[..., Store]


def test_the_latest_summary_of_each_procedure_is_restored_oldest_first(
    open_store: OpenStore, path: Path
) -> None:
    store = open_store()
    for pid in (1, 2, 3):
        store.record_summary(make_summary(pid, S.CREATING))
        store.record_summary(make_summary(pid, S.READY))
    store.close()

    restored = open_store().load(limit=2)
    assert [p.id for p in restored.procedures] == [2, 3]
    assert [p.state for p in restored.procedures] == ["READY", "READY"]
    assert restored.summaries == [p.summary for p in restored.procedures]
    assert restored.procedures[0].summary["history"][-1][0] == "READY"


def test_a_summary_may_be_given_as_object_json_object_or_json_text(open_store: OpenStore) -> None:
    store = open_store()
    store.record_summary(make_summary(1))
    store.record_summary(make_summary(2).to_json())
    store.record_summary(make_summary(3).to_json_text())
    restored = store.load(10)
    assert [p.summary for p in restored.procedures] == [
        make_summary(i).to_json() | {"history": restored.procedures[i - 1].summary["history"]}
        for i in (1, 2, 3)
    ]


def test_a_restored_summary_is_the_domain_summary_it_was(open_store: OpenStore) -> None:
    store = open_store()
    original = make_summary(7, S.COMPLETE)
    store.record_summary(original)
    (restored,) = store.load(10).procedures
    assert restored.to_summary() == original


def test_an_embedded_scripts_source_is_kept_beside_its_summary(open_store: OpenStore) -> None:
    store = open_store()
    source = "def main():\n    return 'é'\n"
    store.record_summary(embedded_summary(1, source))
    store.record_summary(embedded_summary(1, source))  # written once, not per change
    (restored,) = store.load(10).procedures
    assert restored.embedded_source == source
    assert restored.to_summary().script == EmbeddedScript("inline", source)


def test_output_keeps_the_last_lines_of_each_procedure_and_the_device_order(
    open_store: OpenStore,
) -> None:
    store = open_store(options=StoreOptions(commit_interval=0.0, output_lines=3))
    for pid in (1, 2):
        store.record_summary(make_summary(pid))
    store.append_output(1, [f"a{i}" for i in range(5)])
    store.append_output(2, ["b0"])
    store.flush()
    store.append_output(1, ["a5"])
    restored = store.load(10, output_lines=100)
    assert [p.output for p in restored.procedures] == [("a3", "a4", "a5"), ("b0",)]
    assert restored.output == ("1 a3", "1 a4", "2 b0", "1 a5")
    assert store.load(10, output_lines=2).output == ("2 b0", "1 a5")


def test_user_events_keep_a_tail_per_procedure_and_the_newest_is_last_event(
    open_store: OpenStore,
) -> None:
    store = open_store(options=StoreOptions(commit_interval=0.0, user_events=2))
    store.record_summary(make_summary(1))
    events = [{"id": 1, "topic": "t", "payload": {"n": n}, "time": "…", "seq": n} for n in range(3)]
    for event in events:
        store.append_user_event(1, event)
    restored = store.load(10)
    assert restored.procedures[0].events == tuple(events[1:])
    assert restored.last_event == events[-1]


def test_remove_procedure_erases_its_record_output_and_events(open_store: OpenStore) -> None:
    store = open_store()
    for pid in (store.allocate_id(), store.allocate_id()):
        store.record_summary(make_summary(pid))
        store.append_output(pid, ["line"])
        store.append_user_event(pid, {"id": pid, "topic": "t", "payload": {}})
    store.remove_procedure(1)
    restored = store.load(10)
    assert [p.id for p in restored.procedures] == [2]
    assert restored.output == ("2 line",)
    store.close()
    assert open_store().allocate_id() == 3  # an erased id is still never given again


def test_output_and_events_of_old_procedures_are_dropped_summaries_kept(
    open_store: OpenStore,
) -> None:
    store = open_store(options=StoreOptions(commit_interval=0.0, tails_of_procedures=2))
    for pid in (1, 2, 3, 4):
        store.record_summary(make_summary(pid))
        store.append_output(pid, [f"out {pid}"])
        store.flush()
    restored = store.load(10)
    assert [p.id for p in restored.procedures] == [1, 2, 3, 4]
    assert [p.output for p in restored.procedures] == [(), (), ("out 3",), ("out 4",)]


def test_keep_procedures_bounds_the_record(open_store: OpenStore) -> None:
    store = open_store(options=StoreOptions(commit_interval=0.0, keep_procedures=2))
    for pid in (1, 2, 3):
        store.record_summary(make_summary(pid))
        store.flush()
    assert [p.id for p in store.load(10).procedures] == [2, 3]


def test_a_record_that_cannot_be_stored_is_reported_and_the_rest_is_written(
    open_store: OpenStore,
) -> None:
    store = open_store()
    store.record_summary("{not json")
    store.record_summary({"id": 2, "state": "NOT_A_STATE", "script": {}})
    store.record_summary(make_summary(3))
    store.flush()
    ok, message = store.health()
    assert not ok
    assert "could not be stored" in message and str(store.path) in message
    assert [p.id for p in store.load(10).procedures] == [3]
    assert store.stats().rejected == 2


def test_the_record_is_plain_sqlite_readable_while_the_store_is_open(
    open_store: OpenStore, path: Path
) -> None:
    store = open_store()
    store.record_summary(make_summary(1, S.COMPLETE))
    store.flush()
    conn = sqlite3.connect(path)
    try:
        ((state, text),) = conn.execute("SELECT state, summary FROM procedures").fetchall()
    finally:
        conn.close()
    assert state == "COMPLETE"
    assert json.loads(text)["script"]["uri"] == "file:///scripts/s1.py"


def test_records_after_close_are_dropped_without_raising(open_store: OpenStore) -> None:
    store = open_store()
    store.close()
    store.record_summary(make_summary(1))  # the engine's last events may race with a close
    store.append_output(1, ["late"])
    reopened = open_store()
    assert reopened.load(10).procedures == ()


def test_limits_must_not_be_negative(open_store: OpenStore) -> None:
    with pytest.raises(ValueError, match="limit"):
        open_store().load(-1)


def test_options_are_checked(path: Path) -> None:
    with pytest.raises(ValueError, match="output_lines"):
        StoreOptions(output_lines=-1)
    with pytest.raises(ValueError, match="synchronous"):
        StoreOptions(synchronous="OFF")  # type: ignore[arg-type]
    assert FAST.commit_interval == 0.0
