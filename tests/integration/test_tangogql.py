"""OETScheduler as a Taranta dashboard sees it: through TangoGQL 2.3.0.

A real database, the real server (`start_oet`), and a real tangogql (uvicorn) in its own virtual
environment. Queries and mutations go over HTTP (`/db`); procedure states arrive through a
GraphQL subscription on the websocket `/socket`, the way Taranta's widgets receive them.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import REPO, Server
from tests.integration.processes import TangoDatabase
from tests.integration.tangogql import (
    TANGOGQL_VERSION,
    Subscription,
    TangoGQL,
    TangoGQLUnavailable,
    ensure_venv,
    start_tangogql,
    subscribe,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.tango,
    # The first run builds tangogql's virtual environment (pip install) in fixture set-up.
    pytest.mark.timeout(900),
]

VENV = REPO / ".tools" / "tangogql-venv"
HELLO = REPO / "resources" / "scripts" / "hello_world.py"
LABELS = [
    "CREATING",
    "IDLE",
    "PREP_ENV",
    "LOADING",
    "INITIALISING",
    "READY",
    "RUNNING",
    "PAUSED",
    "STOPPING",
    "COMPLETE",
    "STOPPED",
    "FAILED",
    "UNKNOWN",
]
LIFECYCLE = ["CREATING", "IDLE", "LOADING", "INITIALISING", "READY", "RUNNING", "COMPLETE"]
EVENT_TIMEOUT_S = 60.0

DEVICE_QUERY = """
query($name: String!, $pattern: String!) {
  device(name: $name) {
    name
    state
    attributes(pattern: $pattern) { name datatype dataformat enumLabels value quality }
    commands(pattern: "*") { name intype outtype }
  }
}
"""

SUBSCRIPTION = """
subscription { attributes(fullNames: %s) { device attribute value quality timestamp } }
"""

LOOPING = """\
import time
from tango_oet.scripting import checkpoint

def main():
    while True:
        checkpoint()
        time.sleep(0.01)
"""


@pytest.fixture(scope="session")
def tangogql_python() -> Path:
    """The tangogql environment's Python (built on first use, then reused)."""
    try:
        return ensure_venv(VENV)
    except TangoGQLUnavailable as exc:
        pytest.skip(f"tangogql {TANGOGQL_VERSION} cannot be installed, no package index:\n{exc}")


@pytest.fixture(scope="module")
def gql(
    tangogql_python: Path, tango_db: TangoDatabase, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TangoGQL]:
    server = start_tangogql(
        tangogql_python, tango_db.tango_host, tmp_path_factory.mktemp("tangogql")
    )
    try:
        yield server
    finally:
        survivors = server.stop()
        assert not survivors, f"left behind by tangogql: {survivors}"


# ---- helpers ---------------------------------------------------------------------------------

#: cppTango's message when `add_attribute`, called with the device monitor held, waits for the
#: device-interface-change thread, which itself waits for that monitor: the device answers
#: nothing for 3 s (API_DeviceTimedOut in every client). Seen in ~1 of 10 fresh servers here.
STALL_LOG = "Device interface change event thread blocked"


@contextlib.contextmanager
def no_device_stall(server: Server) -> Iterator[None]:
    """The device never meets cppTango's interface-thread deadlock (docs/device.md): its log
    must not show it, whether the test body passed or failed."""
    try:
        yield
    finally:
        assert STALL_LOG not in server.process.tail(5000), "the device stalled for 3.2 s"


def attributes(gql: TangoGQL, device: str, pattern: str = "*") -> dict[str, dict[str, Any]]:
    data = gql.query(DEVICE_QUERY, name=device, pattern=pattern)
    return {a["name"]: a for a in data["device"]["attributes"]}


def label(value: Any) -> str:
    """A DevEnum value in a subscription frame: tangogql 2.3.0 sends the index, not the label."""
    assert isinstance(value, int), f"expected an enum index, got {value!r}"
    return LABELS[value]


def states_of(frames: list[dict[str, Any]], attribute: str) -> list[str]:
    """The procedure states in the data frames of one (lower-cased) attribute, in order."""
    return [label(f["value"]) for f in frames if f["attribute"] == attribute.lower()]


def values_of(frames: list[dict[str, Any]], attribute: str) -> list[Any]:
    return [f["value"] for f in frames if f["attribute"] == attribute.lower()]


def is_subsequence(items: list[str], of: list[str]) -> bool:
    it = iter(of)
    return all(item in it for item in items)


def event_types(gql: TangoGQL) -> dict[str, str]:
    """How tangogql follows each attribute: CHANGE_EVENT, PERIODIC_EVENT or POLLING (3 s)."""
    data = gql.query("{ metrics { subscribedAttrs { name eventType } } }")
    return {m["name"]: m["eventType"] for m in data["metrics"]["subscribedAttrs"]}


def ok(result: dict[str, Any]) -> Any:
    assert result["ok"] is True, f"executeCommand failed: {result}"
    return result["output"]


def subscription(gql: TangoGQL, names: list[str], tmp_path: Path) -> Any:
    return subscribe(gql, SUBSCRIPTION % json.dumps(names), tmp_path / "subscription.log")


def wait_first_values(sub: Subscription, names: list[str]) -> None:
    """Every attribute has delivered its subscribe-time value: the subscriptions exist."""
    wanted = {n.rsplit("/", 1)[1].lower() for n in names}
    sub.wait_for(
        f"a first value of each of {sorted(wanted)}",
        lambda frames: wanted <= {f["attribute"] for f in frames},
        EVENT_TIMEOUT_S,
    )


# ---- tests -----------------------------------------------------------------------------------


def test_the_device_interface_through_a_db_query(
    gql: TangoGQL, start_oet: Callable[..., Server]
) -> None:
    server = start_oet()
    with no_device_stall(server):
        data = gql.query(DEVICE_QUERY, name=server.device, pattern="*")["device"]
        assert data["state"] == "ON"
        attrs = {a["name"]: a for a in data["attributes"]}

        def shape(name: str) -> tuple[str, str]:
            return attrs[name]["datatype"], attrs[name]["dataformat"]

        assert shape("procedures") == ("DevString", "SCALAR")
        assert json.loads(attrs["procedures"]["value"]) == []
        assert shape("lastEvent") == ("DevString", "SCALAR")
        assert shape("lastTransition") == ("DevString", "SCALAR")
        assert shape("output") == ("DevString", "SPECTRUM")
        assert attrs["output"]["value"] == []
        assert shape("State") == ("DevState", "SCALAR")
        assert attrs["State"]["value"] == "ON"
        assert shape("Status") == ("DevString", "SCALAR")
        assert attrs["Status"]["quality"] == "ATTR_VALID"

        commands = {c["name"]: (c["intype"], c["outtype"]) for c in data["commands"]}
        assert commands["Prepare"] == ("DevString", "DevLong")
        assert commands["Start"] == ("DevString", "DevVoid")
        assert commands["Stop"] == ("DevString", "DevVoid")
        assert commands["Pause"] == ("DevLong", "DevVoid")
        assert commands["Resume"] == ("DevLong", "DevVoid")
        assert commands["Describe"] == ("DevLong", "DevString")


def test_prepare_and_start_by_mutation_states_by_subscription(
    gql: TangoGQL, start_oet: Callable[..., Server], tmp_path: Path
) -> None:
    server = start_oet()
    with no_device_stall(server):
        request = {"script": HELLO.as_uri(), "init": {"kwargs": {"target": "TangoGQL"}}}
        pid = ok(gql.execute(server.device, "Prepare", json.dumps(request)))
        assert isinstance(pid, int) and pid > 0

        # Prepare returned: its attributes exist; the state is a DevEnum with the contract labels.
        attrs = attributes(gql, server.device, f"procedure{pid}*")
        state = attrs[f"procedure{pid}State"]
        assert (state["datatype"], state["dataformat"]) == ("DevEnum", "SCALAR")
        assert state["enumLabels"] == LABELS
        assert label(state["value"]) in LIFECYCLE
        assert attrs[f"procedure{pid}Summary"]["datatype"] == "DevString"

        state_name = f"{server.device}/procedure{pid}State"
        names = [state_name, f"{server.device}/State"]
        with subscription(gql, names, tmp_path) as sub:
            wait_first_values(sub, names)
            # Real change-event subscriptions, not tangogql's 3 s polling fallback.
            followed = event_types(gql)
            assert {followed.get(n.lower()) for n in names} == {"CHANGE_EVENT"}, followed
            # Prepare returns while the script still loads: Start (not forced) needs READY.
            sub.wait_for(
                "procedure state READY",
                lambda frames: "READY" in states_of(frames, f"procedure{pid}State"),
                EVENT_TIMEOUT_S,
            )

            assert (
                ok(gql.execute(server.device, "Start", json.dumps({"id": pid, "args": [2]})))
                is None
            )
            frames = sub.wait_for(
                "procedure state COMPLETE and device State back to ON",
                lambda frames: (
                    "COMPLETE" in states_of(frames, f"procedure{pid}State")
                    and values_of(frames, "State")[-1:] == ["ON"]
                    and "RUNNING" in values_of(frames, "State")
                ),
                EVENT_TIMEOUT_S,
            )

        states = states_of(frames, f"procedure{pid}State")
        assert is_subsequence(states, LIFECYCLE), states
        assert states[-2:] == ["RUNNING", "COMPLETE"], states
        device_states = values_of(frames, "State")
        assert device_states[0] == "ON" and "RUNNING" in device_states, device_states
        assert all(f["quality"] == "ATTR_VALID" for f in frames), frames

        attrs = attributes(gql, server.device)
        summary = json.loads(attrs[f"procedure{pid}Summary"]["value"])
        assert summary["state"] == "COMPLETE"
        assert summary["calls"][0]["result"] == "said hello 2 time(s) to TangoGQL"
        assert [h[0] for h in summary["history"]] == LIFECYCLE
        assert [p["id"] for p in json.loads(attrs["procedures"]["value"])] == [pid]
        last = json.loads(attrs["lastEvent"]["value"])
        assert (last["id"], last["topic"], last["payload"]) == (
            pid,
            "hello",
            {"target": "TangoGQL", "count": 2},
        )
        assert f"{pid} hello TangoGQL (2/2)" in attrs["output"]["value"]


def test_stop_by_mutation_of_an_embedded_script(
    gql: TangoGQL, start_oet: Callable[..., Server], tmp_path: Path
) -> None:
    server = start_oet()
    with no_device_stall(server):
        request = {"script": "embedded://loop", "source": LOOPING}
        pid = ok(gql.execute(server.device, "Prepare", json.dumps(request)))
        state_name = f"procedure{pid}State"
        with subscription(gql, [f"{server.device}/{state_name}"], tmp_path) as sub:
            wait_first_values(sub, [f"{server.device}/{state_name}"])
            start = {"id": pid, "function": "main", "force": True}
            ok(gql.execute(server.device, "Start", json.dumps(start)))
            sub.wait_for(
                "RUNNING",
                lambda frames: "RUNNING" in states_of(frames, state_name),
                EVENT_TIMEOUT_S,
            )
            ok(gql.execute(server.device, "Stop", json.dumps({"id": pid})))
            frames = sub.wait_for(
                "STOPPED",
                lambda frames: "STOPPED" in states_of(frames, state_name),
                EVENT_TIMEOUT_S,
            )
        states = states_of(frames, state_name)
        assert states[-3:] == ["RUNNING", "STOPPING", "STOPPED"], states
        summary = json.loads(ok(gql.execute(server.device, "Describe", pid)))
        assert summary["script"]["kind"] == "embedded"
        assert summary["state"] == "STOPPED"


def test_a_rejected_command_reports_the_offending_field_and_changes_nothing(
    gql: TangoGQL, start_oet: Callable[..., Server]
) -> None:
    server = start_oet()
    with no_device_stall(server):
        bad = gql.execute(server.device, "Prepare", json.dumps({"script": "ftp://host/x.py"}))
        assert bad["ok"] is False and bad["output"] is None
        # tangogql passes on the DevFailed's desc only (not its reason): the desc must say it all.
        (message,) = bad["message"]
        assert "script" in message and "ftp://host/x.py" in message
        unknown = gql.execute(server.device, "Start", json.dumps({"id": 4242}))
        assert unknown["ok"] is False
        assert "4242" in unknown["message"][0]
        attrs = attributes(gql, server.device, "procedures")
        assert json.loads(attrs["procedures"]["value"]) == []


def test_a_dashboard_subscribed_before_prepare_gets_change_events(
    gql: TangoGQL, start_oet: Callable[..., Server], tmp_path: Path
) -> None:
    server = start_oet()
    with no_device_stall(server):
        # A fresh device: the next procedure id is 1.
        name = f"{server.device}/procedure1State"
        with subscription(gql, [name], tmp_path) as sub:
            sub.wait_for("a first frame", lambda frames: bool(frames), EVENT_TIMEOUT_S)
            pid = ok(gql.execute(server.device, "Prepare", json.dumps({"script": HELLO.as_uri()})))
            assert pid == 1
            assert event_types(gql).get(name.lower()) == "CHANGE_EVENT"
