"""A typed, read-only view of the Summary JSON of INTERFACE.md (what `Describe` returns)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tango_oet.domain.states import FINAL_STATES, ProcedureState


def parse_time(value: object) -> datetime | None:
    """ISO-8601 (with `Z`) to an aware datetime; None for null or anything unparsable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _state(value: object) -> ProcedureState:
    try:
        return ProcedureState[str(value)]
    except KeyError:
        return ProcedureState.UNKNOWN


@dataclass(frozen=True)
class Call:
    """One function call of a procedure and, once it returned, its result."""

    function: str
    args: list[Any]
    kwargs: dict[str, Any]
    time: datetime | None
    finished: datetime | None
    result: Any

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Call:
        return cls(
            function=str(obj.get("function", "")),
            args=list(obj.get("args") or []),
            kwargs=dict(obj.get("kwargs") or {}),
            time=parse_time(obj.get("time")),
            finished=parse_time(obj.get("finished")),
            result=obj.get("result"),
        )


@dataclass(frozen=True)
class Failure:
    """Why a procedure failed: the script's exception, or how its process ended."""

    type: str
    message: str
    traceback: str
    exitcode: int | None
    signal: str | None

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Failure:
        return cls(
            type=str(obj.get("type", "")),
            message=str(obj.get("message", "")),
            traceback=str(obj.get("traceback") or ""),
            exitcode=obj.get("exitcode"),
            signal=obj.get("signal"),
        )

    def one_line(self) -> str:
        text = f"{self.type}: {self.message}" if self.message else self.type
        if self.signal:
            text += f" ({self.signal})"
        elif self.exitcode not in (None, 0) and not self.traceback:
            text += f" (exit code {self.exitcode})"  # the process died, not the script
        return " ".join(text.split())


@dataclass(frozen=True)
class Progress:
    done: float
    total: float | None
    message: str

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Progress:
        total = obj.get("total")
        return cls(
            float(obj.get("done") or 0),
            None if total is None else float(total),
            str(obj.get("message") or ""),
        )

    def __str__(self) -> str:
        count = f"{self.done:g}/{self.total:g}" if self.total is not None else f"{self.done:g}"
        return f"{count} {self.message}".strip()


@dataclass(frozen=True)
class Summary:
    """One procedure at one instant. `raw` is the JSON object exactly as the device sent it."""

    id: int
    state: ProcedureState
    script_uri: str
    script_kind: str
    git_commit: str | None
    environment: str | None
    init_args: list[Any]
    init_kwargs: dict[str, Any]
    calls: tuple[Call, ...]
    history: tuple[tuple[ProcedureState, datetime | None], ...]
    progress: Progress | None
    error: Failure | None
    pid: int | None
    raw: dict[str, Any] = field(compare=False, repr=False)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Summary:
        script = obj.get("script") or {}
        git = script.get("git") or {}
        init = obj.get("init") or {}
        progress = obj.get("progress")
        error = obj.get("error")
        return cls(
            id=int(obj["id"]),
            state=_state(obj.get("state")),
            script_uri=str(script.get("uri", "")),
            script_kind=str(script.get("kind", "")),
            git_commit=git.get("commit"),
            environment=script.get("environment"),
            init_args=list(init.get("args") or []),
            init_kwargs=dict(init.get("kwargs") or {}),
            calls=tuple(Call.from_json(c) for c in obj.get("calls") or []),
            history=tuple((_state(s), parse_time(t)) for s, t in obj.get("history") or []),
            progress=Progress.from_json(progress) if isinstance(progress, dict) else None,
            error=Failure.from_json(error) if isinstance(error, dict) else None,
            pid=obj.get("pid"),
            raw=obj,
        )

    @classmethod
    def parse(cls, text: str) -> Summary:
        return cls.from_json(json.loads(text))

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    def entered(self, state: ProcedureState) -> datetime | None:
        """When the procedure first entered `state` (None if it never did)."""
        return next((t for s, t in self.history if s is state), None)

    @property
    def started(self) -> datetime | None:
        """When it first started RUNNING."""
        return self.entered(ProcedureState.RUNNING)

    @property
    def ended(self) -> datetime | None:
        """When it reached its final state."""
        if not self.is_final or not self.history:
            return None
        return self.history[-1][1]

    def duration(self, now: datetime | None = None) -> timedelta | None:
        """Running time: start to end, or start to `now` while it has not ended."""
        if self.started is None:
            return None
        end = self.ended or now or datetime.now(UTC)
        return end - self.started

    @property
    def result(self) -> Any:
        """The result of the last finished `main` call (None if there is none)."""
        for call in reversed(self.calls):
            if call.function == "main" and call.finished is not None:
                return call.result
        return None

    def outcome(self) -> str:
        """One line: the error if it failed, else the last finished call's result."""
        if self.error is not None:
            return self.error.one_line()
        finished = [c for c in self.calls if c.finished is not None]
        if not finished:
            return ""
        last = finished[-1]
        text = json.dumps(last.result, default=str)
        return text if last.function == "main" else f"{last.function}: {text}"

    def __str__(self) -> str:
        return f"procedure {self.id} {self.state.name} {self.script_uri}"
