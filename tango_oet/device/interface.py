"""The device's own subscription to its interface-change event: it says when cppTango has pushed.

Two cppTango 10.3 facts make this necessary (docs/device.md, benchmarks/repro_dev_intr.py):
an `add_attribute` before any event subscription exists crashes the server (the ZMQ event
supplier is created only by the first subscription), and each structural change starts the
DevIntrThread, which must be let through the device monitor before the next change. A client
subscription from inside the server creates the supplier, and its events say when the
DevIntrThread has pushed (and so is ending): the moment the next change is safe.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import tango

log = logging.getLogger(__name__)

#: The DevIntrThread gives up on the device monitor after 3.2 s without pushing: past this, it
#: has surely ended even if no event came.
INTERFACE_WAIT_S = 4.0
FIRST_EVENT_WAIT_S = 3.0


class InterfaceWatch:
    """Subscribed to one device's interface-change event; knows whether a change is in flight."""

    def __init__(self, device_name: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.device_name = device_name
        self._clock = clock
        self._lock = threading.Lock()
        self._first = threading.Event()
        self._proxy: Any = None
        self._event_id: int | None = None
        self._since: float | None = None  # when the change in flight began
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
        # The subscription's first event must not be taken for a change's event.
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
        """A structural change is about to be made: the next one waits for its event."""
        with self._lock:
            self._since = self._clock()

    def wait_s(self) -> float:
        """0 when a structural change may be made now; else how long until it may."""
        with self._lock:
            if self._since is None:
                return 0.0
            left = self._since + INTERFACE_WAIT_S - self._clock()
            if left > 0:
                return left
            self._since = None
        log.warning(
            "no interface-change event from %s within %.1f s of a change; going on",
            self.device_name,
            INTERFACE_WAIT_S,
        )
        return 0.0

    def _on_event(self, event: Any) -> None:
        if getattr(event, "err", False):
            return  # a keep-alive problem, not a pushed interface
        self._first.set()
        with self._lock:
            self._since = None
        self.wake()
