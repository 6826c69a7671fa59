"""WorkerPool: keeps idle workers warm and launches workers off the caller's thread.

Prepare must never wait for a process start, so `acquire` either hands over a warm worker at
once or queues the request for a launcher thread; both end in the same callback.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from tango_oet.execution.launcher import Launcher, WorkerProcess, WorkerStartError

log = logging.getLogger(__name__)

REFILL_DELAY_S = 0.05  # after a take, before launching its replacement (if others are warm)

#: Receives the handshaken worker, or the exception that prevented it.
WorkerCallback = Callable[[WorkerProcess | None, BaseException | None], None]


@dataclass
class _Request:
    launcher: Launcher
    callback: WorkerCallback


class WorkerPool:
    """Idle warm workers of the default launcher, plus on-demand launches of any launcher."""

    def __init__(self, launcher: Launcher, size: int = 2, threads: int = 2) -> None:
        if size < 0:
            raise ValueError(f"pool size must be >= 0, got {size}")
        self.default_launcher = launcher
        self.size = size
        self._idle: collections.deque[WorkerProcess] = collections.deque()
        self._requests: collections.deque[_Request] = collections.deque()
        self._launching = 0  # default-launcher launches in flight meant for the idle stock
        self._cond = threading.Condition()
        self._closed = False
        self._last_take = 0.0
        self._threads = [
            threading.Thread(target=self._run, name=f"oet-pool-{i}", daemon=True)
            for i in range(max(1, threads))
        ]
        self.launched = 0

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def acquire(self, callback: WorkerCallback, launcher: Launcher | None = None) -> None:
        """Deliver a ready worker to `callback`: at once if one is warm, else from a launch."""
        launcher = launcher or self.default_launcher
        worker = None
        with self._cond:
            if self._closed:
                raise RuntimeError("worker pool is shut down")
            if launcher.key == self.default_launcher.key:
                worker = self._take_idle_locked()
                self._last_take = time.monotonic()
            if worker is None:
                self._requests.append(_Request(launcher, callback))
            self._cond.notify()
        if worker is not None:
            callback(worker, None)

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

    def _take_idle_locked(self) -> WorkerProcess | None:
        while self._idle:
            worker = self._idle.popleft()
            # A warm worker has said nothing since its handshake; readable means dead or broken.
            if worker.reap(0) is None and not worker.conn.poll():
                return worker
            self._discard(worker)
        return None

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or self._requests or self._needs_stock())
                if self._closed:
                    return
                if self._requests:
                    request: _Request | None = self._requests.popleft()
                else:
                    # Refilling right after a take would fork (and warm up) a new worker on
                    # the same cores that are loading the script just handed out: wait a
                    # moment, unless the stock is empty and the next Prepare would wait.
                    delay = self._last_take + REFILL_DELAY_S - time.monotonic()
                    if self._idle and delay > 0:
                        self._cond.wait(delay)
                        continue
                    request = None
                    self._launching += 1
            launcher = request.launcher if request else self.default_launcher
            worker, error = self._launch(launcher)
            if request is not None:
                self._deliver(request, worker, error)
                continue
            with self._cond:
                self._launching -= 1
                if worker is not None and not self._closed:
                    self._idle.append(worker)
                    self._cond.notify_all()
                    continue
            if worker is not None:
                self._discard(worker)
            if error is not None:
                log.error("cannot keep a warm worker: %s", error)
                with self._cond:
                    # Do not spin on a broken launcher: wait for a real request to retry.
                    self._cond.wait_for(lambda: self._closed or bool(self._requests))

    def _needs_stock(self) -> bool:
        return len(self._idle) + self._launching < self.size

    def _launch(self, launcher: Launcher) -> tuple[WorkerProcess | None, BaseException | None]:
        worker = None
        try:
            worker = launcher.launch()
            self.launched += 1
            worker.handshake()
            return worker, None
        except (WorkerStartError, OSError, RuntimeError, ValueError) as exc:
            if worker is not None:
                self._discard(worker)
            return None, exc

    def _deliver(
        self, request: _Request, worker: WorkerProcess | None, error: BaseException | None
    ) -> None:
        try:
            request.callback(worker, error)
        except Exception:  # a broken callback must not kill the launcher thread
            log.exception("worker callback failed")
            if worker is not None:
                self._discard(worker)

    @staticmethod
    def _discard(worker: WorkerProcess) -> None:
        worker.kill_group()
        worker.reap(timeout=5.0)
        worker.close()

    def shutdown(self) -> None:
        """Stop launching, end every idle worker, fail pending requests; idempotent."""
        with self._cond:
            self._closed = True
            idle, self._idle = list(self._idle), collections.deque()
            pending, self._requests = list(self._requests), collections.deque()
            self._cond.notify_all()
        for t in self._threads:
            if t.is_alive() and t is not threading.current_thread():
                t.join(timeout=HANDSHAKE_JOIN_S)
        for worker in idle:
            self._discard(worker)
        for request in pending:
            self._deliver(request, None, RuntimeError("worker pool is shut down"))


HANDSHAKE_JOIN_S = 35.0
