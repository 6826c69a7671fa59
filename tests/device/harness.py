"""Test harness for OETScheduler: a device in a DeviceTestContext plus change-event recording.

Every wait blocks on received change events with a deadline and raises with the last observed
events; nothing here sleeps.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tango

from tango_oet.device.attributes import STATE_LABELS
from tango_oet.execution.launcher import ContextLauncher, WorkerProcess
from tests.waiting import Recorder

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "resources" / "scripts"
TEST_SCRIPTS = SCRIPTS / "tests"


@dataclass(frozen=True)
class Event:
    """One change event as the client received it."""

    attr: str  # lower-case attribute name, e.g. "procedure3state"
    value: Any
    error: str | None


def _attr_name(full: str) -> str:
    return full.rsplit("/", 1)[-1].split("#", 1)[0].lower()


class EventLog:
    """Subscribes to change events of one device and records every one of them."""

    def __init__(self, proxy: tango.DeviceProxy) -> None:
        self.proxy = proxy
        self.recorder: Recorder[Event] = Recorder()
        self._ids: list[int] = []
        self._start = 0  # events before this index are forgotten (see `forget`)

    def forget(self) -> None:
        """Ignore every event received so far (e.g. after Init restarted the ids at 1)."""
        self._start = len(self.recorder.snapshot())

    def _events(self, events: list[Event]) -> list[Event]:
        return events[self._start :]

    def subscribe(self, *attributes: str) -> None:
        for name in attributes:
            self._ids.append(
                self.proxy.subscribe_event(name, tango.EventType.CHANGE_EVENT, self._push)
            )

    def close(self) -> None:
        for event_id in self._ids:
            try:
                self.proxy.unsubscribe_event(event_id)
            except tango.DevFailed:
                pass  # the attribute may be gone (removed from the history)
        self._ids.clear()

    def _push(self, e: Any) -> None:
        name = _attr_name(e.attr_name)
        if e.err:
            self.recorder(Event(name, None, e.errors[0].reason))
            return
        value = e.attr_value.value
        if name.startswith("procedure") and name.endswith("state") and value is not None:
            value = STATE_LABELS[int(value)]
        elif name == "state":
            value = str(value)
        elif isinstance(value, tuple | list):
            value = list(value)
        self.recorder(Event(name, value, None))

    def values(self, attr: str) -> list[Any]:
        attr = attr.lower()
        return [
            e.value
            for e in self._events(self.recorder.snapshot())
            if e.attr == attr and e.error is None
        ]

    def wait(
        self, attr: str, predicate: Callable[[list[Any]], bool], what: str, timeout: float = 15.0
    ) -> list[Any]:
        """Wait until `predicate(values of attr)` holds; returns those values."""
        attr = attr.lower()

        def holds(events: list[Event]) -> bool:
            return predicate(
                [e.value for e in self._events(events) if e.attr == attr and e.error is None]
            )

        self.recorder.wait_for(holds, timeout, f"{attr}: {what}")
        return self.values(attr)

    def wait_value(self, attr: str, value: Any, timeout: float = 15.0) -> list[Any]:
        return self.wait(attr, lambda vs: value in vs, f"value {value!r}", timeout)


class Scheduler:
    """A running OETScheduler under test, with helpers in the vocabulary of the interface."""

    def __init__(self, proxy: tango.DeviceProxy) -> None:
        self.proxy = proxy
        self.events = EventLog(proxy)
        self.events.subscribe("lastTransition", "State")

    def prepare(self, request: dict[str, Any] | str) -> int:
        text = request if isinstance(request, str) else json.dumps(request)
        return int(self.proxy.Prepare(text))

    def prepare_source(self, source: str, *args: Any, name: str = "t", **kwargs: Any) -> int:
        return self.prepare(
            {
                "script": f"embedded://{name}",
                "source": source,
                "init": {"args": list(args), "kwargs": kwargs},
            }
        )

    def prepare_file(self, path: Path, *args: Any, **kwargs: Any) -> int:
        return self.prepare(
            {"script": f"file://{path}", "init": {"args": list(args), "kwargs": kwargs}}
        )

    def start(self, procedure_id: int, *args: Any, function: str = "main", **kw: Any) -> None:
        force = kw.pop("force", True)
        request = {"id": procedure_id, "function": function, "args": list(args), "kwargs": kw}
        self.proxy.Start(json.dumps({**request, "force": force}))

    def stop(self, procedure_id: int, abort: bool = False) -> None:
        self.proxy.Stop(json.dumps({"id": procedure_id, "abort": abort}))

    def describe(self, procedure_id: int) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.proxy.Describe(procedure_id))
        return result

    def procedures(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = json.loads(self.proxy.procedures)
        return result

    def transitions(self, procedure_id: int) -> list[str]:
        """Every state of the procedure, in order, from `lastTransition` change events."""
        return [
            t["state"]
            for t in (json.loads(v) for v in self.events.values("lastTransition") if v)
            if t["id"] == procedure_id
        ]

    def wait_state(self, procedure_id: int, *states: str, timeout: float = 20.0) -> dict[str, Any]:
        """Wait for the procedure to reach one of `states`; returns its summary then."""
        self.wait_transition(procedure_id, *states, timeout=timeout)
        return self.describe(procedure_id)

    def wait_transition(self, procedure_id: int, *states: str, timeout: float = 20.0) -> None:
        """Wait for a `lastTransition` event of the procedure into one of `states`."""

        def reached(values: list[Any]) -> bool:
            return any(
                t["id"] == procedure_id and t["state"] in states
                for t in (json.loads(v) for v in values if v)
            )

        try:
            self.events.wait(
                "lastTransition", reached, f"procedure {procedure_id} in {states}", timeout
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nprocedures: {self.proxy.procedures}") from None

    def close(self) -> None:
        self.events.close()


class GatedLauncher:
    """A ContextLauncher whose launches wait for `gate`: holds a procedure in CREATING."""

    def __init__(self, method: str, gate: threading.Event) -> None:
        self._inner = ContextLauncher(method)
        self._gate = gate

    @property
    def key(self) -> str:
        return self._inner.key

    def launch(self) -> WorkerProcess:
        if not self._gate.wait(60):
            raise RuntimeError("test gate never opened")
        return self._inner.launch()


def procedure_attributes(proxy: tango.DeviceProxy, upto: int) -> list[str]:
    """Per-procedure attributes of ids <= `upto`; the device also creates the attributes of the
    next ids ahead of their Prepare (spares), which tests of the history must ignore."""
    names = []
    for name in proxy.get_attribute_list():
        match = re.match(r"procedure(\d+)(State|Summary)$", name)
        if match and int(match.group(1)) <= upto:
            names.append(name)
    return sorted(names)


def wait_attributes(
    proxy: tango.DeviceProxy, expected: Iterable[str], upto: int, timeout: float = 10.0
) -> None:
    """Block until the per-procedure attributes of ids <= `upto` are `expected`.

    The device makes structural changes one at a time, each announced by an interface-change
    event, so the list is checked again on each event; raises with the last list seen.
    """
    want = sorted(expected)
    changed = threading.Event()
    event_id = proxy.subscribe_event(
        tango.EventType.INTERFACE_CHANGE_EVENT, lambda _e: changed.set()
    )
    try:
        deadline = time.monotonic() + timeout
        while (seen := procedure_attributes(proxy, upto)) != want:
            left = deadline - time.monotonic()
            if left <= 0 or not changed.wait(left):
                raise AssertionError(f"attributes after {timeout} s: {seen}, expected {want}")
            changed.clear()
    finally:
        proxy.unsubscribe_event(event_id)


def in_order(values: Iterable[Any], expected: list[Any]) -> bool:
    """True if `expected` appears in `values` as a contiguous run (nothing between)."""
    seq = list(values)
    n = len(expected)
    return any(seq[i : i + n] == expected for i in range(len(seq) - n + 1))
