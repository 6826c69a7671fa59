"""Read models of a procedure (the Summary JSON of INTERFACE.md), immutable and JSON-ready."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tango_oet.domain.requests import ProcedureInput
from tango_oet.domain.scripts import Script
from tango_oet.domain.states import ProcedureState


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(t: datetime) -> str:
    return t.isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class ErrorInfo:
    """Why a procedure failed: an exception in the script, or how its process ended."""

    type: str
    message: str
    traceback: str = ""
    exitcode: int | None = None
    signal: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "message": self.message,
            "traceback": self.traceback,
            "exitcode": self.exitcode,
            "signal": self.signal,
        }


@dataclass(frozen=True)
class Progress:
    done: float
    total: float | None
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"done": self.done, "total": self.total, "message": self.message}


@dataclass(frozen=True)
class CallRecord:
    """One function call: requested, and once finished its JSON result (or repr)."""

    function: str
    call: ProcedureInput
    time: datetime
    finished: datetime | None = None
    result: Any = None

    def to_json(self) -> dict[str, Any]:
        return {
            "function": self.function,
            **self.call.to_json(),
            "time": iso(self.time),
            "finished": iso(self.finished) if self.finished else None,
            "result": self.result,
        }


@dataclass(frozen=True)
class ProcedureSummary:
    """Everything a client may know about one procedure, at one instant."""

    id: int
    state: ProcedureState
    script: Script
    init: ProcedureInput
    history: tuple[tuple[ProcedureState, datetime], ...]
    calls: tuple[CallRecord, ...] = ()
    progress: Progress | None = None
    error: ErrorInfo | None = None
    pid: int | None = None
    git_commit: str | None = None
    environment: str | None = None
    abort_procedure: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        script: dict[str, Any] = {
            "kind": self.script.kind,
            "uri": self.script.uri,
            "git": None,
            "environment": self.environment,
        }
        if self.script.kind == "git":
            ref = self.script.git
            script["git"] = {
                "repo": ref.repo,
                "branch": ref.branch,
                "tag": ref.tag,
                "requested_commit": ref.commit,
                "commit": self.git_commit,
                "create_env": self.script.create_env,
            }
        return {
            "id": self.id,
            "state": self.state.name,
            "script": script,
            "init": self.init.to_json(),
            "calls": [c.to_json() for c in self.calls],
            "history": [[s.name, iso(t)] for s, t in self.history],
            "progress": self.progress.to_json() if self.progress else None,
            "error": self.error.to_json() if self.error else None,
            "pid": self.pid,
            "abort_procedure": self.abort_procedure,
        }

    def to_json_text(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"))
