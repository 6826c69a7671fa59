"""The device model without Tango: which pushes each service event causes, and properties."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tango_oet.device.model import (
    AddProcedure,
    DeviceModel,
    DeviceState,
    Op,
    Push,
    RemoveProcedure,
    SetState,
    chunk_lines,
)
from tango_oet.device.properties import config_from_properties
from tango_oet.domain.requests import ProcedureInput
from tango_oet.domain.scripts import EmbeddedScript
from tango_oet.domain.states import ProcedureState
from tango_oet.domain.summary import ProcedureSummary, utc_now
from tango_oet.service.config import default_data_dir
from tango_oet.service.events import (
    OutputAppended,
    ProcedureAdded,
    ProcedureRemoved,
    ServiceStatusChanged,
    StateChanged,
    SummaryChanged,
    UserEventPublished,
)

S = ProcedureState


def pushes(ops: list[Op]) -> list[Push]:
    return [op for op in ops if isinstance(op, Push)]


def summary(pid: int, *states: ProcedureState) -> ProcedureSummary:
    now = utc_now()
    return ProcedureSummary(
        id=pid,
        state=states[-1],
        script=EmbeddedScript("x", "x = 1"),
        init=ProcedureInput(),
        history=tuple((s, now) for s in states),
    )


def test_a_new_procedure_gets_attributes_then_its_first_values() -> None:
    model = DeviceModel()
    ops = model.apply([ProcedureAdded(summary(1, S.CREATING))])
    assert ops[0] == AddProcedure(1)
    pushed = [op.attribute for op in ops if isinstance(op, Push)]
    assert pushed == ["procedure1State", "lastTransition", "procedure1Summary", "procedures"]
    assert Push("procedure1State", int(S.CREATING), archive=True) in ops
    assert model.procedure_state(1) is S.CREATING
    assert model.wait_added(1, timeout=0)
    # Summaries are encoded only when a push (or a read) needs them.
    assert json.loads(pushes(ops)[2].resolve())["state"] == "CREATING"
    assert json.loads(pushes(ops)[3].resolve())[0]["id"] == 1


def test_every_state_change_is_pushed_but_procedures_once_per_batch() -> None:
    model = DeviceModel()
    model.apply([ProcedureAdded(summary(1, S.CREATING))])
    ops = model.apply(
        [
            StateChanged(1, S.IDLE, summary(1, S.CREATING, S.IDLE)),
            StateChanged(1, S.LOADING, summary(1, S.CREATING, S.IDLE, S.LOADING)),
            SummaryChanged(1, summary(1, S.CREATING, S.IDLE, S.LOADING)),
        ]
    )
    states = [op.value for op in ops if isinstance(op, Push) and op.attribute.endswith("State")]
    assert states == [int(S.IDLE), int(S.LOADING)]
    # The summary is pushed once per batch, its latest version.
    summary_pushes = [op for op in pushes(ops) if op.attribute == "procedure1Summary"]
    assert len(summary_pushes) == 1
    assert json.loads(summary_pushes[0].resolve())["state"] == "LOADING"
    transitions = [json.loads(op.value) for op in pushes(ops) if op.attribute == "lastTransition"]
    assert [(t["state"], t["seq"]) for t in transitions] == [("IDLE", 2), ("LOADING", 3)]
    assert [op.attribute for op in ops if isinstance(op, Push)].count("procedures") == 1
    assert json.loads(model.procedures_json())[0]["state"] == "LOADING"


def test_removal_and_unknown_removal() -> None:
    model = DeviceModel()
    model.apply([ProcedureAdded(summary(1, S.CREATING)), ProcedureAdded(summary(2, S.CREATING))])
    ops = model.apply([ProcedureRemoved(1), ProcedureRemoved(7)])
    assert ops == [RemoveProcedure(1), Push("procedures")]
    assert [p["id"] for p in json.loads(pushes(ops)[0].resolve())] == [2]
    assert model.procedure_ids() == [2]
    assert model.procedure_state(1) is None


def test_user_events_are_each_pushed_and_output_keeps_its_place_in_chunks() -> None:
    model = DeviceModel(output_chunk_lines=3)
    ops = model.apply(
        [
            UserEventPublished(1, "a", {"x": 1}, "t1", 1),
            OutputAppended(("1 a", "1 b")),
            OutputAppended(("1 c", "1 d")),
            UserEventPublished(1, "b", {}, "t2", 2),
            OutputAppended(("1 e",)),
        ]
    )
    assert [(op.attribute, op.value if op.attribute == "output" else None)
            for op in pushes(ops)] == [
        ("lastEvent", None),
        ("output", ["1 a", "1 b", "1 c"]),
        ("output", ["1 d"]),
        ("lastEvent", None),
        ("output", ["1 e"]),
    ]  # fmt: skip
    assert json.loads(model.last_event()) == {
        "id": 1, "topic": "b", "payload": {}, "time": "t2", "seq": 2
    }  # fmt: skip


def test_output_printed_before_a_state_change_is_pushed_before_it() -> None:
    model = DeviceModel()
    model.apply([ProcedureAdded(summary(1, S.CREATING))])
    ops = model.apply(
        [OutputAppended(("1 last line",)), StateChanged(1, S.COMPLETE, summary(1, S.COMPLETE))]
    )
    names = [op.attribute for op in pushes(ops)]
    assert names.index("output") < names.index("procedure1State")


def test_device_state_follows_the_service_status_and_fault_sticks() -> None:
    model = DeviceModel()
    assert model.state is DeviceState.INIT
    assert model.apply([ServiceStatusChanged(0, True, "engine healthy")]) == [
        SetState(DeviceState.ON, "Idle: no procedure running; engine healthy")
    ]
    ops = model.apply([ServiceStatusChanged(2, True, "engine healthy")])
    assert ops == [
        SetState(DeviceState.RUNNING, "2 procedure(s) running or paused; engine healthy")
    ]
    assert model.apply([ServiceStatusChanged(2, True, "engine healthy")]) == []
    ops = model.apply([ServiceStatusChanged(0, False, "pump died")])
    assert ops == [SetState(DeviceState.FAULT, "The script execution engine is broken: pump died")]
    assert model.apply([ServiceStatusChanged(0, True, "engine healthy")]) == []


def test_chunks_are_bounded_by_lines_and_bytes() -> None:
    assert chunk_lines([], 5) == []
    assert chunk_lines(["a"] * 7, 3) == [["a"] * 3, ["a"] * 3, ["a"]]
    big = "x" * (600 * 1024)
    assert chunk_lines([big, big, "y"], 100) == [[big], [big, "y"]]


def test_properties_map_onto_the_service_config() -> None:
    config = config_from_properties(
        {
            "ScriptRoots": ["/srv/scripts", " "],
            "PoolSize": "3",
            "StopTermSeconds": 0.5,
            "AbortScript": "/srv/abort.py",
            "DataDirectory": "/var/lib/oet",
        }
    )
    assert config.script_roots == (Path("/srv/scripts"),)
    assert config.pool_size == 3
    assert config.deadlines.term_s == 0.5
    assert config.deadlines.cooperative_s == 0.02
    assert config.abort_script == Path("/srv/abort.py")
    assert config.data_dir == Path("/var/lib/oet")
    assert config.git_allow == ()
    assert config.start_method == "forkserver"


def test_property_defaults() -> None:
    config = config_from_properties({})
    assert (config.pool_size, config.max_running, config.history_length) == (2, 0, 100)
    assert config.script_roots == () and config.abort_script is None
    assert config.data_dir == default_data_dir()
    assert config.output_lines_kept == 1000
    # Deny by default: no file:// roots, no git repositories, no embedded scripts.
    assert (config.script_roots, config.git_allow, config.allow_embedded) == ((), (), False)


@pytest.mark.parametrize(
    ("props", "named"),
    [
        ({"StartMethod": "fork"}, "start_method"),
        ({"HistoryLength": 0}, "history_length"),
        ({"StopKillSeconds": -1}, "Stop*Seconds"),
        ({"AbortScript": "abort.py"}, "AbortScript"),
        ({"ScriptRoots": ["scripts"]}, "ScriptRoots"),
        ({"PoolSize": "many"}, "many"),
    ],
)
def test_bad_properties_are_named(props: dict[str, object], named: str) -> None:
    with pytest.raises(ValueError) as info:
        config_from_properties(props)
    assert named in str(info.value)
