"""Live events of an OETScheduler as typed items: state changes, user events, output, progress.

    with oet.events() as stream:            # every procedure, until closed
        for item in stream:
            print(item)

    for item in proc.iter_events():         # one procedure; ends after its final state
        ...

An `EventStream` subscribes to Tango change events when it is created and unsubscribes when
it is closed (`close()`, the end of a `with` block, or the end of a finished iteration). The
Tango callbacks only enqueue; iteration blocks on that queue, so it is stoppable from another
thread (`close()`) and by Ctrl-C. Values a subscription delivers at once are history: the last
user event is not yielded, nor is the recent output of all procedures; a stream of one
procedure does start with its current state and the output lines it has already printed.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, ClassVar

import tango

from tango_oet.client.errors import DeviceError, translated
from tango_oet.client.summary import Progress, parse_time
from tango_oet.domain.states import FINAL_STATES, ProcedureState

_POLL_S = 0.5  # how often a blocked iteration wakes up to notice close() / Ctrl-C


@dataclass(frozen=True)
class StateChange:
    """A procedure entered `state`."""

    procedure_id: int
    state: ProcedureState
    time: datetime | None = field(default=None, compare=False)  # not known for every source

    kind: ClassVar[str] = "state"

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "id": self.procedure_id,
            "state": self.state.name,
            "time": self.time.isoformat() if self.time else None,
        }

    def __str__(self) -> str:
        return f"[{self.procedure_id}] state {self.state.name}"


@dataclass(frozen=True)
class UserEvent:
    """A script called `tango_oet.scripting.publish(topic, **payload)`."""

    procedure_id: int
    topic: str
    payload: dict[str, Any]
    time: datetime | None
    seq: int

    kind: ClassVar[str] = "event"

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "id": self.procedure_id,
            "topic": self.topic,
            "payload": self.payload,
            "time": self.time.isoformat() if self.time else None,
            "seq": self.seq,
        }

    def __str__(self) -> str:
        payload = json.dumps(self.payload, default=str, sort_keys=True)
        return f"[{self.procedure_id}] event {self.topic} {payload}"


@dataclass(frozen=True)
class OutputLine:
    """One line a script printed or logged."""

    procedure_id: int
    text: str

    kind: ClassVar[str] = "output"

    def to_json(self) -> dict[str, Any]:
        return {"type": self.kind, "id": self.procedure_id, "line": self.text}

    def __str__(self) -> str:
        return f"[{self.procedure_id}] {self.text}"


@dataclass(frozen=True)
class ProgressUpdate:
    """A script called `tango_oet.scripting.progress(done, total, message)`."""

    procedure_id: int
    progress: Progress

    kind: ClassVar[str] = "progress"

    def to_json(self) -> dict[str, Any]:
        p = self.progress
        return {
            "type": self.kind,
            "id": self.procedure_id,
            "done": p.done,
            "total": p.total,
            "message": p.message,
        }

    def __str__(self) -> str:
        return f"[{self.procedure_id}] progress {self.progress}"


@dataclass(frozen=True)
class StreamError:
    """Tango reported an error instead of an event (e.g. the device stopped answering)."""

    attribute: str
    reason: str
    desc: str

    kind: ClassVar[str] = "error"

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "attribute": self.attribute,
            "reason": self.reason,
            "desc": self.desc,
        }

    def __str__(self) -> str:
        return f"event error on {self.attribute}: {self.reason}: {self.desc}"


Event = StateChange | UserEvent | OutputLine | ProgressUpdate | StreamError


class _Closed:
    pass


_CLOSED = _Closed()


def _attr_name(full: str) -> str:
    return full.rsplit("/", 1)[-1].split("#", 1)[0].lower()


def _split_output(line: str) -> tuple[int, str]:
    head, sep, text = line.partition(" ")
    if sep and head.isdigit():
        return int(head), text
    return 0, line


class EventStream:
    """Subscribed change events of one OETScheduler, as an iterator of typed `Event`s.

    `procedure_id=None` follows every procedure; otherwise only that one, and with
    `until_final=True` the iteration ends once no event has arrived for `linger` seconds after
    its final state (the device may push the last output lines just after the final state).
    `output=False` leaves the output lines out. A followed procedure's state is read every
    `poll_s` seconds without events, so a lost event cannot hang the iteration.
    """

    def __init__(
        self,
        proxy: tango.DeviceProxy,
        procedure_id: int | None = None,
        *,
        output: bool = True,
        until_final: bool = False,
        linger: float = 0.3,
        poll_s: float | None = 3.0,
        device: str = "",
    ) -> None:
        self._proxy = proxy
        self._device = device or str(proxy.dev_name())
        self.procedure_id = procedure_id
        self._until_final = until_final and procedure_id is not None
        self._linger = linger
        self._poll_s = poll_s
        self._last_item = _now()
        self._queue: queue.SimpleQueue[Event | _Closed] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._event_ids: list[int] = []
        self._initial: tuple[int, str] | None = None  # (thread, attribute) while subscribing
        self._states: dict[int, ProcedureState] = {}
        self._progress: dict[int, Any] = {}
        self._last_seq = -1
        self._use_transitions = False
        self._closed = False
        self._finished = False
        self._final_seen = False
        self._subscribe(output)

    # ---- subscriptions -----------------------------------------------------------------------
    def _subscribe(self, output: bool) -> None:
        pid = self.procedure_id
        names: list[str] = []
        if output:
            names.append("output")
        names.append("lastEvent")
        if pid is not None:
            names += [f"procedure{pid}Summary", f"procedure{pid}State"]
        else:
            with translated(self._device):
                attributes = {str(a).lower() for a in self._proxy.get_attribute_list()}
            # lastTransition (an addition to INTERFACE.md) carries every transition; without
            # it, state changes come from diffs of `procedures` (intermediate ones may merge).
            self._use_transitions = "lasttransition" in attributes
            names.append("procedures")
            if self._use_transitions:
                names.append("lastTransition")
        try:
            for name in names:
                self._initial = (threading.get_ident(), name.lower())
                try:
                    with translated(self._device):
                        event_id = self._proxy.subscribe_event(
                            name, tango.EventType.CHANGE_EVENT, self._on_event
                        )
                finally:
                    self._initial = None
                with self._lock:
                    self._event_ids.append(event_id)
        except DeviceError:
            self.close()
            raise
        if pid is not None and pid not in self._states:
            self._poll_state(pid)  # the subscription's first value was an error

    def _is_initial(self, attr: str) -> bool:
        initial = self._initial
        return initial is not None and initial == (threading.get_ident(), attr)

    def _on_event(self, e: Any) -> None:
        """Tango callback (ZMQ thread, or the subscribing thread for the initial value)."""
        if self._closed:
            return
        attr = _attr_name(str(e.attr_name))
        try:
            if e.err:
                first = e.errors[0] if e.errors else None
                reason = str(first.reason) if first is not None else "API_Unknown"
                desc = " ".join(str(first.desc).split()) if first is not None else ""
                self._put(StreamError(attr, reason, desc))
                return
            self._dispatch(attr, e.attr_value.value, self._is_initial(attr))
        except Exception as exc:  # a callback must never raise into Tango
            self._put(StreamError(attr, "OET_ClientParseError", repr(exc)))

    def _dispatch(self, attr: str, value: Any, initial: bool) -> None:
        pid = self.procedure_id
        if attr == "output":
            # The first value is the device's recent output: history for a stream of all
            # procedures, but for one procedure the lines it printed before we subscribed.
            if (initial and pid is None) or value is None:
                return
            for line in value if isinstance(value, list | tuple) else [value]:
                owner, text = _split_output(str(line))
                if pid is None or owner == pid:
                    self._put(OutputLine(owner, text))
        elif attr == "lastevent":
            self._on_user_event(value, initial)
        elif attr == "lasttransition":
            if not initial and value:
                t = json.loads(value)
                self._on_state(int(t["id"]), ProcedureState[t["state"]], parse_time(t.get("time")))
        elif attr == "procedures":
            self._on_procedures(value, initial)
        elif attr.endswith("state") and pid is not None:
            self._on_state(pid, ProcedureState(int(value)), None)
        elif attr.endswith("summary") and pid is not None and value:
            self._on_summary(json.loads(value))

    def _on_user_event(self, value: Any, initial: bool) -> None:
        if not value:
            return
        ev = json.loads(value)
        seq = int(ev.get("seq", 0))
        with self._lock:
            if initial:
                self._last_seq = seq  # history: remember it, so a late duplicate is dropped
                return
            if seq <= self._last_seq:
                return
            self._last_seq = seq
        owner = int(ev.get("id", 0))
        if self.procedure_id is None or owner == self.procedure_id:
            payload = ev.get("payload")
            self._put(
                UserEvent(
                    owner,
                    str(ev.get("topic", "")),
                    payload if isinstance(payload, dict) else {"value": payload},
                    parse_time(ev.get("time")),
                    seq,
                )
            )

    def _on_state(self, pid: int, state: ProcedureState, when: datetime | None) -> None:
        with self._lock:
            if self._states.get(pid) is state:
                return  # the initial read and a push can both report the same state
            self._states[pid] = state
        self._put(StateChange(pid, state, when))

    def _on_summary(self, summary: dict[str, Any]) -> None:
        pid = int(summary["id"])
        progress = summary.get("progress")
        with self._lock:
            changed = self._progress.get(pid) != progress
            self._progress[pid] = progress
        if changed and isinstance(progress, dict):
            self._put(ProgressUpdate(pid, Progress.from_json(progress)))

    def _on_procedures(self, value: Any, initial: bool) -> None:
        summaries = json.loads(value) if value else []
        for s in summaries:
            pid = int(s["id"])
            if initial:
                with self._lock:
                    self._progress[pid] = s.get("progress")
                    self._states[pid] = ProcedureState[s["state"]]
                continue
            if not self._use_transitions:
                self._on_state(pid, ProcedureState[s["state"]], None)
            self._on_summary(s)

    def _put(self, item: Event) -> None:
        self._queue.put(item)

    # ---- consuming -------------------------------------------------------------------------
    def get(self, timeout: float | None = None) -> Event | None:
        """The next event, or None if none arrives within `timeout` or the stream is over."""
        deadline = None if timeout is None else _now() + timeout
        while not self._finished:
            if self._final_seen:
                wait = self._linger
            elif deadline is None:
                wait = _POLL_S
            else:
                wait = max(0.0, min(_POLL_S, deadline - _now()))
            try:
                item = self._queue.get(timeout=wait)
            except queue.Empty:
                if self._final_seen:
                    self._finish()
                    return None
                self._poll_if_silent()
                if deadline is not None and _now() >= deadline:
                    return None
                continue
            self._last_item = _now()
            if isinstance(item, _Closed):
                self._finished = True
                return None
            if (
                self._until_final
                and isinstance(item, StateChange)
                and item.procedure_id == self.procedure_id
                and item.is_final
            ):
                self._final_seen = True
            return item
        return None

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        item = self.get()
        if item is None:
            raise StopIteration
        return item

    def _poll_if_silent(self) -> None:
        """After `poll_s` without any event, read the followed procedure's state: a lost event
        (or a broken event channel) then delays the stream instead of hanging it."""
        pid = self.procedure_id
        if pid is None or self._poll_s is None or _now() - self._last_item < self._poll_s:
            return
        self._last_item = _now()
        self._poll_state(pid)

    def _poll_state(self, pid: int) -> None:
        try:
            value = self._proxy.read_attribute(f"procedure{pid}State").value
        except tango.DevFailed as exc:
            first = exc.args[0] if exc.args else None
            reason = str(first.reason) if first is not None else "API_Unknown"
            desc = " ".join(str(first.desc).split()) if first is not None else ""
            self._put(StreamError(f"procedure{pid}state", reason, desc))
            return
        self._on_state(pid, ProcedureState(int(value)), None)

    @property
    def finished(self) -> bool:
        """True once closed, or (until_final) once the followed procedure has ended."""
        return self._finished

    def _finish(self) -> None:
        self._finished = True
        self.close()

    def close(self) -> None:
        """Unsubscribe and end the iteration (from any thread; idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            ids, self._event_ids = self._event_ids, []
        for event_id in ids:
            try:
                self._proxy.unsubscribe_event(event_id)
            except tango.DevFailed:
                pass  # the attribute may be gone (the procedure left the history)
        self._queue.put(_CLOSED)

    def __enter__(self) -> EventStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        which = "all procedures" if self.procedure_id is None else f"procedure {self.procedure_id}"
        status = "closed" if self._closed else "open"
        return f"<EventStream {self._device} {which}, {status}>"


def _now() -> float:
    return time.monotonic()
