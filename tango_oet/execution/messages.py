"""Typed messages between the parent and a worker process; frozen dataclasses with sequence numbers.

Only the standard library is imported: this module is loaded by workers running under an
environment's own interpreter, where nothing but `tango_oet` itself is guaranteed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


# ---- parent -> worker -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LoadScript:
    """Load a script as a fresh module, then run `init(*args, **kwargs)` if it defines one."""

    seq: int
    procedure_id: int
    name: str
    path: str | None  # a file to execute, or
    source: str | None  # source text (embedded scripts)
    init_args: tuple[Any, ...] = ()
    init_kwargs: dict[str, Any] = field(default_factory=dict)
    sys_path: tuple[str, ...] = ()  # prepended to sys.path (the script's directory, a clone)
    cwd: str | None = None


@dataclass(frozen=True, slots=True)
class CallFunction:
    seq: int
    call_id: int
    function: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PauseScript:
    seq: int


@dataclass(frozen=True, slots=True)
class ResumeScript:
    seq: int


@dataclass(frozen=True, slots=True)
class StopScript:
    """Cooperative stop: `checkpoint()` raises StopRequested, an idle worker exits."""

    seq: int


ParentMessage = LoadScript | CallFunction | PauseScript | ResumeScript | StopScript


# ---- worker -> parent -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class WorkerReady:
    seq: int
    pid: int
    python: str  # sys.executable, for the record


@dataclass(frozen=True, slots=True)
class LoadStarted:
    seq: int


@dataclass(frozen=True, slots=True)
class InitStarted:
    seq: int


@dataclass(frozen=True, slots=True)
class Loaded:
    """Module loaded and init (if any) returned: the procedure is READY."""

    seq: int
    functions: tuple[str, ...]
    init_result: Any = None


@dataclass(frozen=True, slots=True)
class CallReturned:
    seq: int
    call_id: int
    function: str
    result: Any  # JSON-safe (the worker falls back to repr)


@dataclass(frozen=True, slots=True)
class ScriptFailed:
    """An exception escaped the script (phase: load, init or call)."""

    seq: int
    phase: str
    error_type: str
    message: str
    traceback: str


@dataclass(frozen=True, slots=True)
class UserEvent:
    seq: int
    topic: str
    payload: dict[str, Any]  # JSON-safe
    time: float  # epoch seconds
    thread: str


@dataclass(frozen=True, slots=True)
class OutputLines:
    seq: int
    stream: str  # stdout | stderr | log
    lines: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ProgressReport:
    seq: int
    done: float
    total: float | None
    message: str


@dataclass(frozen=True, slots=True)
class PauseReached:
    seq: int


@dataclass(frozen=True, slots=True)
class ResumedRunning:
    seq: int


WorkerMessage = (
    WorkerReady
    | LoadStarted
    | InitStarted
    | Loaded
    | CallReturned
    | ScriptFailed
    | UserEvent
    | OutputLines
    | ProgressReport
    | PauseReached
    | ResumedRunning
)
