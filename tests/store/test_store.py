"""The store keeps every summary, output tail and id across restarts, and fails loudly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tango_oet.domain.requests import ProcedureInput
from tango_oet.domain.scripts import FilesystemScript
from tango_oet.domain.states import ProcedureState
from tango_oet.domain.summary import ProcedureSummary, summary_from_json, utc_now
from tango_oet.store import Store, StoreError
from tango_oet.store import store as store_module


def _summary(pid: int, state: ProcedureState = ProcedureState.READY) -> ProcedureSummary:
    return ProcedureSummary(
        id=pid,
        state=state,
        script=FilesystemScript(f"/scripts/s{pid}.py"),
        init=ProcedureInput(args=(1, "é€"), kwargs={"k": [1, 2]}),
        history=((ProcedureState.CREATING, utc_now()), (state, utc_now())),
    )


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "history" / "dev.sqlite3"


def test_the_latest_summary_of_each_procedure_is_restored_in_id_order(path: Path) -> None:
    store = Store(path)
    ids = [store.allocate_id() for _ in range(3)]
    for pid in ids:
        store.save(_summary(pid, ProcedureState.CREATING))
        store.save(_summary(pid, ProcedureState.READY))
    store.close()

    restored = Store(path).restore(limit=2, output_lines=10)
    assert [s["id"] for s in restored.summaries] == ids[1:]
    assert all(s["state"] == "READY" for s in restored.summaries)
    again = summary_from_json(restored.summaries[0])
    assert again.to_json() == _summary(ids[1]).to_json() | {"history": again.to_json()["history"]}


def test_ids_are_never_given_twice_even_when_the_server_was_killed(path: Path) -> None:
    first = Store(path)
    given = [first.allocate_id() for _ in range(5)]
    # No close: a kill -9 leaves the file as the last commit made it.
    second = Store(path)
    later = [second.allocate_id() for _ in range(5)]
    assert min(later) > max(given)
    first.close()
    second.close()


def test_after_a_clean_close_ids_continue_without_a_gap(path: Path) -> None:
    store = Store(path)
    assert [store.allocate_id() for _ in range(3)] == [1, 2, 3]
    store.close()
    reopened = Store(path)
    assert reopened.allocate_id() == 4
    reopened.close()


def test_ids_continue_after_the_highest_stored_procedure(path: Path) -> None:
    store = Store(path)
    store.save(_summary(500))
    store.close()
    reopened = Store(path)
    assert reopened.allocate_id() == 501
    reopened.close()


def test_output_keeps_the_last_lines_of_each_procedure_in_order(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "OUTPUT_LINES_KEPT", 3)
    store = Store(path)
    store.append_output(1, [f"a{i}" for i in range(5)])
    store.append_output(2, ["b0"])
    store.append_output(1, ["a5"])
    store.close()
    assert Store(path).restore(limit=10, output_lines=100).output == [
        "1 a3",
        "1 a4",
        "2 b0",
        "1 a5",
    ]


def test_a_corrupt_file_is_refused_naming_it_and_left_untouched(path: Path) -> None:
    path.parent.mkdir(parents=True)
    garbage = b"this is not a database" * 100
    path.write_bytes(garbage)
    with pytest.raises(StoreError) as refused:
        Store(path)
    assert str(path) in str(refused.value)
    assert path.read_bytes() == garbage


def test_a_directory_that_cannot_be_created_is_refused_naming_it(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreError) as refused:
        Store(blocker / "history" / "dev.sqlite3")
    assert str(blocker) in str(refused.value)


def test_a_failing_write_is_reported_and_what_was_stored_stays(path: Path) -> None:
    store = Store(path)
    store.save(_summary(1))
    store.flush()
    # Break the writer's connection underneath it, as a vanished disk would.
    store._conn.close()
    store.save(_summary(2))
    with pytest.raises(StoreError, match=str(path)):
        store.flush()
    ok, message = store.health()
    assert not ok
    assert str(path) in message
    store.close()
    assert [s["id"] for s in Store(path).restore(10, 10).summaries] == [1]


def test_a_file_from_a_newer_release_is_refused(path: Path) -> None:
    Store(path).close()
    import sqlite3

    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 999")
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        Store(path)
    assert os.path.exists(path)
