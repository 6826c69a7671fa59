"""Live events of an OETScheduler as typed items: state changes, user events, output, progress.

    with oet.events() as stream:            # every procedure, until closed
        for item in stream:
            print(item)

    for item in proc.iter_events():         # one procedure; ends after its final state
        ...

An `EventStream` subscribes to Tango change events when it is created and unsubscribes when
it is closed (`close()`, the end of a `with` block, or the end of a finished iteration). The
Tango callbacks only enqueue; iteration blocks on that queue, so it is stoppable from another
thread (`close()`) and by Ctrl-C. A stream of one procedure starts by replaying its history
(states so far, output still in the device's buffer); a stream of all procedures reports only
what happens after it was opened.
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
from tango_oet.domain.text import from_tango

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

    `procedure_id=None` follows every procedure from now on; `focus(id)` later narrows such a
    stream to one procedure (prepared after the stream was opened: nothing of it is missed).
    With a `procedure_id` the stream first replays that procedure's states (its history) and
    the output lines still in the device's buffer, then follows it live.

    States come from the summaries' `history` (the `procedures` attribute, or
    `procedure<ID>Summary`), so every transition is reported once, in order, with its time,
    even when several happen within one push. With `until_final=True` the iteration ends once
    no event has arrived for `linger` seconds after the final state (the device may push the
    last output lines just after it). A followed procedure's summary is read (`Describe`)
    after `poll_s` seconds without events, so a lost event delays the stream, never hangs it.
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
        self._lock = threading.RLock()
        self._event_ids: dict[str, int] = {}
        self._initial: tuple[int, str] | None = None  # (thread, attribute) while subscribing
        self._cursor: dict[int, int] = {}  # per procedure: history entries already reported
        self._progress: dict[int, Any] = {}
        self._last_seq = -1
        self._replayed: list[str] = []  # output lines replayed from the first `output` value
        self._dedupe_next_output = False
        self._closed = False
        self._finished = False
        self._final_seen = False
        try:
            if procedure_id is not None:
                self._subscribe(f"procedure{procedure_id}Summary")
            else:
                self._subscribe("procedures")
            if output:
                self._subscribe("output")
            self._subscribe("lastEvent")
        except DeviceError:
            self.close()
            raise
        if procedure_id is not None and procedure_id not in self._cursor:
            self._poll_summary(procedure_id)  # the subscription's first value was an error

    # ---- subscriptions -----------------------------------------------------------------------
    def _subscribe(self, name: str) -> None:
        self._initial = (threading.get_ident(), name.lower())
        try:
            with translated(self._device):
                event_id = self._proxy.subscribe_event(
                    name, tango.EventType.CHANGE_EVENT, self._on_event
                )
        finally:
            self._initial = None
        with self._lock:
            self._event_ids[name.lower()] = event_id

    def _unsubscribe(self, name: str) -> None:
        with self._lock:
            event_id = self._event_ids.pop(name.lower(), None)
        if event_id is not None:
            try:
                self._proxy.unsubscribe_event(event_id)
            except tango.DevFailed:
                pass  # the attribute may be gone (the procedure left the history)

    def focus(self, procedure_id: int, *, until_final: bool = True) -> None:
        """Follow only `procedure_id` from now on (a stream opened for all procedures).

        Open the stream, prepare, then focus on the new id: every state, user event and
        output line of the procedure is reported, even those before `focus` was called.
        """
        if self.procedure_id is not None:
            raise ValueError(f"this stream already follows procedure {self.procedure_id}")
        self.procedure_id = procedure_id
        self._until_final = until_final
        self._subscribe(f"procedure{procedure_id}Summary")
        self._unsubscribe("procedures")
        if procedure_id not in self._cursor:
            self._poll_summary(procedure_id)

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
                desc = " ".join(from_tango(str(first.desc)).split()) if first is not None else ""
                self._put(StreamError(attr, reason, desc))
                return
            self._dispatch(attr, e.attr_value.value, self._is_initial(attr))
        except Exception as exc:  # a callback must never raise into Tango
            self._put(StreamError(attr, "OET_ClientParseError", repr(exc)))

    def _dispatch(self, attr: str, value: Any, initial: bool) -> None:
        if attr == "output":
            lines = [from_tango(str(x)) for x in value] if value is not None else []
            self._on_output(lines, initial)
        elif attr == "lastevent":
            self._on_user_event(value, initial)
        elif attr == "procedures":
            for summary in json.loads(value) if value else []:
                self._on_summary(summary, baseline=initial)
        elif attr.endswith("summary") and value:
            self._on_summary(json.loads(value), baseline=False)

    def _on_output(self, lines: list[Any], initial: bool) -> None:
        pid = self.procedure_id
        with self._lock:
            if initial:
                # The device's recent output: history for a stream of all procedures, but for
                # one procedure the lines it printed before the stream was opened.
                if pid is None:
                    return
                self._replayed = [str(x) for x in lines if _split_output(str(x))[0] == pid]
                self._dedupe_next_output = bool(self._replayed)
                for line in self._replayed:
                    self._put(OutputLine(*_split_output(line)))
                return
            fresh = [str(x) for x in lines]
            if self._dedupe_next_output:
                # Lines pushed while we subscribed are in the replay too: drop the overlap.
                self._dedupe_next_output = False
                mine = [x for x in fresh if _split_output(x)[0] == pid]
                skip = _overlap(self._replayed, mine)
                kept = []
                for line in fresh:
                    if skip and _split_output(line)[0] == pid:
                        skip -= 1
                        continue
                    kept.append(line)
                fresh = kept
            for line in fresh:
                self._put(OutputLine(*_split_output(line)))

    def _on_user_event(self, value: Any, initial: bool) -> None:
        if not value:
            return
        ev = json.loads(value)
        seq = int(ev.get("seq", 0))
        with self._lock:
            if initial:
                self._last_seq = max(self._last_seq, seq)  # history: not reported
                return
            if seq <= self._last_seq:
                return
            self._last_seq = seq
            payload = ev.get("payload")
            self._put(
                UserEvent(
                    int(ev.get("id", 0)),
                    str(ev.get("topic", "")),
                    payload if isinstance(payload, dict) else {"value": payload},
                    parse_time(ev.get("time")),
                    seq,
                )
            )

    def _on_summary(self, summary: dict[str, Any], baseline: bool) -> None:
        """New history entries become StateChanges, a new progress a ProgressUpdate.

        `baseline` (the first value of `procedures`): what is there already is not news.
        Summaries may arrive late or twice; the history length makes that harmless.
        """
        pid = int(summary["id"])
        history = summary.get("history") or []
        progress = summary.get("progress")
        with self._lock:
            if baseline:
                self._cursor.setdefault(pid, len(history))
                self._progress.setdefault(pid, progress)
                return
            start = self._cursor.get(pid, 0)
            for state, when in history[start:]:
                self._put(StateChange(pid, _state(state), parse_time(when)))
            self._cursor[pid] = max(start, len(history))
            if len(history) < start:
                return  # an older summary than one already seen
            if self._progress.get(pid) != progress:
                self._progress[pid] = progress
                if isinstance(progress, dict):
                    self._put(ProgressUpdate(pid, Progress.from_json(progress)))

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
            if isinstance(item, _Closed):
                self._finished = True
                return None
            pid = self.procedure_id
            if pid is not None and getattr(item, "procedure_id", pid) != pid:
                continue  # queued before `focus`, of another procedure
            self._last_item = _now()
            if self._until_final and isinstance(item, StateChange) and item.is_final:
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
        pid = self.procedure_id
        if pid is None or self._poll_s is None or _now() - self._last_item < self._poll_s:
            return
        self._last_item = _now()
        self._poll_summary(pid)

    def _poll_summary(self, pid: int) -> None:
        """Read the summary (Describe) as if it had been pushed: lost events are made good."""
        try:
            text = self._proxy.command_inout("Describe", pid)
        except tango.DevFailed as exc:
            first = exc.args[0] if exc.args else None
            reason = str(first.reason) if first is not None else "API_Unknown"
            desc = " ".join(str(first.desc).split()) if first is not None else ""
            self._put(StreamError(f"procedure{pid}summary", reason, desc))
            return
        self._on_summary(json.loads(text), baseline=False)

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
            names = list(self._event_ids)
        for name in names:
            self._unsubscribe(name)
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


def _state(name: object) -> ProcedureState:
    try:
        return ProcedureState[str(name)]
    except KeyError:
        return ProcedureState.UNKNOWN


def _overlap(replayed: list[str], fresh: list[str]) -> int:
    """The largest k with fresh[:k] == replayed[-k:]: lines received twice."""
    for k in range(min(len(replayed), len(fresh)), 0, -1):
        if fresh[:k] == replayed[-k:]:
            return k
    return 0


def _now() -> float:
    return time.monotonic()
