"""The event pump: one thread delivers service events to subscribers, in order, de-duplicated.

Producers (the supervisor thread, command threads) only enqueue; a slow subscriber (a Tango
push waiting for the device monitor) therefore never delays death detection or a stop.
Within one drained batch, output lines are merged and a summary superseded by a later one for
the same procedure is dropped; state changes are never dropped.
"""

from __future__ import annotations

import logging
import queue
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


class _Stop:
    pass


class EventPump:
    """Queue + thread; `publish` from anywhere, subscribers are called on the pump thread."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[ServiceEvent | _Stop] = queue.SimpleQueue()
        self._subscribers: dict[int, Subscriber] = {}
        self._next_token = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="oet-event-pump", daemon=True)
        self._last_status: ServiceStatusChanged | None = None
        self._idle = threading.Condition()
        self._pending = 0

    def start(self) -> None:
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def subscribe(self, callback: Subscriber) -> int:
        with self._lock:
            self._next_token += 1
            self._subscribers[self._next_token] = callback
            return self._next_token

    def unsubscribe(self, token: int) -> None:
        with self._lock:
            self._subscribers.pop(token, None)

    def publish(self, event: ServiceEvent) -> None:
        with self._idle:
            self._pending += 1
        self._queue.put(event)

    def flush(self, timeout: float) -> None:
        """Wait until every event published so far has been delivered."""
        with self._idle:
            if not self._idle.wait_for(lambda: self._pending == 0, timeout):
                raise TimeoutError(f"{self._pending} events still undelivered after {timeout} s")

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread.is_alive():
            self._queue.put(_Stop())
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            batch: list[ServiceEvent | _Stop] = [self._queue.get()]
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(isinstance(e, _Stop) for e in batch)
            events = [e for e in batch if not isinstance(e, _Stop)]
            for event in self._coalesce(events):
                self._deliver(event)
            with self._idle:
                self._pending -= len(events)
                self._idle.notify_all()
            if stop:
                return

    def _coalesce(self, events: list[ServiceEvent]) -> list[ServiceEvent]:
        latest_summary: dict[int, int] = {}
        for i, e in enumerate(events):
            if isinstance(e, StateChanged | SummaryChanged):
                latest_summary[e.procedure_id] = i
        out: list[ServiceEvent] = []
        for i, e in enumerate(events):
            if isinstance(e, SummaryChanged) and latest_summary.get(e.procedure_id, i) != i:
                continue
            if isinstance(e, ServiceStatusChanged):
                if e == self._last_status:
                    continue
                self._last_status = e
            if isinstance(e, OutputAppended) and out and isinstance(out[-1], OutputAppended):
                out[-1] = OutputAppended(out[-1].lines + e.lines)
                continue
            if isinstance(e, ProcedureRemoved):
                latest_summary.pop(e.procedure_id, None)
            out.append(e)
        return out

    def _deliver(self, event: ServiceEvent) -> None:
        with self._lock:
            subscribers = list(self._subscribers.values())
        for callback in subscribers:
            try:
                callback(event)
            except Exception:  # one broken subscriber must not starve the others
                log.exception("subscriber %r failed on %r", callback, event)
