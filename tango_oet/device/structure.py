"""Which per-procedure attributes should exist, which do, and the one change to make next.

cppTango 10.3 answers every `add_attribute`/`remove_attribute` by starting its device
interface-change thread (DevIntrThread), which waits 50 ms for further changes and then takes
the device monitor to push the interface-change event. A structural change made while that
thread waits for the monitor deadlocks both for cppTango's 3.2 s timeout (see docs/device.md
and benchmarks/repro_dev_intr.py). So the device makes structural changes one at a time, and
begins the next only once the previous one's interface-change event has been pushed: this
class decides *what* the next change is, the device decides *when*. Pure Python, no `tango`.

Order of work: the attributes of procedures in the history first (oldest first, `State` then
`Summary`: a Prepare waits for both, in the order Prepares came), then removal of attributes
nothing wants any more (oldest first; first of all when more than MAX_STALE are left), then the
spares (the attributes of the next procedure ids, made ahead of their Prepare so that it need
not wait).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

KINDS = ("State", "Summary")
RETRY_AFTER_S = 1.0  # a change that failed is tried again after this long
#: Attributes of procedures that left the history, beyond which removing them comes before
#: making new ones (so a busy device does not pile them up).
MAX_STALE = 4


@dataclass(frozen=True)
class Change:
    """Add or remove one attribute: `procedure<procedure_id><kind>`."""

    procedure_id: int
    kind: str
    add: bool

    @property
    def name(self) -> str:
        return f"procedure{self.procedure_id}{self.kind}"


class Structure:
    """The wanted and the existing per-procedure attributes; thread-safe.

    The publisher thread sets what is wanted and reports each change made; command threads
    wait for an attribute to exist (`wait_exists`).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._history: tuple[int, ...] = ()
        self._spares: tuple[int, ...] = ()
        self._existing: set[tuple[int, str]] = set()
        self._failed: dict[Change, tuple[float, str]] = {}  # change -> (retry at, error)
        self._released = False

    # ---- what should exist (publisher thread) ---------------------------------------------
    def want(self, history: Iterable[int], spares: Iterable[int] = ()) -> None:
        """The procedures in the history, and the next ids (spares), each with both kinds."""
        with self._changed:
            self._history = tuple(sorted(set(history)))
            self._spares = tuple(i for i in sorted(set(spares)) if i not in self._history)
            self._changed.notify_all()

    def next_change(self) -> Change | None:
        """The most urgent change still to make, or None when everything is as wanted."""
        with self._lock:
            now = self._clock()
            for change in self._plan():
                retry = self._failed.get(change)
                if retry is None or retry[0] <= now:
                    return change
            return None

    def pending(self) -> bool:
        """Whether any change remains (also one waiting for its retry)."""
        with self._lock:
            return next(iter(self._plan()), None) is not None

    def done(self, change: Change) -> None:
        """The change took effect (the attribute exists, or no longer does)."""
        key = (change.procedure_id, change.kind)
        with self._changed:
            if change.add:
                self._existing.add(key)
            else:
                self._existing.discard(key)
            self._failed.pop(change, None)
            self._changed.notify_all()

    def failed(self, change: Change, error: str) -> None:
        """The change did not take effect; it is tried again after RETRY_AFTER_S."""
        with self._changed:
            self._failed[change] = (self._clock() + RETRY_AFTER_S, error)
            self._changed.notify_all()

    def release(self) -> None:
        """Wake every waiter, now and later (the device is going away)."""
        with self._changed:
            self._released = True
            self._changed.notify_all()

    def restart(self) -> None:
        """Accept waiters again (after `release`, for a re-initialised device)."""
        with self._changed:
            self._released = False

    # ---- reads (any thread) ---------------------------------------------------------------
    def exists(self, procedure_id: int, kind: str) -> bool:
        with self._lock:
            return (procedure_id, kind) in self._existing

    def existing(self) -> list[str]:
        """Names of the per-procedure attributes that exist, in id order."""
        with self._lock:
            return [f"procedure{p}{k}" for p, k in sorted(self._existing)]

    def failures(self) -> dict[str, str]:
        """Attribute name -> last error, for changes that failed and wait for their retry."""
        with self._lock:
            return {c.name: error for c, (_, error) in self._failed.items()}

    def wait_exists(self, procedure_id: int, kind: str, timeout: float) -> bool:
        """Block until the attribute exists or is no longer wanted; False on timeout."""
        key = (procedure_id, kind)

        def settled() -> bool:
            wanted = procedure_id in self._history or procedure_id in self._spares
            return self._released or key in self._existing or not wanted

        with self._changed:
            return self._changed.wait_for(settled, timeout) and key in self._existing

    # ---- the plan (lock held) ---------------------------------------------------------------
    def _plan(self) -> Iterable[Change]:
        wanted = set(self._history) | set(self._spares)
        stale = [Change(p, k, add=False) for p, k in sorted(self._existing) if p not in wanted]
        if len(stale) > MAX_STALE:
            yield from stale  # under sustained load too, leftovers stay few
        for pid in self._history:
            for kind in KINDS:
                if (pid, kind) not in self._existing:
                    yield Change(pid, kind, add=True)
        yield from stale
        for kind in KINDS:
            for pid in self._spares:
                if (pid, kind) not in self._existing:
                    yield Change(pid, kind, add=True)
