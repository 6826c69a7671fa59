"""WorkerPool: keeps idle workers warm and launches workers off the engine loop.

`acquire` (called on the engine loop) hands over a warm worker at once, or queues a launch
whose result a launcher thread hands to `deliver` (which posts it into the loop). Launcher
threads catch every failure of a launch at their boundary and deliver it as the error of
that one request; a thread that dies anyway fails what it held and is reported by `health`.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from tango_oet.execution.launcher import HANDSHAKE_TIMEOUT_S, Launcher, WorkerProcess

log = logging.getLogger(__name__)

REFILL_DELAY_S = 0.05  # after a take, before launching its replacement (if others are warm)
STUCK_AFTER_S = HANDSHAKE_TIMEOUT_S + 5.0  # a launch still going after this is stuck
RETRY_MAX_S = 30.0  # longest wait before retrying a failed refill

#: Hands (ticket, worker or None, error or None) to the loop; False if the loop is gone.
Deliver = Callable[[int, WorkerProcess | None, BaseException | None], bool]


@dataclass
class _Request:
    ticket: int
    launcher: Launcher


class WorkerPool:
    """Idle warm workers of the default launcher, plus on-demand launches of any launcher."""

    def __init__(
        self,
        launcher: Launcher,
        size: int = 2,
        threads: int = 2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if size < 0:
            raise ValueError(f"pool size must be >= 0, got {size}")
        self.default_launcher = launcher
        self.size = size
        self._clock = clock
        self._deliver: Deliver | None = None
        self._idle: collections.deque[WorkerProcess] = collections.deque()
        self._requests: collections.deque[_Request] = collections.deque()
        self._discards: list[WorkerProcess] = []
        self._launching = 0  # default-launcher launches in flight meant for the idle stock
        self._cond = threading.Condition()
        self._closed = False
        self._last_take = 0.0
        self._busy_since: dict[str, float] = {}  # thread name -> start of its launch
        self._dead: dict[str, str] = {}  # thread name -> why it died
        self._failures = 0  # default-launcher launches failed in a row
        self._last_error = ""
        self._retry_at = 0.0
        self._threads = [
            threading.Thread(target=self._run, name=f"oet-pool-{i}", daemon=True)
            for i in range(max(1, threads))
        ]
        self.launched = 0

    def start(self, deliver: Deliver) -> None:
        self._deliver = deliver
        for t in self._threads:
            t.start()

    # ---- the engine loop's side ------------------------------------------------------------
    def acquire(self, ticket: int, launcher: Launcher | None = None) -> WorkerProcess | None:
        """A warm worker now, or None: a launch is queued and delivered later with `ticket`.

        Raises RuntimeError if the pool is shut down or has no launcher thread left.
        """
        launcher = launcher or self.default_launcher
        if launcher.key == self.default_launcher.key:
            while True:
                with self._cond:
                    if self._closed:
                        raise RuntimeError("worker pool is shut down")
                    worker = self._idle.popleft() if self._idle else None
                    self._last_take = self._clock()
                    self._cond.notify()
                if worker is None:
                    break
                if _usable(worker):
                    return worker
                with self._cond:
                    self._discards.append(worker)
                    self._cond.notify()
        with self._cond:
            if self._closed:
                raise RuntimeError("worker pool is shut down")
            if not any(t.is_alive() for t in self._threads):
                raise RuntimeError(f"worker pool has no launcher thread left: {self._dead}")
            self._requests.append(_Request(ticket, launcher))
            self._cond.notify()
        return None

    def cancel(self, ticket: int) -> bool:
        """Drop a queued launch that has not begun; True if it was dropped."""
        with self._cond:
            for request in self._requests:
                if request.ticket == ticket:
                    self._requests.remove(request)
                    return True
        return False

    def health(self) -> str | None:
        """Why the pool cannot serve launches (a dead or stuck thread, a broken launcher)."""
        now = self._clock()
        with self._cond:
            if self._closed:
                return None
            for name, why in self._dead.items():
                return f"worker pool thread {name} died: {why}"
            for name, since in self._busy_since.items():
                if now - since > STUCK_AFTER_S:
                    return (
                        f"worker pool thread {name} stuck starting a worker for {now - since:.0f} s"
                    )
            if self._failures >= 2:
                return (
                    f"cannot start worker processes ({self._failures} launches failed in a "
                    f"row): {self._last_error}"
                )
        return None

    def idle_pids(self) -> list[int]:
        with self._cond:
            return [w.pid for w in self._idle]

    def idle_count(self) -> int:
        with self._cond:
            return len(self._idle)

    def wait_warm(self, timeout: float) -> None:
        """Block until the idle stock is full (tests and benchmarks use it)."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._idle) >= self.size, timeout):
                raise TimeoutError(f"pool has {len(self._idle)} of {self.size} workers warm")

    # ---- launcher threads ------------------------------------------------------------------
    def _run(self) -> None:
        name = threading.current_thread().name
        held: list[_Request] = []  # the request this thread is serving, if any
        try:
            self._serve(held)
        except BaseException as exc:  # the boundary: whatever killed us, nobody may wait forever
            log.exception("worker pool thread %s died", name)
            with self._cond:
                self._dead[name] = repr(exc)
                self._busy_since.pop(name, None)
                alone = not any(t.is_alive() for t in self._threads if t.name != name)
                if alone:
                    held += list(self._requests)
                    self._requests.clear()
            for request in held:
                self._deliver_safely(request, None, RuntimeError(f"{name} died: {exc!r}"))

    def _serve(self, held: list[_Request]) -> None:
        name = threading.current_thread().name
        while True:
            held.clear()
            with self._cond:
                request = self._next_job_locked()
                if request is None and self._closed:
                    return
                discards, self._discards = self._discards, []
                if request is not None:
                    held.append(request)
                    self._busy_since[name] = self._clock()
            for broken in discards:
                _discard(broken)
            if request is None:
                continue
            worker, error = self._launch(request.launcher)
            with self._cond:
                self._busy_since.pop(name, None)
            if request.ticket:
                self._deliver_safely(request, worker, error)
                continue
            with self._cond:
                self._launching -= 1
                if worker is not None and not self._closed:
                    self._idle.append(worker)
                    self._cond.notify_all()
                    continue
            if worker is not None:
                _discard(worker)
            if error is not None:
                log.error("cannot keep a warm worker: %s", error)

    def _next_job_locked(self) -> _Request | None:
        """The next request, a stock refill (ticket 0), or None (closed, or discards to do)."""
        while True:
            if self._closed:
                return None
            if self._requests:
                return self._requests.popleft()
            if self._discards:
                return None
            now = self._clock()
            if self._needs_stock():
                # Refilling right after a take would fork (and warm up) a new worker on the
                # cores that are loading the script just handed out: wait a moment, unless
                # the stock is empty and the next Prepare would wait. After a failed
                # launch, back off instead of spinning on a broken launcher.
                wait = self._retry_at - now
                if self._idle:
                    wait = max(wait, self._last_take + REFILL_DELAY_S - now)
                if wait <= 0:
                    self._launching += 1
                    return _Request(0, self.default_launcher)
                self._cond.wait(wait)
            else:
                self._cond.wait()

    def _needs_stock(self) -> bool:
        return len(self._idle) + self._launching < self.size

    def _launch(self, launcher: Launcher) -> tuple[WorkerProcess | None, BaseException | None]:
        worker = None
        default = launcher.key == self.default_launcher.key
        try:
            worker = launcher.launch()
            self.launched += 1
            worker.handshake()
        except Exception as exc:  # any failure (EOFError of a dead forkserver too) is this launch's
            if worker is not None:
                _discard(worker)
            if default:
                with self._cond:
                    self._failures += 1
                    self._last_error = f"{type(exc).__name__}: {exc}"
                    backoff = 0.0 if self._failures == 1 else 0.5 * 2 ** (self._failures - 2)
                    self._retry_at = self._clock() + min(RETRY_MAX_S, backoff)
            return None, exc
        if default:
            with self._cond:
                self._failures, self._retry_at = 0, 0.0
        return worker, None

    def _deliver_safely(
        self, request: _Request, worker: WorkerProcess | None, error: BaseException | None
    ) -> None:
        accepted = False
        try:
            assert self._deliver is not None
            accepted = self._deliver(request.ticket, worker, error)
        except Exception:  # a broken deliverer must not kill the launcher thread
            log.exception("delivering a worker failed")
        if not accepted and worker is not None:
            _discard(worker)  # nobody will ever own it

    def shutdown(self) -> None:
        """Stop launching, end every idle worker, fail pending requests; idempotent."""
        with self._cond:
            self._closed = True
            idle, self._idle = list(self._idle), collections.deque()
            pending, self._requests = list(self._requests), collections.deque()
            discards, self._discards = self._discards, []
            self._cond.notify_all()
        for t in self._threads:
            if t.is_alive() and t is not threading.current_thread():
                t.join(timeout=HANDSHAKE_TIMEOUT_S + 5.0)
        for leftover in idle + discards:
            _discard(leftover)
        for request in pending:
            self._deliver_safely(request, None, RuntimeError("worker pool is shut down"))


def _usable(worker: WorkerProcess) -> bool:
    # A warm worker has said nothing since its handshake; readable means dead or broken.
    try:
        return worker.reap(0) is None and not worker.conn.poll()
    except (OSError, EOFError, ValueError):
        return False


def _discard(worker: WorkerProcess) -> None:
    try:
        worker.kill_group()
        worker.reap(timeout=5.0)
    finally:
        worker.close()
