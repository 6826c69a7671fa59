"""The device's single event-publishing thread.

The service's pump thread calls `submit` for every event; `submit` only enqueues, so a Tango
push waiting for the device monitor never delays the engine. One `PyTangoThread` (an omniORB
thread, as Tango requires for pushing events) drains the queue in batches and hands each batch
to the device's `publish_batch`, which runs under the device's serialization monitor.

Two hooks run when there is nothing to publish: `on_quiet` once the queue has been empty for
`quiet_s` after a batch (the device does deferred, slow Tango work there, one step per call,
returning True while steps remain), and `on_idle` whenever the queue stays empty for `idle_s`
(the device checks the engine's health, because a dead event pump cannot report its death).
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
from collections.abc import Callable
from typing import Protocol, TypeVar

from tango.utils import PyTangoThread

from tango_oet.service.events import ServiceEvent

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_BATCH = 5000  # events per batch: bounds how long one batch holds the device monitor


class BatchHandler(Protocol):
    def publish_batch(self, events: list[ServiceEvent]) -> None: ...
    def on_quiet(self) -> bool: ...
    def on_idle(self) -> None: ...


class _Stop:
    pass


class EventPublisher:
    """Queue + one omniORB thread delivering service events to the device in batches."""

    def __init__(
        self, handler: BatchHandler, name: str, quiet_s: float = 0.02, idle_s: float = 1.0
    ) -> None:
        self._handler = handler
        self._queue: queue.SimpleQueue[ServiceEvent | _Stop] = queue.SimpleQueue()
        self._quiet_s = quiet_s
        self._idle_s = idle_s
        self._quiet_work = True  # deferred work may be due (at start: yes)
        self._thread = PyTangoThread(target=self._run, name=name, daemon=True)
        self._stopping = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def is_alive(self) -> bool:
        return bool(self._thread.is_alive())

    def submit(self, event: ServiceEvent) -> None:
        """Service subscriber callback: never blocks."""
        self._queue.put(event)

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

    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=self._quiet_s if self._quiet_work else self._idle_s)
            except queue.Empty:
                if self._quiet_work:
                    self._quiet_work = self._guarded(self._handler.on_quiet) is True
                else:
                    self._guarded(self._handler.on_idle)
                continue
            if isinstance(first, _Stop):
                return
            batch: list[ServiceEvent] = [first]
            stop = False
            while len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, _Stop):
                    stop = True
                    break
                batch.append(item)
            self._guarded(functools.partial(self._handler.publish_batch, batch))
            self._quiet_work = True
            if stop:
                return

    @staticmethod
    def _guarded(call: Callable[[], T]) -> T | None:
        try:
            return call()
        except Exception:  # a thread boundary: log and keep publishing the next batch
            log.exception("event publisher: %r failed", call)
            return None
