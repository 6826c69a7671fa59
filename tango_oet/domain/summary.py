"""Read models of a procedure (the Summary JSON of INTERFACE.md), immutable and JSON-ready."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tango_oet.domain.requests import ProcedureInput
from tango_oet.domain.scripts import EmbeddedScript, FilesystemScript, GitRef, GitScript, Script
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


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _script_from_json(obj: dict[str, Any]) -> Script:
    uri = str(obj["uri"])
    match obj["kind"]:
        case "filesystem":
            return FilesystemScript(path=uri[len("file://") :])
        case "git":
            git = obj.get("git") or {}
            ref = GitRef(
                repo=str(git.get("repo", "")),
                branch=git.get("branch"),
                tag=git.get("tag"),
                commit=git.get("requested_commit"),
            )
            return GitScript(
                path=uri[len("git://") :], git=ref, create_env=bool(git.get("create_env"))
            )
        case _:  # the source is not part of the record: a restored procedure never runs again
            return EmbeddedScript(name=uri[len("embedded://") :], source="")


def summary_from_json(obj: dict[str, Any]) -> ProcedureSummary:
    """The inverse of `ProcedureSummary.to_json` (for summaries read back from the store)."""
    error = obj.get("error")
    progress = obj.get("progress")
    script = obj["script"]
    git = script.get("git") or {}
    return ProcedureSummary(
        id=int(obj["id"]),
        state=ProcedureState[obj["state"]],
        script=_script_from_json(script),
        init=ProcedureInput(
            args=tuple(obj["init"].get("args", ())), kwargs=dict(obj["init"].get("kwargs", {}))
        ),
        history=tuple((ProcedureState[s], _time(t)) for s, t in obj["history"]),
        calls=tuple(
            CallRecord(
                function=c["function"],
                call=ProcedureInput(
                    args=tuple(c.get("args", ())), kwargs=dict(c.get("kwargs", {}))
                ),
                time=_time(c["time"]),
                finished=_time(c["finished"]) if c.get("finished") else None,
                result=c.get("result"),
            )
            for c in obj.get("calls", ())
        ),
        progress=Progress(progress["done"], progress["total"], progress.get("message", ""))
        if progress
        else None,
        error=ErrorInfo(
            error["type"],
            error["message"],
            error.get("traceback", ""),
            error.get("exitcode"),
            error.get("signal"),
        )
        if error
        else None,
        pid=obj.get("pid"),
        git_commit=git.get("commit"),
        environment=script.get("environment"),
        abort_procedure=obj.get("abort_procedure"),
    )
