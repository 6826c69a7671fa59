"""Per-procedure attributes appear with a procedure and disappear when it leaves the history."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import tango

from tests.device.conftest import StartDevice
from tests.device.harness import TEST_SCRIPTS, procedure_attributes, wait_attributes
from tests.waiting import Recorder

pytestmark = pytest.mark.tango

QUICK = "def main():\n    return 'ok'\n"


def _wait_history_attributes(proxy: tango.DeviceProxy, ids: list[int]) -> None:
    """The attributes of exactly these procedures (spares of later ids aside) appear."""
    expected = [f"procedure{i}{kind}" for i in ids for kind in ("State", "Summary")]
    wait_attributes(proxy, expected, upto=max(ids))


def _procedure_attributes(proxy: tango.DeviceProxy) -> list[str]:
    """The per-procedure attributes of prepared procedures (not the spares of the next ids)."""
    prepared = [int(m.group(1)) for m in re.finditer(r'"id":(\d+)', proxy.List())]
    return procedure_attributes(proxy, upto=max(prepared, default=0))


def test_the_oldest_final_procedure_leaves_with_its_attributes(
    start_device: StartDevice, tmp_path: Path
) -> None:
    oet = start_device(HistoryLength=2)
    first = oet.prepare_source(QUICK)
    oet.events.subscribe(f"procedure{first}State")
    oet.start(first)
    oet.wait_state(first, "COMPLETE")

    # A running procedure is never pruned, even when it is the oldest.
    gate = tmp_path / "gate"
    running = oet.prepare_file(TEST_SCRIPTS / "dev_wait_file.py", str(gate))
    oet.start(running)
    oet.wait_state(running, "RUNNING")
    third = oet.prepare_source(QUICK)

    # The pruned procedure's attributes go one structural change at a time (docs/device.md).
    _wait_history_attributes(oet.proxy, [running, third])
    for name in (f"procedure{first}State", f"procedure{first}Summary"):
        with pytest.raises(tango.DevFailed) as info:
            oet.proxy.read_attribute(name)
        assert info.value.args[0].reason == "API_AttrNotFound"
    assert [p["id"] for p in oet.procedures()] == [running, third]
    with pytest.raises(tango.DevFailed) as info:
        oet.proxy.Describe(first)
    assert info.value.args[0].reason == "OET_UnknownProcedure"

    # Three active procedures exceed the history: nothing final to prune, all stay.
    fourth = oet.prepare_source(QUICK)
    _wait_history_attributes(oet.proxy, [running, third, fourth])
    gate.touch()
    oet.wait_transition(running, "COMPLETE")  # and pruned at once: the history is full
    oet.start(third)
    oet.wait_state(third, "COMPLETE")
    oet.events.subscribe("procedures")
    oet.events.wait(
        "procedures",
        lambda vs: [p["id"] for p in json.loads(vs[-1])] == [third, fourth],
        "history pruned to the last two",
    )
    _wait_history_attributes(oet.proxy, [third, fourth])


def test_many_procedures_come_and_go(start_device: StartDevice) -> None:
    oet = start_device(HistoryLength=3, PoolSize=2)
    ids = []
    for _ in range(12):
        pid = oet.prepare_source(QUICK)
        ids.append(pid)
        oet.start(pid)
        oet.wait_state(pid, "COMPLETE")
    assert ids == list(range(1, 13))
    assert [p["id"] for p in oet.procedures()] == [10, 11, 12]
    _wait_history_attributes(oet.proxy, [10, 11, 12])


def test_init_command_restarts_the_engine_and_keeps_the_history(
    start_device: StartDevice,
) -> None:
    oet = start_device()
    pid = oet.prepare_source(QUICK)
    oet.start(pid)
    oet.wait_state(pid, "COMPLETE")
    assert _procedure_attributes(oet.proxy) == [f"procedure{pid}State", f"procedure{pid}Summary"]

    oet.events.forget()
    oet.proxy.Init()

    # INTERFACE.md v2: Init restarts the engine, the durable history stays and ids continue.
    assert [p["id"] for p in oet.procedures()] == [pid]
    assert oet.proxy.state() in (tango.DevState.INIT, tango.DevState.ON)
    again = oet.prepare_source(QUICK)
    assert again > pid
    oet.start(again)
    assert oet.wait_state(again, "COMPLETE")["calls"][0]["result"] == "ok"


def test_next_procedure_attributes_exist_ahead_so_a_client_can_see_every_state(
    start_device: StartDevice,
) -> None:
    oet = start_device()
    interface: Recorder[list[str]] = Recorder()

    def on_interface_change(e: Any) -> None:
        if not e.err:
            interface([a.name for a in e.att_list])

    event_id = oet.proxy.subscribe_event(
        tango.EventType.INTERFACE_CHANGE_EVENT, on_interface_change
    )
    interface.wait_for(
        lambda lists: any("procedure1State" in names for names in lists), 10, "spare attributes"
    )
    spare = oet.proxy.read_attribute("procedure1State")
    assert spare.quality == tango.AttrQuality.ATTR_INVALID and spare.value is None

    # Subscribed before Prepare (a real subscription: the first event is the INVALID value),
    # then every state.
    oet.events.subscribe("procedure1State")
    pid = oet.prepare_source("def init():\n    pass\n\ndef main():\n    return 1\n")
    assert pid == 1
    oet.start(pid)
    states = oet.events.wait_value("procedure1State", "COMPLETE")
    assert states == [None, "CREATING", "IDLE", "LOADING", "INITIALISING", "READY",
                      "RUNNING", "COMPLETE"]  # fmt: skip
    oet.proxy.unsubscribe_event(event_id)


def test_a_burst_of_prepares_gets_every_procedures_attributes(start_device: StartDevice) -> None:
    """More Prepares than spare attributes, back to back: each procedure's attributes must
    exist and read (an add_attribute racing cppTango's interface-change push once stalled
    the device for 3 s and lost an attribute)."""
    oet = start_device(PoolSize=1, HistoryLength=2)
    ids = [oet.prepare_source("def main():\n    return 1\n") for _ in range(8)]
    assert ids == list(range(1, 9))
    for pid in ids:
        state = oet.proxy.read_attribute(f"procedure{pid}State")
        assert state.quality == tango.AttrQuality.ATTR_VALID, pid
        assert json.loads(oet.proxy.read_attribute(f"procedure{pid}Summary").value)["id"] == pid


def test_an_attribute_that_cannot_be_made_is_reported_in_status_and_retried(
    start_device: StartDevice, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tango_oet.device.oetscheduler import OETScheduler

    refused = {"procedure1Summary"}
    original = OETScheduler.add_attribute

    def add_attribute(self: OETScheduler, attr: Any, *args: Any, **kwargs: Any) -> Any:
        if attr.attr_name in refused:
            tango.Except.throw_exception("API_Test", "refused by the test", "add_attribute")
        return original(self, attr, *args, **kwargs)

    monkeypatch.setattr(OETScheduler, "add_attribute", add_attribute)
    oet = start_device()
    oet.events.subscribe("Status")
    oet.events.wait(
        "Status",
        lambda vs: any("procedure1Summary: refused by the test" in v for v in vs),
        "the refused attribute named in Status",
    )
    assert "procedure1State" in oet.proxy.get_attribute_list()  # the others were made

    refused.clear()
    wait_attributes(oet.proxy, ["procedure1State", "procedure1Summary"], upto=1)
    oet.events.wait(
        "Status", lambda vs: "WARNING" not in vs[-1], "the warning gone once it is made"
    )
