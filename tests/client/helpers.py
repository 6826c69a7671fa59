"""Helpers for tests that consume an EventStream: bounded waits that report what was seen."""

from __future__ import annotations

import time
from collections.abc import Callable

from tango_oet.client import Event, EventStream


def take_until(
    stream: EventStream,
    done: Callable[[Event], bool],
    timeout: float = 20.0,
    seen: list[Event] | None = None,
) -> list[Event]:
    """Append events to `seen` until `done(event)`; AssertionError (with them) on timeout."""
    seen = [] if seen is None else seen
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        item = stream.get(timeout=max(0.0, remaining)) if remaining > 0 else None
        if item is None:
            raise AssertionError(
                f"no matching event within {timeout} s (stream finished: {stream.finished});"
                f" seen: {[str(e) for e in seen]}"
            )
        seen.append(item)
        if done(item):
            return seen


def drain(stream: EventStream, timeout: float = 20.0) -> list[Event]:
    """Everything until the stream ends by itself (until_final); fails if it does not."""
    items: list[Event] = []
    deadline = time.monotonic() + timeout
    while not stream.finished:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"stream did not end within {timeout} s; seen: {items}")
        item = stream.get(timeout=remaining)
        if item is not None:
            items.append(item)
    return items
