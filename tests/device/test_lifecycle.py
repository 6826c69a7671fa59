"""A procedure's whole life as a client sees it: commands, per-procedure attributes, events."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import tango

from tango_oet.domain.states import ProcedureState
from tests.device.conftest import StartDevice
from tests.device.harness import SCRIPTS, TEST_SCRIPTS

pytestmark = pytest.mark.tango

LIFECYCLE = ["CREATING", "IDLE", "LOADING", "INITIALISING", "READY", "RUNNING", "COMPLETE"]

WITH_INIT = """
def init(greeting):
    global _greeting
    _greeting = greeting

def main(name):
    print(_greeting, name)
    return f"{_greeting} {name}"
"""


def test_full_lifecycle_is_pushed_on_the_state_attribute_in_order(
    start_device: StartDevice,
) -> None:
    gate = threading.Event()
    oet = start_device(gate=gate)
    pid = oet.prepare_source(WITH_INIT, "hello")
    state_attr = f"procedure{pid}State"
    oet.events.subscribe(state_attr, f"procedure{pid}Summary", "procedures")
    oet.events.wait_value(state_attr, "CREATING")

    gate.set()
    oet.events.wait_value(state_attr, "READY")
    oet.start(pid, "world")
    oet.events.wait_value(state_attr, "COMPLETE")
    oet.wait_state(pid, "COMPLETE")
    oet.events.wait("procedures", lambda vs: '"state":"COMPLETE"' in vs[-1], "COMPLETE listed")

    assert oet.events.values(state_attr) == LIFECYCLE
    assert oet.transitions(pid) == LIFECYCLE
    summaries = [json.loads(v) for v in oet.events.values(f"procedure{pid}Summary")]
    assert summaries[-1]["state"] == "COMPLETE"
    assert summaries[-1]["calls"][0]["result"] == "hello world"
    assert [h[0] for h in summaries[-1]["history"]] == LIFECYCLE
    listed = json.loads(oet.events.values("procedures")[-1])
    assert [(p["id"], p["state"]) for p in listed] == [(pid, "COMPLETE")]
    assert oet.proxy.read_attribute(state_attr).value == ProcedureState.COMPLETE


def test_device_is_running_while_a_procedure_runs_then_on(
    start_device: StartDevice, tmp_path: Path
) -> None:
    oet = start_device()
    oet.events.wait_value("State", "ON")
    gate = tmp_path / "gate"
    pid = oet.prepare_file(TEST_SCRIPTS / "dev_wait_file.py", str(gate))
    oet.start(pid, "done")
    oet.events.wait_value("State", "RUNNING")
    assert oet.proxy.state() == tango.DevState.RUNNING
    assert "1 procedure(s) running" in oet.proxy.status()

    gate.touch()
    summary = oet.wait_state(pid, "COMPLETE")
    oet.events.wait("State", lambda vs: vs[-1] == "ON", "back to ON")
    assert summary["calls"][0]["result"] == "done"
    assert oet.proxy.state() == tango.DevState.ON
    states = oet.events.values("State")
    assert states[-3:] == ["ON", "RUNNING", "ON"]


def test_prepare_returns_once_the_procedure_attributes_exist(start_device: StartDevice) -> None:
    oet = start_device()
    pid = oet.prepare_source("def main():\n    return 1\n")
    # Immediately readable and subscribable: no race with the publisher thread.
    state = oet.proxy.read_attribute(f"procedure{pid}State").value
    assert state in range(13)
    summary = json.loads(oet.proxy.read_attribute(f"procedure{pid}Summary").value)
    assert summary["id"] == pid
    labels = oet.proxy.get_attribute_config(f"procedure{pid}State").enum_labels
    assert list(labels) == [
        "CREATING", "IDLE", "PREP_ENV", "LOADING", "INITIALISING", "READY", "RUNNING",
        "PAUSED", "STOPPING", "COMPLETE", "STOPPED", "FAILED", "UNKNOWN",
    ]  # fmt: skip


def test_file_script_with_init_arguments(start_device: StartDevice) -> None:
    oet = start_device()
    pid = oet.prepare_file(SCRIPTS / "hello_world.py", target="Tango")
    oet.start(pid, repeat=2)
    summary = oet.wait_state(pid, "COMPLETE")
    assert summary["script"] == {
        "kind": "filesystem",
        "uri": f"file://{SCRIPTS / 'hello_world.py'}",
        "git": None,
        "environment": None,
    }
    assert summary["init"] == {"args": [], "kwargs": {"target": "Tango"}}
    assert summary["calls"][0]["result"] == "said hello 2 time(s) to Tango"
    assert summary["progress"] == {"done": 2.0, "total": 2.0, "message": "greeting 2"}


def test_user_events_reach_last_event_in_order_without_loss(start_device: StartDevice) -> None:
    oet = start_device()
    oet.events.subscribe("lastEvent")
    pid = oet.prepare_file(TEST_SCRIPTS / "dev_chatty.py")
    oet.start(pid, lines=0, events=300)
    oet.wait_state(pid, "COMPLETE")
    received = oet.events.wait(
        "lastEvent", lambda vs: any('"n":299' in v for v in vs), "the 300th user event"
    )
    events = [json.loads(v) for v in received if v]
    assert [e["payload"]["n"] for e in events] == list(range(300))
    assert all(e["id"] == pid and e["topic"] == "tick" for e in events)
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == 300
    assert json.loads(oet.proxy.lastEvent)["payload"] == {"n": 299}


def test_output_events_carry_new_lines_and_a_read_returns_the_last_lines(
    start_device: StartDevice,
) -> None:
    oet = start_device(OutputLinesKept=50)
    oet.events.subscribe("output")
    pid = oet.prepare_file(TEST_SCRIPTS / "dev_chatty.py")
    oet.start(pid, lines=5000)
    oet.wait_state(pid, "COMPLETE")
    expected = [f"{pid} line {i}" for i in range(5000)]
    pushes = oet.events.wait(
        "output", lambda vs: sum(len(v or []) for v in vs[1:]) >= 5000, "5000 output lines"
    )
    # The first event is the subscription's read (empty); later ones carry only new lines,
    # coalesced: far fewer pushes than lines, each bounded.
    lines = [line for push in pushes[1:] for line in (push or [])]
    assert lines == expected
    assert len(pushes) - 1 < 5000
    assert list(oet.proxy.output) == expected[-50:]


def test_describe_and_list(start_device: StartDevice) -> None:
    oet = start_device()
    first = oet.prepare_source("def main():\n    return [1, 2]\n", name="one")
    second = oet.prepare_source("def main():\n    return None\n", name="two")
    oet.start(first)
    oet.wait_state(first, "COMPLETE")
    listed = json.loads(oet.proxy.List())
    assert [p["id"] for p in listed] == [first, second]
    assert oet.describe(first)["calls"][0]["result"] == [1, 2]
    assert oet.describe(second)["script"]["uri"] == "embedded://two"
    assert [p["id"] for p in oet.procedures()] == [first, second]
