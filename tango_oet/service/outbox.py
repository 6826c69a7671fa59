"""The outbox: service events emitted on the engine loop, delivered to subscribers in order.

Subscribers are called on the loop thread after each step (a command, a batch of worker
reports), so they must only enqueue. Within one delivery, consecutive output is merged, a
summary superseded by a later one of the same procedure is dropped and an unchanged service
status is not repeated; state changes are never dropped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from tango_oet.service.events import (
    OutputAppended,
    ProcedureRemoved,
    ServiceEvent,
    ServiceStatusChanged,
    StateChanged,
    SummaryChanged,
)

log = logging.getLogger(__name__)

Subscriber = Callable[[ServiceEvent], None]


class Outbox:
    """`subscribe`/`unsubscribe` from any thread; `add` and `deliver` on the loop only."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: tuple[tuple[int, Subscriber], ...] = ()
        self._next_token = 0
        self._events: list[ServiceEvent] = []
        self._last_status: ServiceStatusChanged | None = None

    def subscribe(self, callback: Subscriber) -> int:
        with self._lock:
            self._next_token += 1
            self._subscribers = (*self._subscribers, (self._next_token, callback))
            return self._next_token

    def unsubscribe(self, token: int) -> None:
        with self._lock:
            self._subscribers = tuple(s for s in self._subscribers if s[0] != token)

    def add(self, event: ServiceEvent) -> None:
        self._events.append(event)

    def deliver(self) -> None:
        if not self._events:
            return
        events, self._events = self._events, []
        subscribers = self._subscribers
        for event in self._coalesce(events):
            for _, callback in subscribers:
                try:
                    callback(event)
                except Exception:  # one broken subscriber must not starve the others
                    log.exception("subscriber %r failed on %r", callback, event)

    def _coalesce(self, events: list[ServiceEvent]) -> list[ServiceEvent]:
        if len(events) == 1 and not isinstance(events[0], ServiceStatusChanged):
            return events
        latest_summary: dict[int, int] = {}
        for i, e in enumerate(events):
            if isinstance(e, StateChanged | SummaryChanged):
                latest_summary[e.procedure_id] = i
        out: list[ServiceEvent] = []
        merged: list[str] | None = None  # lines of the OutputAppended at out[-1], growing
        for i, e in enumerate(events):
            if isinstance(e, SummaryChanged) and latest_summary.get(e.procedure_id, i) != i:
                continue
            if isinstance(e, ServiceStatusChanged):
                if e == self._last_status:
                    continue
                self._last_status = e
            if isinstance(e, OutputAppended):
                if merged is None:
                    merged = list(e.lines)
                    out.append(e)
                else:
                    merged.extend(e.lines)
                    out[-1] = OutputAppended(())  # rebuilt below, once
                continue
            if merged is not None:
                out[-1] = OutputAppended(tuple(merged))
                merged = None
            if isinstance(e, ProcedureRemoved):
                latest_summary.pop(e.procedure_id, None)
            out.append(e)
        if merged is not None:
            out[-1] = OutputAppended(tuple(merged))
        return out
