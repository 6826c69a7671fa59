"""Typed messages between the parent and a worker process; frozen dataclasses with sequence numbers.

Only the standard library is imported: this module is loaded by workers running under an
environment's own interpreter, where nothing but `tango_oet` itself is guaranteed.

Worker to server, a message travels as JSON (`encode_worker`, `decode_worker`), never as a
pickle: the worker runs user code, and unpickling what it sends would let that code run inside
the server. The server parses the frame and accepts only the message types below with exactly
their fields. Server to worker stays a pickle (the server is trusted by the worker).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
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


_WORKER_TYPES: dict[str, type[Any]] = {
    cls.__name__: cls
    for cls in (
        WorkerReady,
        LoadStarted,
        InitStarted,
        Loaded,
        CallReturned,
        ScriptFailed,
        UserEvent,
        OutputLines,
        ProgressReport,
        PauseReached,
        ResumedRunning,
    )
}


class BadWorkerMessage(ValueError):
    """A frame from a worker that is not one of its messages: the worker is broken."""


def encode_worker(msg: WorkerMessage) -> bytes:
    """One worker message as JSON bytes (fields by name, plus its type)."""
    body: dict[str, Any] = {"type": type(msg).__name__}
    for f in fields(msg):
        body[f.name] = getattr(msg, f.name)
    return json.dumps(body, separators=(",", ":"), default=repr).encode("ascii")


def decode_worker(raw: bytes | bytearray | memoryview) -> WorkerMessage:
    """Parse one frame from a worker; BadWorkerMessage naming what is wrong."""
    try:
        obj = json.loads(bytes(raw))
    except (ValueError, RecursionError) as exc:
        raise BadWorkerMessage(f"not a JSON message: {exc}") from None
    if not isinstance(obj, dict):
        raise BadWorkerMessage(f"not a JSON object: {type(obj).__name__}")
    kind = obj.pop("type", None)
    cls = _WORKER_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise BadWorkerMessage(f"unknown message type {kind!r}")
    names = {f.name: f for f in fields(cls)}
    unknown = set(obj) - set(names)
    missing = [n for n in names if n not in obj]
    if unknown or missing:
        raise BadWorkerMessage(
            f"{cls.__name__}: unknown fields {sorted(unknown)}, missing {missing}"
        )
    if not isinstance(obj["seq"], int) or isinstance(obj["seq"], bool):
        raise BadWorkerMessage(f"{cls.__name__}: seq must be an integer, got {obj['seq']!r}")
    for name, f in names.items():
        if str(f.type).startswith("tuple") and isinstance(obj[name], list):
            obj[name] = tuple(obj[name])
    msg: WorkerMessage = cls(**obj)
    return msg
