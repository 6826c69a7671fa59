"""UTF-8 end to end through a real device and a real client (INTERFACE "Safe by default").

Every DevString carries UTF-8 bytes, in and out. pytango maps DevString to `str` through
Latin-1, so this client sends UTF-8 bytes and reads each string back with `from_wire` (Latin-1
back to the bytes, then strict UTF-8: a byte sequence that is not UTF-8 fails the test).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import tango

from tests.device.conftest import StartDevice
from tests.device.harness import Scheduler

pytestmark = pytest.mark.tango

TEXT = "é€日本"

#: Prints the argin it was given, Unicode it makes itself (so the output path is tested whatever
#: the argin decoding does), bytes that are not UTF-8 on fd 1 and fd 2, and a lone surrogate,
#: each followed by a plain line of the same batch.
SCRIPT = r"""
import os
from tango_oet.scripting import publish

def init(text):
    print(text)
    print("made \u20ac \u65e5\u672c")
    os.write(1, b"\xff\xfe ok\n")
    os.write(2, b"err \xc3\x28 ok\n")
    print("lone \udcff surrogate")
    print("after the bad ones")

def main(text):
    publish("text", text=text)
    return text
"""


def to_wire(obj: Any) -> bytes:
    """A request as any UTF-8 client sends it: JSON with the text as is, encoded UTF-8."""
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


def from_wire(value: str) -> str:
    return value.encode("latin-1").decode("utf-8")


def expected_lines(pid: int) -> list[str]:
    return [
        f"{pid} {line}"
        for line in (
            TEXT,
            "made € 日本",
            "\ufffd\ufffd ok",
            "err \ufffd( ok",
            "lone \ufffd surrogate",
            "after the bad ones",
        )
    ]


@pytest.fixture
def oet(start_device: StartDevice) -> Scheduler:
    scheduler = start_device(AllowEmbedded=True)
    scheduler.events.subscribe("output", "lastEvent")
    return scheduler


def _prepare(oet: Scheduler) -> int:
    request = {"script": "embedded://text", "source": SCRIPT, "init": {"kwargs": {"text": TEXT}}}
    return int(oet.proxy.command_inout("Prepare", to_wire(request)))


def test_unicode_reaches_the_script_and_comes_back_in_summaries_events_and_results(
    oet: Scheduler,
) -> None:
    pid = _prepare(oet)
    oet.wait_state(pid, "READY")
    summary = json.loads(from_wire(oet.proxy.Describe(pid)))
    assert summary["init"]["kwargs"] == {"text": TEXT}
    oet.proxy.command_inout("Start", to_wire({"id": pid, "args": [TEXT]}))
    oet.wait_state(pid, "COMPLETE")
    for text in (oet.proxy.Describe(pid), oet.proxy.read_attribute(f"procedure{pid}Summary").value):
        assert json.loads(from_wire(text))["calls"][0]["result"] == TEXT
    (listed,) = json.loads(from_wire(oet.proxy.List()))
    assert listed["calls"][0]["args"] == [TEXT]
    assert json.loads(from_wire(oet.proxy.procedures))[0]["calls"][0]["result"] == TEXT
    events = [json.loads(from_wire(v)) for v in oet.events.values("lastEvent") if v]
    assert [e["payload"] for e in events if e["topic"] == "text"] == [{"text": TEXT}]
    assert json.loads(from_wire(oet.proxy.lastEvent))["payload"] == {"text": TEXT}


def test_every_output_line_is_delivered_as_utf8_with_invalid_bytes_replaced(
    oet: Scheduler,
) -> None:
    pid = _prepare(oet)
    oet.wait_state(pid, "READY")
    want = expected_lines(pid)

    def delivered(values: list[Any]) -> bool:
        lines = [from_wire(line) for chunk in values for line in chunk]
        return all(line in lines for line in want)

    oet.events.wait("output", delivered, f"output events carrying {want}")
    # A read of `output` works, and says the same.
    read = [from_wire(line) for line in oet.proxy.read_attribute("output").value]
    assert set(want) <= set(read)


def test_an_argin_that_is_not_utf8_is_refused_and_leaves_nothing(oet: Scheduler) -> None:
    bad = b'{"script": "embedded://x", "source": "x = \'\xff\'"}'
    with pytest.raises(tango.DevFailed) as info:
        oet.proxy.command_inout("Prepare", bad)
    error = info.value.args[0]
    assert error.reason == "OET_InvalidRequest"
    assert "UTF-8" in error.desc and "request" in error.desc
    assert json.loads(oet.proxy.procedures) == []


def test_errors_name_unicode_values_as_sent(oet: Scheduler) -> None:
    pid = _prepare(oet)
    oet.wait_state(pid, "READY")
    with pytest.raises(tango.DevFailed) as info:
        oet.proxy.command_inout("Start", to_wire({"id": pid, "function": "fünction"}))
    error = info.value.args[0]
    assert error.reason == "OET_InvalidRequest"
    assert "'fünction'" in from_wire(error.desc)
    assert oet.describe(pid)["state"] == "READY"
