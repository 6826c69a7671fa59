"""The service's private, mutable record of one procedure; turned into immutable summaries."""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tango_oet.domain.requests import ProcedureInput
from tango_oet.domain.scripts import Script
from tango_oet.domain.states import ProcedureState, Trigger, next_state
from tango_oet.domain.summary import CallRecord, ErrorInfo, ProcedureSummary, Progress, utc_now
from tango_oet.execution.launcher import WorkerProcess


@dataclass(frozen=True)
class PendingCall:
    function: str
    call: ProcedureInput
    timeout: float | None = None  # seconds of wall clock the call may take


@dataclass(eq=False)
class Procedure:
    """Owned by the engine loop: created, changed and read on the supervisor thread only."""

    id: int
    script: Script
    init: ProcedureInput
    state: ProcedureState = ProcedureState.CREATING
    history: list[tuple[ProcedureState, datetime]] = field(default_factory=list)
    calls: list[CallRecord] = field(default_factory=list)
    pending: collections.deque[PendingCall] = field(default_factory=collections.deque)
    functions: tuple[str, ...] | None = None
    progress: Progress | None = None
    error: ErrorInfo | None = None
    worker: WorkerProcess | None = None
    pid: int | None = None
    git_commit: str | None = None
    environment: str | None = None
    abort_requested: bool = False
    abort_id: int | None = None  # allocated by the Stop that asked for the abort script
    abort_procedure: int | None = None
    launch_ticket: int | None = None  # a pool launch on its way to this procedure
    cancel: threading.Event = field(default_factory=threading.Event)
    leases: list[Any] = field(default_factory=list)  # clones/environments held while in use
    checked_source: str | None = None  # a file:// script's text, read when it was checked
    timed_out: ErrorInfo | None = None  # a call's timeout stopped it: how it ends
    call_timeout: tuple[str, float | None] | None = None  # the running call and its timeout

    def __post_init__(self) -> None:
        self.history.append((self.state, utc_now()))

    @classmethod
    def restored(cls, summary: ProcedureSummary) -> Procedure:
        """The record of a procedure a previous server ran, as it was stored (no process)."""
        proc = cls(id=summary.id, script=summary.script, init=summary.init, state=summary.state)
        proc.history[:] = summary.history
        proc.calls = list(summary.calls)
        proc.progress = summary.progress
        proc.error = summary.error
        proc.pid = summary.pid
        proc.git_commit = summary.git_commit
        proc.environment = summary.environment
        proc.abort_procedure = summary.abort_procedure
        return proc

    def apply(self, trigger: Trigger) -> ProcedureState:
        """Move along the transition table (raises IllegalTransition) and record the time."""
        self.state = next_state(self.state, trigger, self.id)
        self.history.append((self.state, utc_now()))
        return self.state

    def record_call(self, function: str, call: ProcedureInput) -> int:
        self.calls.append(CallRecord(function=function, call=call, time=utc_now()))
        return len(self.calls) - 1

    def finish_call(self, index: int, result: Any) -> None:
        if 0 <= index < len(self.calls):
            c = self.calls[index]
            self.calls[index] = CallRecord(c.function, c.call, c.time, utc_now(), result)

    def summary(self) -> ProcedureSummary:
        return ProcedureSummary(
            id=self.id,
            state=self.state,
            script=self.script,
            init=self.init,
            history=tuple(self.history),
            calls=tuple(self.calls),
            progress=self.progress,
            error=self.error,
            pid=self.pid,
            git_commit=self.git_commit,
            environment=self.environment,
            abort_procedure=self.abort_procedure,
        )
