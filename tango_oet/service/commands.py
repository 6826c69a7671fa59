"""Typed items posted into the engine loop: commands (answered through a future) and reports.

Commands come from client threads, which wait for `future`; reports come from the pool's
launcher threads and the git threads, and need no answer.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from tango_oet.domain.requests import StartRequest, StopRequest
from tango_oet.domain.summary import ErrorInfo, Progress
from tango_oet.execution.launcher import Launcher, WorkerProcess
from tango_oet.service.admission import Admission


@dataclass(eq=False)
class Command:
    future: Future[Any] = field(default_factory=Future, init=False, repr=False)


@dataclass(eq=False)
class Commit(Command):
    admission: Admission
    source: str | None = None  # a file:// script's text, read from the very file checked


@dataclass(eq=False)
class Start(Command):
    request: StartRequest


@dataclass(eq=False)
class Stop(Command):
    request: StopRequest
    abort_id: int | None  # the id of the abort procedure, allocated by the caller


@dataclass(eq=False)
class Pause(Command):
    procedure_id: int


@dataclass(eq=False)
class Resume(Command):
    procedure_id: int


@dataclass(eq=False)
class Describe(Command):
    procedure_id: int


@dataclass(eq=False)
class ListAll(Command):
    pass


@dataclass(eq=False)
class RecentOutput(Command):
    pass


@dataclass(eq=False)
class Flush(Command):
    """Answered once every event emitted before it has been delivered to subscribers."""


@dataclass(eq=False)
class BeginShutdown(Command):
    """Refuse new work and stop every procedure (the loop ends later, once all are reaped)."""


#: Answered from the engine's tables even when the loop is gone (they change nothing).
QUERIES = (Describe, ListAll, RecentOutput, Flush)


# ---- reports (no answer) ------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class WorkerDelivered:
    ticket: int
    worker: WorkerProcess | None
    error: BaseException | None


@dataclass(frozen=True)
class PublishStatus:
    pass


@dataclass(frozen=True)
class GitProgress:
    procedure_id: int
    progress: Progress


@dataclass(frozen=True, eq=False)
class GitLeased:
    """A clone (`source`) or an environment (`environment`) now leased for the procedure."""

    procedure_id: int
    item: Any
    commit: str | None = None
    environment: str | None = None


@dataclass(frozen=True, eq=False)
class GitReady:
    procedure_id: int
    launcher: Launcher | None
    load: dict[str, Any]


@dataclass(frozen=True)
class GitFailed:
    procedure_id: int
    error: ErrorInfo


@dataclass(frozen=True)
class EnvironmentUsage:
    entries: tuple[dict[str, Any], ...]
    removed: tuple[str, ...]
