"""The device's single event-publishing thread.

The service's pump thread calls `submit` for every event; `submit` only enqueues, so a Tango
push waiting for the device monitor never delays the engine. One `PyTangoThread` (an omniORB
thread, as Tango requires for pushing events) drains the queue in batches and hands each batch
to the device's `publish_batch`, which runs under the device's serialization monitor.

Between batches the thread gives the device a turn (`on_turn`) for deferred Tango work, one
step per turn (the device makes its structural changes there, one at a time); the device
answers how long until its next step may run, and `wake` cuts that wait short. When the queue
stays empty the thread calls `on_idle` once per `idle_s` (the device checks the engine's
health, because a dead event pump cannot report its death).
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

from tango.utils import PyTangoThread

from tango_oet.service.events import ServiceEvent

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_BATCH = 5000  # events per batch: bounds how long one batch holds the device monitor


class BatchHandler(Protocol):
    def publish_batch(self, events: list[ServiceEvent]) -> None: ...

    def on_turn(self) -> float | None:
        """One step of deferred work; seconds until the next may run (None: nothing left)."""
        ...

    def on_idle(self) -> None: ...


class _Stop:
    pass


class _Wake:
    pass


_WAKE = _Wake()


class EventPublisher:
    """Queue + one omniORB thread delivering service events to the device in batches."""

    def __init__(self, handler: BatchHandler, name: str, idle_s: float = 1.0) -> None:
        self._handler = handler
        self._queue: queue.SimpleQueue[ServiceEvent | _Stop | _Wake] = queue.SimpleQueue()
        self._idle_s = idle_s
        self._thread = PyTangoThread(target=self._run, name=name, daemon=True)
        self._stopping = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def is_alive(self) -> bool:
        return bool(self._thread.is_alive())

    def submit(self, event: ServiceEvent) -> None:
        """Service subscriber callback: never blocks."""
        self._queue.put(event)

    def wake(self) -> None:
        """Give the device a turn now (its deferred work may go on). Never blocks."""
        self._queue.put(_WAKE)

    def drain(self) -> None:
        """Publish what is queued now, in the calling thread: only before `start`."""
        if self._thread.is_alive():
            raise RuntimeError("drain() is for before start()")
        batch = self._take(None)
        if batch:
            self._handler.publish_batch(batch)

    def stop(self, timeout: float = 10.0) -> None:
        """Deliver what is queued, then end the thread. The caller must not hold the monitor."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._queue.put(_Stop())
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("event publisher did not stop within %s s", timeout)

    def _take(self, first: ServiceEvent | None) -> list[ServiceEvent] | None:
        """The next batch (None if a stop came): what is queued, up to MAX_BATCH."""
        batch: list[ServiceEvent] = [] if first is None else [first]
        while len(batch) < MAX_BATCH:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Stop):
                if batch:
                    self._guarded(functools.partial(self._handler.publish_batch, batch))
                return None
            if not isinstance(item, _Wake):
                batch.append(item)
        return batch

    def _run(self) -> None:
        next_idle = time.monotonic() + self._idle_s
        while True:
            wait = self._guarded(self._handler.on_turn)
            timeout = max(0.0, next_idle - time.monotonic())
            if wait is not None:
                timeout = min(wait, timeout)
            try:
                first = self._queue.get(timeout=timeout)
            except queue.Empty:
                if time.monotonic() >= next_idle:
                    self._guarded(self._handler.on_idle)
                    next_idle = time.monotonic() + self._idle_s
                continue
            if isinstance(first, _Stop):
                return
            if isinstance(first, _Wake):
                continue
            batch = self._take(first)
            if batch is None:
                return
            self._guarded(functools.partial(self._handler.publish_batch, batch))

    @staticmethod
    def _guarded(call: Callable[[], T]) -> T | None:
        try:
            return call()
        except Exception:  # a thread boundary: log and keep publishing the next batch
            log.exception("event publisher: %r failed", call)
            return None
