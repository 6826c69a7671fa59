"""What the service tells its subscribers (the device, the CLI's local mode, tests)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tango_oet.domain.states import ProcedureState
from tango_oet.domain.summary import ProcedureSummary


@dataclass(frozen=True)
class ProcedureAdded:
    summary: ProcedureSummary


@dataclass(frozen=True)
class StateChanged:
    procedure_id: int
    state: ProcedureState
    summary: ProcedureSummary


@dataclass(frozen=True)
class SummaryChanged:
    """Something other than the state changed (progress, a call result, pid, error)."""

    procedure_id: int
    summary: ProcedureSummary


@dataclass(frozen=True)
class ProcedureRemoved:
    procedure_id: int


@dataclass(frozen=True)
class UserEventPublished:
    procedure_id: int
    topic: str
    payload: dict[str, Any]
    time: str  # ISO-8601 UTC
    seq: int  # service-wide, increasing

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.procedure_id,
            "topic": self.topic,
            "payload": self.payload,
            "time": self.time,
            "seq": self.seq,
        }


@dataclass(frozen=True)
class OutputAppended:
    """New output lines, each formatted `"<id> <line>"`, oldest first."""

    lines: tuple[str, ...]


@dataclass(frozen=True)
class ServiceStatusChanged:
    running: int  # procedures RUNNING or PAUSED
    healthy: bool
    message: str


@dataclass(frozen=True)
class EnvironmentsChanged:
    """Disk usage of git clones and environments, after a build or a garbage collection."""

    entries: tuple[dict[str, Any], ...]
    removed: tuple[str, ...] = ()  # ids removed by the collection that caused this, if any

    def to_json(self) -> dict[str, Any]:
        return {
            "entries": list(self.entries),
            "total_bytes": sum(int(e.get("bytes", 0)) for e in self.entries),
            "removed": list(self.removed),
        }


ServiceEvent = (
    ProcedureAdded
    | StateChanged
    | SummaryChanged
    | ProcedureRemoved
    | UserEventPublished
    | OutputAppended
    | ServiceStatusChanged
    | EnvironmentsChanged
)
