"""`Procedure`: a handle on one procedure of an OETScheduler (commands, state, event-driven waits).

proc = oet.prepare("/scripts/hello_world.py", init_args=["Moon"])
proc.wait("READY", timeout=30)
proc.start("main", 3)
summary = proc.wait_final(timeout=60)     # Summary; raises WaitTimeout with the last state
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import tango

from tango_oet.client.errors import (
    AttributeNotFound,
    DeviceError,
    UnexpectedFinalState,
    UnknownProcedure,
    WaitTimeout,
    translated,
)
from tango_oet.client.events import EventStream
from tango_oet.client.requests import start_request, stop_request
from tango_oet.client.summary import Summary
from tango_oet.domain.states import FINAL_STATES, ProcedureState

if TYPE_CHECKING:
    from tango_oet.client.scheduler import Scheduler

StateLike = ProcedureState | str | int

#: Without any event for this long, a wait reads the state itself (a lost event cannot hang it).
SILENCE_POLL_S = 3.0


def as_state(value: StateLike) -> ProcedureState:
    """`"READY"`, `5` or `ProcedureState.READY` -> ProcedureState.READY (case-insensitive)."""
    if isinstance(value, ProcedureState):
        return value
    if isinstance(value, int):
        return ProcedureState(value)
    try:
        return ProcedureState[value.strip().upper()]
    except KeyError:
        names = ", ".join(s.name for s in ProcedureState)
        raise ValueError(f"unknown procedure state {value!r}; one of {names}") from None


class Procedure:
    """One procedure (by id) on one OETScheduler. Cheap: holds no subscription of its own."""

    def __init__(self, scheduler: Scheduler, procedure_id: int) -> None:
        self._scheduler = scheduler
        self._id = int(procedure_id)

    @property
    def id(self) -> int:
        return self._id

    @property
    def scheduler(self) -> Scheduler:
        return self._scheduler

    @property
    def state_attribute(self) -> str:
        return f"procedure{self._id}State"

    # ---- reading -----------------------------------------------------------------------------
    @property
    def state(self) -> ProcedureState:
        """The current state (one read of `procedure<ID>State`)."""
        proxy = self._scheduler.proxy
        try:
            with translated(self._scheduler.name):
                return ProcedureState(int(proxy.read_attribute(self.state_attribute).value))
        except AttributeNotFound:
            return self.summary().state  # raises UnknownProcedure if it left the history

    def summary(self) -> Summary:
        """Everything known about it now (`Describe`)."""
        text = self._scheduler.command("Describe", self._id)
        return Summary.parse(str(text))

    # ---- commands ----------------------------------------------------------------------------
    def start(
        self, fn: str = "main", /, *args: Any, force: bool = False, **kwargs: Any
    ) -> Procedure:
        """Call `fn(*args, **kwargs)` in the script; `force` queues it until READY."""
        request = start_request(self._id, fn, args, kwargs, force)
        self._scheduler.command("Start", json.dumps(request))
        return self

    def stop(self, abort: bool = False) -> Procedure:
        """Stop now (cooperative, then SIGTERM, then SIGKILL); `abort` runs the abort script."""
        self._scheduler.command("Stop", json.dumps(stop_request(self._id, abort)))
        return self

    def pause(self) -> Procedure:
        """Pause at the script's next `checkpoint()`."""
        self._scheduler.command("Pause", self._id)
        return self

    def resume(self) -> Procedure:
        self._scheduler.command("Resume", self._id)
        return self

    # ---- waiting -----------------------------------------------------------------------------
    def wait(self, *states: StateLike, timeout: float | None = None) -> ProcedureState:
        """Block until the procedure is in one of `states` (default: any final state).

        Event-driven: subscribes to `procedure<ID>State` for the duration of the wait. Returns
        the state reached. Raises `UnexpectedFinalState` if it ends in another final state
        (at once, if it already has), `WaitTimeout` (with the last observed state) when
        `timeout` seconds pass, and `UnknownProcedure` if the id is not in the history.
        """
        wanted = tuple(as_state(s) for s in states)
        waiter = _StateWaiter()
        proxy = self._scheduler.proxy
        try:
            with translated(self._scheduler.name):
                event_id = proxy.subscribe_event(
                    self.state_attribute, tango.EventType.CHANGE_EVENT, waiter.on_event
                )
        except AttributeNotFound:
            # Gone from the history between the calls, or never existed: Describe says which.
            waiter.observe([self.summary().state])
            event_id = None
        try:
            if not waiter.observed_any():
                waiter.poll(lambda: self.state)  # the subscription's first value was an error
            return waiter.wait(self._id, wanted, timeout, poll=lambda: self.state)
        finally:
            if event_id is not None:
                try:
                    proxy.unsubscribe_event(event_id)
                except tango.DevFailed:
                    pass  # the attribute is gone already

    def wait_final(self, timeout: float | None = None) -> Summary:
        """Block until the procedure has ended (any final state) and return its summary."""
        self.wait(timeout=timeout)
        return self.summary()

    def iter_events(
        self, *, output: bool = True, until_final: bool = True, linger: float = 0.3
    ) -> EventStream:
        """Its state changes, user events, progress and output lines, as they happen.

        Starts by replaying its states so far and the output still in the device's buffer.
        With `until_final` the iteration ends shortly after the final state; `close()` (or
        leaving a `with` block) ends it at any time.
        """
        return EventStream(
            self._scheduler.proxy,
            self._id,
            output=output,
            until_final=until_final,
            linger=linger,
            device=self._scheduler.name,
        )

    # ---- Python ------------------------------------------------------------------------------
    def __repr__(self) -> str:
        try:
            state = self.state.name
        except DeviceError as exc:
            state = f"? ({exc.reason})"
        return f"<Procedure {self._id} {state} on {self._scheduler.name}>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Procedure):
            return NotImplemented
        return (self._scheduler.name, self._id) == (other._scheduler.name, other._id)

    def __hash__(self) -> int:
        return hash((self._scheduler.name, self._id))


class _StateWaiter:
    """Collects observed states from any thread; `wait` decides on them in arrival order."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._observed: list[ProcedureState] = []
        self._errors: list[str] = []

    def on_event(self, e: Any) -> None:
        if e.err:
            first = e.errors[0] if e.errors else None
            text = f"{first.reason}: {' '.join(str(first.desc).split())}" if first else "error"
            with self._cond:
                self._errors.append(text)
                self._cond.notify_all()
            return
        self.observe([ProcedureState(int(e.attr_value.value))])

    def observed_any(self) -> bool:
        with self._cond:
            return bool(self._observed)

    def poll(self, read: Callable[[], ProcedureState]) -> None:
        """Read the state directly; a failed read is remembered like an error event, except
        UnknownProcedure, which ends the wait."""
        try:
            state = read()
        except UnknownProcedure:
            raise
        except DeviceError as exc:
            with self._cond:
                self._errors.append(exc.message())
            return
        self.observe([state])

    def observe(self, states: Iterable[ProcedureState]) -> None:
        with self._cond:
            self._observed.extend(states)
            self._cond.notify_all()

    def wait(
        self,
        procedure_id: int,
        wanted: tuple[ProcedureState, ...],
        timeout: float | None,
        poll: Callable[[], ProcedureState],
    ) -> ProcedureState:
        deadline = None if timeout is None else time.monotonic() + timeout
        checked = 0
        last: ProcedureState | None = None
        quiet_since = time.monotonic()
        while True:
            with self._cond:
                new = self._observed[checked:]
                checked = len(self._observed)
                if new:
                    quiet_since = time.monotonic()
                for state in new:
                    last = state
                    if state in wanted or (not wanted and state in FINAL_STATES):
                        return state
                    if state in FINAL_STATES:
                        raise UnexpectedFinalState(procedure_id, wanted, state)
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    detail = f"event errors: {self._errors[-1]}" if self._errors else ""
                    raise WaitTimeout(procedure_id, wanted, last, timeout or 0.0, detail)
                remaining = SILENCE_POLL_S if deadline is None else deadline - now
                step = min(remaining, 0.5, max(0.0, quiet_since + SILENCE_POLL_S - now))
                if not self._observed[checked:]:
                    self._cond.wait(step)
            if time.monotonic() - quiet_since >= SILENCE_POLL_S:
                quiet_since = time.monotonic()
                self.poll(poll)  # events may be lost; the attribute is the truth
