"""The API user scripts import: publish events, report progress, honour pause and stop.

Standard library only, so it works in any environment. Outside a tango-oet worker (a script run
by hand, a unit test of a script) every call is harmless: events and progress go to logging,
`checkpoint()` returns at once and `stop_requested()` is False.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

__all__ = [
    "ScriptTerminated",
    "StopRequested",
    "checkpoint",
    "progress",
    "publish",
    "stop_requested",
]

_log = logging.getLogger("tango_oet.scripting")


class StopRequested(BaseException):
    """Raised by `checkpoint()` when the procedure is being stopped.

    A BaseException, like KeyboardInterrupt, so `except Exception:` in a script does not swallow
    it; `finally:` blocks and context managers still run.
    """


class ScriptTerminated(StopRequested):
    """Raised asynchronously in the script's main thread when the worker receives SIGTERM."""


class Runtime(Protocol):
    """What a worker provides to the script; installed with `_install`."""

    def publish(self, topic: str, payload: dict[str, Any]) -> None: ...
    def progress(self, done: float, total: float | None, message: str) -> None: ...
    def checkpoint(self) -> None: ...
    def stop_requested(self) -> bool: ...


_runtime: Runtime | None = None


def _install(runtime: Runtime | None) -> None:
    global _runtime
    _runtime = runtime


def publish(topic: str, /, **payload: Any) -> None:
    """Publish a user event; it becomes the device's `lastEvent` (JSON-safe, else repr)."""
    if not isinstance(topic, str) or not topic:
        raise ValueError(f"topic must be a non-empty string, got {topic!r}")
    if _runtime is None:
        _log.info("event %s %r", topic, payload)
    else:
        _runtime.publish(topic, payload)


def progress(done: float, total: float | None = None, message: str = "") -> None:
    """Report how far the script is, e.g. `progress(3, 10, "scan 3 of 10")`."""
    if _runtime is None:
        _log.info("progress %s/%s %s", done, total, message)
    else:
        _runtime.progress(float(done), None if total is None else float(total), str(message))


def checkpoint() -> None:
    """A safe point: blocks while paused, raises StopRequested when a stop was requested."""
    if _runtime is not None:
        _runtime.checkpoint()


def stop_requested() -> bool:
    """True once a stop was requested, for scripts that wind down on their own terms."""
    return _runtime is not None and _runtime.stop_requested()
