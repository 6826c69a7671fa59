"""What the OETScheduler device shows, and which Tango operations each service event needs.

Pure Python (no `tango` import), so the event-to-push mapping is unit-testable without a
device. The publisher thread feeds service events in; `apply` returns the operations
(create/remove per-procedure attributes, push values, set State/Status) that the device then
executes while it holds its serialization monitor. Attribute reads use the same snapshot, so a
client reading an attribute sees exactly what the last pushed event said.

    service pump ──events──▶ publisher thread ──apply()──▶ [Op, ...] ──device──▶ Tango
"""

from __future__ import annotations

import enum
import json
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from tango_oet.domain.states import ProcedureState
from tango_oet.domain.summary import ProcedureSummary, iso, utc_now
from tango_oet.service.events import (
    EnvironmentsChanged,
    OutputAppended,
    ProcedureAdded,
    ProcedureRemoved,
    ServiceEvent,
    ServiceStatusChanged,
    StateChanged,
    SummaryChanged,
    UserEventPublished,
)

#: Output lines per `output` change event, and bytes: big bursts become several bounded pushes.
OUTPUT_CHUNK_LINES = 2000
OUTPUT_CHUNK_BYTES = 1 << 20


class DeviceState(enum.Enum):
    """The device's own state; the Tango layer maps the names onto `tango.DevState`."""

    INIT = "INIT"
    ON = "ON"
    RUNNING = "RUNNING"
    FAULT = "FAULT"


def state_attribute(procedure_id: int) -> str:
    return f"procedure{procedure_id}State"


def summary_attribute(procedure_id: int) -> str:
    return f"procedure{procedure_id}Summary"


# ---- operations the device executes, in order ---------------------------------------------
@dataclass(frozen=True)
class AddProcedure:
    """Create `procedure<ID>State` and `procedure<ID>Summary` (if not there yet)."""

    procedure_id: int


@dataclass(frozen=True)
class RemoveProcedure:
    procedure_id: int


@dataclass(frozen=True)
class Push:
    """A change event (and an archive event when `archive`) carrying `value`.

    An expensive value (JSON of summaries) comes as `compute` instead, which the device calls
    only if a client listens; it returns None when there is nothing to push any more.
    """

    attribute: str
    value: Any = None
    archive: bool = False
    compute: Callable[[], Any] | None = field(default=None, compare=False)

    def resolve(self) -> Any:
        return self.compute() if self.compute is not None else self.value


@dataclass(frozen=True)
class SetState:
    state: DeviceState
    status: str


Op = AddProcedure | RemoveProcedure | Push | SetState


@dataclass
class _Procedure:
    summary: ProcedureSummary
    summary_json: str | None = None  # encoded on first use: often nobody asks

    def json(self) -> str:
        if self.summary_json is None:
            self.summary_json = self.summary.to_json_text()
        return self.summary_json


def status_text(state: DeviceState, running: int, message: str) -> str:
    """The device Status: what the State means right now, in words."""
    match state:
        case DeviceState.INIT:
            return f"Starting the script execution engine. {message}".strip()
        case DeviceState.FAULT:
            return f"The script execution engine is broken: {message}"
        case DeviceState.RUNNING:
            return f"{running} procedure(s) running or paused; {message}"
        case DeviceState.ON:
            return f"Idle: no procedure running; {message}"


class DeviceModel:
    """The device-side snapshot of the service, updated only from service events.

    Guarded by its own lock (reads come from Tango request threads, updates from the
    publisher thread); the device additionally serialises both through its monitor.
    """

    def __init__(self, output_chunk_lines: int = OUTPUT_CHUNK_LINES) -> None:
        self._lock = threading.Lock()
        self._added = threading.Condition(self._lock)
        self._max_added = 0
        self._released = False
        self._procedures: dict[int, _Procedure] = {}
        self._procedures_json: str | None = "[]"
        self._last_event = ""
        self._last_transition = ""
        self._environments = '{"entries":[],"total_bytes":0,"removed":[]}'
        self._transition_seq = 0
        self._state = DeviceState.INIT
        self._status = status_text(DeviceState.INIT, 0, "")
        self._chunk_lines = max(1, output_chunk_lines)

    # ---- reads (any thread) ---------------------------------------------------------------
    @property
    def state(self) -> DeviceState:
        return self._state

    @property
    def status(self) -> str:
        return self._status

    def procedure_ids(self) -> list[int]:
        with self._lock:
            return list(self._procedures)

    def has_procedure(self, procedure_id: int) -> bool:
        with self._lock:
            return procedure_id in self._procedures

    def procedure_state(self, procedure_id: int) -> ProcedureState | None:
        with self._lock:
            p = self._procedures.get(procedure_id)
            return None if p is None else p.summary.state

    def procedure_summary(self, procedure_id: int) -> str | None:
        with self._lock:
            p = self._procedures.get(procedure_id)
            return None if p is None else p.json()

    def procedures_json(self) -> str:
        with self._lock:
            if self._procedures_json is None:
                # Each summary is encoded once per change and cached: join the texts.
                body = ",".join(p.json() for p in self._procedures.values())
                self._procedures_json = f"[{body}]"
            return self._procedures_json

    def last_event(self) -> str:
        return self._last_event

    def last_transition(self) -> str:
        return self._last_transition

    def environments(self) -> str:
        return self._environments

    def wait_added(self, procedure_id: int, timeout: float) -> bool:
        """Block until ProcedureAdded for `procedure_id` (or a later one) has been applied.

        Ids are handed out in increasing order and announced in that order, so a high-water
        mark answers "has the publisher seen it" even if the procedure is already removed.
        """
        with self._added:
            return self._added.wait_for(
                lambda: self._released or self._max_added >= procedure_id, timeout
            )

    # ---- updates (publisher thread) --------------------------------------------------------
    def release_waiters(self) -> None:
        """Release every `wait_added` waiter, now and later (the publisher is stopping)."""
        with self._added:
            self._released = True
            self._added.notify_all()

    def set_state(self, state: DeviceState, running: int, message: str) -> list[Op]:
        """Set State/Status directly (INIT at start, FAULT on a failed health check)."""
        status = status_text(state, running, message)
        if (state, status) == (self._state, self._status):
            return []
        self._state, self._status = state, status
        return [SetState(state, status)]

    def apply(self, events: Iterable[ServiceEvent]) -> list[Op]:
        """Fold a batch of service events into the snapshot; return what to push, in order."""
        ops: list[Op] = []
        output: list[str] = []
        procedures_dirty = False
        summaries: dict[int, None] = {}  # procedures whose summary changed, in order
        added: list[int] = []
        for event in events:
            if output and isinstance(event, StateChanged | UserEventPublished):
                # Lines the script printed before this state change or event go out first.
                ops.extend(Push("output", c) for c in chunk_lines(output, self._chunk_lines))
                output = []
            match event:
                case ProcedureAdded(summary=summary):
                    added.append(summary.id)
                    ops.append(AddProcedure(summary.id))
                    ops.extend(self._update(summary, state_changed=True))
                    summaries[summary.id] = None
                    procedures_dirty = True
                case StateChanged(summary=summary):
                    ops.extend(self._update(summary, state_changed=True))
                    summaries[summary.id] = None
                    procedures_dirty = True
                case SummaryChanged(summary=summary):
                    self._update(summary, state_changed=False)
                    summaries[summary.id] = None
                    procedures_dirty = True
                case ProcedureRemoved(procedure_id=pid):
                    with self._lock:
                        known = self._procedures.pop(pid, None) is not None
                        self._procedures_json = None
                    summaries.pop(pid, None)
                    if known:
                        ops.append(RemoveProcedure(pid))
                        procedures_dirty = True
                case UserEventPublished():
                    self._last_event = json.dumps(event.to_json(), separators=(",", ":"))
                    ops.append(Push("lastEvent", self._last_event, archive=True))
                case OutputAppended(lines=lines):
                    output.extend(lines)
                case ServiceStatusChanged(running=running, healthy=healthy, message=message):
                    ops.extend(self._status_changed(running, healthy, message))
                case EnvironmentsChanged():
                    self._environments = json.dumps(event.to_json(), separators=(",", ":"))
                    ops.append(Push("environments", self._environments))
        # Every state is pushed; a summary once per batch (its latest), likewise the list.
        ops.extend(
            Push(summary_attribute(pid), compute=partial(self.procedure_summary, pid))
            for pid in summaries
        )
        if procedures_dirty:
            ops.append(Push("procedures", compute=self.procedures_json))
        if added:
            with self._added:
                self._max_added = max(self._max_added, *added)
                self._added.notify_all()
        ops.extend(Push("output", chunk) for chunk in chunk_lines(output, self._chunk_lines))
        return ops

    def _update(self, summary: ProcedureSummary, *, state_changed: bool) -> list[Op]:
        with self._lock:
            self._procedures[summary.id] = _Procedure(summary)
            self._procedures_json = None
        if not state_changed:
            return []
        return [
            Push(state_attribute(summary.id), int(summary.state), archive=True),
            Push("lastTransition", self._transition(summary), archive=True),
        ]

    def _transition(self, summary: ProcedureSummary) -> str:
        self._transition_seq += 1
        when = iso(summary.history[-1][1]) if summary.history else iso(utc_now())
        self._last_transition = json.dumps(
            {
                "id": summary.id,
                "state": summary.state.name,
                "time": when,
                "seq": self._transition_seq,
            },
            separators=(",", ":"),
        )
        return self._last_transition

    def _status_changed(self, running: int, healthy: bool, message: str) -> list[Op]:
        if not healthy:
            state = DeviceState.FAULT
        elif self._state is DeviceState.FAULT:
            return []  # a broken engine stays FAULT until the device is re-initialised
        else:
            state = DeviceState.RUNNING if running > 0 else DeviceState.ON
        return self.set_state(state, running, message)


def chunk_lines(lines: Sequence[str], max_lines: int) -> list[list[str]]:
    """Split output lines into pushes of at most `max_lines` lines and ~OUTPUT_CHUNK_BYTES."""
    chunks: list[list[str]] = []
    current: list[str] = []
    size = 0
    for line in lines:
        if current and (len(current) >= max_lines or size + len(line) > OUTPUT_CHUNK_BYTES):
            chunks.append(current)
            current, size = [], 0
        current.append(line)
        size += len(line)
    if current:
        chunks.append(current)
    return chunks
