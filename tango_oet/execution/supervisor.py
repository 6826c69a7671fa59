"""ProcessManager: the one owner of every attached worker; notices every death and stops anything.

One thread waits on every worker's pipe AND its exit sentinel (plus a wake-up pipe for
requests from other threads), so a worker that dies without a word (SIGKILL, segfault,
os._exit) is noticed as soon as the kernel reaps it. Stops are a ladder of deadlines kept by
the same thread:

    cooperative StopScript --coop_s--> SIGTERM (raised in the script) --term_s--> SIGKILL of
    the process group --kill_s--> reported LOST (UNKNOWN), still tracked and killed again

A worker leaves the table only once it has been reaped.
"""

from __future__ import annotations

import enum
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Protocol

from tango_oet.execution.launcher import ExitInfo, WorkerProcess
from tango_oet.execution.messages import StopScript, WorkerMessage

log = logging.getLogger(__name__)

REKILL_S = 1.0  # how often a process that survived SIGKILL is killed again


@dataclass(frozen=True)
class StopDeadlines:
    """Seconds allowed to each rung of the stop ladder."""

    cooperative_s: float = 0.02
    term_s: float = 2.0
    kill_s: float = 5.0

    def __post_init__(self) -> None:
        for name in ("cooperative_s", "term_s", "kill_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")


class SupervisorListener(Protocol):
    """What the supervisor reports; called on its thread, so implementations must not block."""

    def on_worker_message(self, procedure_id: int, msg: WorkerMessage) -> None: ...
    def on_worker_exit(self, procedure_id: int, info: ExitInfo) -> None: ...
    def on_worker_lost(self, procedure_id: int, pid: int) -> None: ...
    def on_supervisor_failed(self, error: BaseException) -> None: ...


class _Rung(enum.Enum):
    RUNNING = 0
    COOPERATIVE = 1
    TERM = 2
    KILL = 3
    LOST = 4


@dataclass(eq=False)
class _Watched:
    procedure_id: int
    worker: WorkerProcess
    rung: _Rung = _Rung.RUNNING
    deadline: float | None = None
    conn_open: bool = True
    stop_requested_at: float | None = None


@dataclass(frozen=True)
class _Watch:
    procedure_id: int
    worker: WorkerProcess


@dataclass(frozen=True)
class _Stop:
    procedure_id: int


@dataclass(frozen=True)
class _Shutdown:
    done: threading.Event = field(default_factory=threading.Event)


class ProcessManager:
    """Supervises attached workers; `watch`, `stop` and `shutdown` may be called from any thread."""

    def __init__(
        self,
        listener: SupervisorListener,
        deadlines: StopDeadlines | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._listener = listener
        self.deadlines = deadlines or StopDeadlines()
        self._clock = clock
        self._inbox: queue.SimpleQueue[_Watch | _Stop | _Shutdown] = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._watched: dict[int, _Watched] = {}
        self._thread = threading.Thread(target=self._run, name="oet-supervisor", daemon=True)
        self._shutting_down = False
        self._closed = False

    # ---- API (any thread) ------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def watch(self, procedure_id: int, worker: WorkerProcess) -> None:
        """Take ownership of `worker`, which now runs `procedure_id`."""
        self._post(_Watch(procedure_id, worker))

    def stop(self, procedure_id: int) -> None:
        """Start the stop ladder for the procedure's worker (no-op if already stopping/gone)."""
        self._post(_Stop(procedure_id))

    def shutdown(self, timeout: float | None = None) -> bool:
        """Stop every worker, wait until all are reaped; True if the thread finished in time."""
        if not self._thread.is_alive():
            return True
        request = _Shutdown()
        self._post(request)
        d = self.deadlines
        limit = timeout if timeout is not None else d.cooperative_s + d.term_s + d.kill_s + 5.0
        finished = request.done.wait(limit)
        self._thread.join(timeout=1.0)
        if not self._thread.is_alive():
            self._closed = True
            os.close(self._wake_r)
            os.close(self._wake_w)
        return finished

    def pids(self) -> list[int]:
        """Pids of workers not yet reaped (a snapshot; for health checks and tests)."""
        return [w.worker.pid for w in list(self._watched.values())]

    def _post(self, item: _Watch | _Stop | _Shutdown) -> None:
        if self._closed:
            raise RuntimeError("process manager is shut down")
        self._inbox.put(item)
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass  # the pipe is full of wake-ups already

    # ---- the supervisor thread ---------------------------------------------------------------
    def _run(self) -> None:
        shutdown: _Shutdown | None = None
        try:
            while True:
                shutdown = self._drain_inbox(shutdown)
                if shutdown is not None and not self._watched:
                    shutdown.done.set()
                    return
                self._wait_once()
                self._advance_ladders()
        except BaseException as exc:  # the supervisor must never die silently
            log.exception("supervisor thread failed")
            # Kill first: nobody watches these processes any more, so none may run on.
            for w in list(self._watched.values()):
                w.worker.kill_group()
            self._listener.on_supervisor_failed(exc)
            raise

    def _drain_inbox(self, shutdown: _Shutdown | None) -> _Shutdown | None:
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return shutdown
            match item:
                case _Watch(procedure_id, worker):
                    self._watched[procedure_id] = _Watched(procedure_id, worker)
                    if self._shutting_down:
                        self._begin_stop(self._watched[procedure_id])
                case _Stop(procedure_id):
                    watched = self._watched.get(procedure_id)
                    if watched is not None:
                        self._begin_stop(watched)
                case _Shutdown():
                    self._shutting_down = True
                    shutdown = item
                    for w in self._watched.values():
                        self._begin_stop(w)

    def _wait_once(self) -> None:
        waitables: list[Connection | int] = [self._wake_r]
        by_key: dict[object, _Watched] = {}
        for w in self._watched.values():
            if w.conn_open:
                waitables.append(w.worker.conn)
                by_key[w.worker.conn] = w
            waitables.append(w.worker.sentinel)
            by_key[w.worker.sentinel] = w
        timeout = self._next_timeout()
        for ready in wait(waitables, timeout):
            if ready == self._wake_r:
                os.read(self._wake_r, 4096)
                continue
            watched = by_key.get(ready)
            if watched is None or watched.procedure_id not in self._watched:
                continue
            if ready is watched.worker.conn:
                self._read_messages(watched)
            else:
                self._reap(watched)

    def _next_timeout(self) -> float | None:
        deadlines = [w.deadline for w in self._watched.values() if w.deadline is not None]
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - self._clock())

    def _read_messages(self, watched: _Watched) -> None:
        conn = watched.worker.conn
        try:
            # Drain what is there now (output comes in bursts) but bound it, so one chatty
            # worker cannot starve the others or the ladders.
            for _ in range(1000):
                if not conn.poll():
                    return
                msg = conn.recv()
                worker = watched.worker
                if msg.seq != worker.last_received_seq + 1:
                    # Sequence numbers are per pipe and gapless; a gap is a protocol bug.
                    log.error(
                        "worker %d: message seq %d after %d (%r)",
                        worker.pid,
                        msg.seq,
                        worker.last_received_seq,
                        msg,
                    )
                worker.last_received_seq = msg.seq
                self._listener.on_worker_message(watched.procedure_id, msg)
        except (EOFError, OSError):
            watched.conn_open = False

    def _reap(self, watched: _Watched) -> None:
        # The sentinel fired: first deliver whatever the worker said before dying.
        while watched.conn_open and watched.worker.conn.poll():
            self._read_messages(watched)
        info = watched.worker.reap(timeout=1.0)
        if info is None:
            return  # not reaped yet; the sentinel will fire again
        if watched.worker.placement is None:
            # Uncontained (engine tests): grandchildren left in the worker's group must not
            # outlive it. A contained worker's close() kills them by verified identity
            # instead: after the reap this pid may already name another process group.
            try:
                os.killpg(watched.worker.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        watched.worker.close()
        del self._watched[watched.procedure_id]
        self._listener.on_worker_exit(watched.procedure_id, info)

    def _begin_stop(self, watched: _Watched) -> None:
        if watched.rung is not _Rung.RUNNING:
            return
        watched.stop_requested_at = self._clock()
        watched.worker.send(StopScript)
        watched.rung = _Rung.COOPERATIVE
        watched.deadline = self._clock() + self.deadlines.cooperative_s

    def _advance_ladders(self) -> None:
        now = self._clock()
        for w in list(self._watched.values()):
            if w.deadline is None or now < w.deadline:
                continue
            d = self.deadlines
            match w.rung:
                case _Rung.COOPERATIVE:
                    w.worker.signal(signal.SIGTERM)
                    w.rung, w.deadline = _Rung.TERM, now + d.term_s
                case _Rung.TERM:
                    w.worker.kill_group()
                    w.rung, w.deadline = _Rung.KILL, now + d.kill_s
                case _Rung.KILL:
                    log.error("worker %d survived SIGKILL for %.1f s", w.worker.pid, d.kill_s)
                    w.rung, w.deadline = _Rung.LOST, now + REKILL_S
                    self._listener.on_worker_lost(w.procedure_id, w.worker.pid)
                case _Rung.LOST:
                    w.worker.kill_group()
                    w.deadline = now + REKILL_S
                case _Rung.RUNNING:
                    w.deadline = None
