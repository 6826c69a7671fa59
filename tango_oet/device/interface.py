"""When the device may make its next structural change: cppTango's interface thread is gone.

Two cppTango 10.3 facts shape this (docs/device.md, benchmarks/repro_dev_intr.py). An
`add_attribute` before any event subscription exists crashes the server (the ZMQ event
supplier is created only by the first subscription). And each add/remove starts the
DevIntrThread, which waits 50 ms, takes the device monitor, pushes the interface-change event
and ends; a structural change made while it is alive and past that wait never gets its
acknowledgement: both block for 3.2 s. So the device subscribes to its own interface-change
event (creating the supplier; each event is a wake-up), notes the threads that appear during
each change (the DevIntrThread is started inside the call), and makes the next change only
once they have all ended. An event alone is not enough: it arrives while the thread that
pushed it may still be finishing.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import tango

log = logging.getLogger(__name__)

#: A DevIntrThread ends at most ~3.3 s after its change (50 ms wait, then at most 3.2 s for the
#: monitor): past this, the threads noted at a change are not it.
INTERFACE_WAIT_S = 4.0
FIRST_EVENT_WAIT_S = 3.0
RECHECK_S = 0.001  # the event came: the thread that pushed it ends within microseconds
POLL_S = 0.1  # no event yet: look again now and then (a thread that did not push also ends)
_TASKS = "/proc/self/task"


def _threads() -> set[int]:
    try:
        return {int(t) for t in os.listdir(_TASKS)}
    except OSError:  # not Linux: nothing to watch, every change waits its full bound
        return set()


class InterfaceWatch:
    """Subscribed to one device's interface-change event; tracks the change in flight."""

    def __init__(self, device_name: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.device_name = device_name
        self._clock = clock
        self._lock = threading.Lock()
        self._first = threading.Event()
        self._proxy: Any = None
        self._event_id: int | None = None
        self._before: set[int] = set()
        self._started: set[int] = set()  # threads that appeared during the change in flight
        self._since: float | None = None  # when the change in flight began
        self._pushed = False
        self.wake: Callable[[], None] = lambda: None

    @property
    def is_open(self) -> bool:
        return self._event_id is not None

    def open(self) -> None:
        """Subscribe (raises tango.DevFailed). Call without holding the device monitor."""
        if self._event_id is not None:
            return
        proxy = tango.DeviceProxy(self.device_name)
        event_id = proxy.subscribe_event(tango.EventType.INTERFACE_CHANGE_EVENT, self._on_event)
        if not self._first.wait(FIRST_EVENT_WAIT_S):
            log.warning("no first interface-change event from %s", self.device_name)
        self._proxy, self._event_id = proxy, event_id

    def close(self) -> None:
        proxy, event_id, self._event_id = self._proxy, self._event_id, None
        if proxy is not None and event_id is not None:
            try:
                proxy.unsubscribe_event(event_id)
            except tango.DevFailed as exc:
                log.warning("cannot unsubscribe from %s: %s", self.device_name, exc)

    def begin_change(self) -> None:
        """Call right before add/remove_attribute, in the thread that makes it."""
        with self._lock:
            self._since = self._clock()
            self._pushed = False
            self._before = _threads()

    def end_change(self) -> None:
        """Call right after it (also when it raised)."""
        with self._lock:
            self._started = _threads() - self._before

    def wait_s(self) -> float:
        """0 when a structural change may be made now; else when to ask again."""
        with self._lock:
            if self._since is None:
                return 0.0
            self._started &= _threads()
            if not self._started:
                self._since = None
                return 0.0
            left = self._since + INTERFACE_WAIT_S - self._clock()
            if left <= 0:
                self._since, self._started = None, set()
            elif self._pushed:
                return RECHECK_S
            else:
                return min(POLL_S, left)
        log.warning(
            "threads started by a change of %s still alive after %.1f s; going on",
            self.device_name,
            INTERFACE_WAIT_S,
        )
        return 0.0

    def _on_event(self, event: Any) -> None:
        if getattr(event, "err", False):
            return  # a keep-alive problem, not a pushed interface
        self._first.set()
        with self._lock:
            self._pushed = True
        self.wake()
