"""The supervisor thread: the engine's one loop, owner of every worker pipe, process and deadline.

One thread waits (epoll) on every attached worker's pipe AND its exit sentinel, plus a wake-up
pipe for items other threads `post`: commands from Tango request threads, workers delivered
by the pool, progress and results of git threads. It hands each item and each worker report
to its Handler (the service's procedure logic), which therefore runs on this thread only and
needs no lock. Pipes are non-blocking (`wire.WorkerPipe`): a worker that does not read cannot
stall the loop. Stops are a ladder of deadlines kept by the same thread:

    cooperative StopScript --coop_s--> SIGTERM (raised in the script) --term_s--> SIGKILL of
    the worker and all it started --kill_s--> reported LOST (UNKNOWN), still killed again

A worker leaves the table only once it has been reaped; releasing it (containment's
leftover kill, closing its descriptors) happens on a helper thread, off the loop.
If the loop itself dies, it kills every worker first, then tells the Handler, so no
procedure is left looking alive (see `_die`).
"""

from __future__ import annotations

import collections
import concurrent.futures
import enum
import logging
import os
import selectors
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from tango_oet.execution import wire
from tango_oet.execution.launcher import ExitInfo, WorkerProcess
from tango_oet.execution.messages import ParentMessage, StopScript, WorkerMessage

log = logging.getLogger(__name__)

REKILL_S = 1.0  # how often a process that survived SIGKILL is killed again
HEARTBEAT_S = 0.5  # the loop comes round at least this often, even with nothing to do
STUCK_AFTER_S = 5.0  # a loop that has not come round for this long is reported stuck
REAP_RETRY_S = 0.05  # a fired sentinel whose process is not reapable yet: look again after
DEATH_REAP_S = 1.0  # a dying loop waits this long for the workers it killed


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


class Handler(Protocol):
    """The procedure logic; every method runs on the supervisor thread and must not block."""

    def handle(self, item: object) -> None: ...
    def reject(self, item: object) -> None: ...
    def on_worker_message(self, procedure_id: int, msg: WorkerMessage) -> None: ...
    def on_worker_exit(self, procedure_id: int, info: ExitInfo) -> None: ...
    def on_worker_lost(self, procedure_id: int, pid: int) -> None: ...
    def on_worker_broken(self, procedure_id: int, problem: str) -> None: ...
    def on_call_timeout(self, procedure_id: int) -> None: ...
    def after_batch(self) -> None: ...
    def on_loop_exit(self) -> None: ...
    def on_loop_failed(self, reason: str, fates: dict[int, ExitInfo | None]) -> None: ...


class _Rung(enum.Enum):
    RUNNING = 0
    COOPERATIVE = 1
    TERM = 2
    KILL = 3
    LOST = 4


_CONN, _SENTINEL = "conn", "sentinel"


@dataclass(eq=False)
class _Watched:
    procedure_id: int | None  # None: a worker nobody owns, being killed
    worker: WorkerProcess
    pipe: wire.WorkerPipe
    rung: _Rung = _Rung.RUNNING
    deadline: float | None = None
    sent_seq: int = 0
    conn_open: bool = True
    sentinel_open: bool = True
    writing: bool = False
    reap_at: float | None = None
    call_deadline: float | None = None  # a Start's `timeout`, on the loop's clock


class _Exit:
    """Posted by `request_exit`: stop everything, end once every worker is reaped."""


class Supervisor:
    """The loop. `post`, `health`, `pids`, `request_exit` from any thread; the rest on the loop."""

    def __init__(
        self,
        deadlines: StopDeadlines | None = None,
        clock: Callable[[], float] = time.monotonic,
        stuck_after_s: float = STUCK_AFTER_S,
    ) -> None:
        self.deadlines = deadlines or StopDeadlines()
        self._clock = clock
        self._stuck_after_s = stuck_after_s
        self._handler: Handler | None = None
        self._inbox: collections.deque[object] = collections.deque()
        self._inbox_lock = threading.Lock()
        self._accepting = True
        self._woken = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._all: dict[WorkerProcess, _Watched] = {}
        self._by_procedure: dict[int, _Watched] = {}
        self._workers: tuple[WorkerProcess, ...] = ()  # snapshot for other threads
        self._exiting = False
        self._exited = False
        self._thread = threading.Thread(target=self._run, name="oet-supervisor", daemon=True)
        self._release = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="oet-release")
        self.beat = clock()
        self.doing = "starting"
        self.failure: str | None = None

    # ---- any thread ------------------------------------------------------------------------
    def start(self, handler: Handler) -> None:
        self._handler = handler
        self.beat = self._clock()
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def on_loop_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def post(self, item: object) -> bool:
        """Queue `item` for the Handler; False if the loop no longer takes items."""
        with self._inbox_lock:
            if not self._accepting:
                return False
            self._inbox.append(item)
            wake, self._woken = not self._woken, True
        if wake:
            try:
                os.write(self._wake_w, b"x")
            except BlockingIOError:
                pass  # the pipe is full of wake-ups already
        return True

    def health(self) -> str | None:
        """Why the loop is not doing its job (dead, stuck), or None."""
        if self.failure is not None:
            return self.failure
        if self._exited or self._handler is None:
            return None
        if not self._thread.is_alive():
            return "the supervisor thread is not running"
        age = self._clock() - self.beat
        if age > self._stuck_after_s:
            return f"the supervisor thread has not come round for {age:.1f} s (busy: {self.doing})"
        return None

    def pids(self) -> list[int]:
        """Pids of workers not yet reaped (a snapshot; for health checks and tests)."""
        return [w.pid for w in self._workers]

    def request_exit(self, timeout: float | None = None) -> bool:
        """Stop every worker and end the loop once all are reaped; True if it ended in time."""
        if not self._thread.is_alive():
            return True
        self.post(_Exit())
        d = self.deadlines
        limit = timeout if timeout is not None else d.cooperative_s + d.term_s + d.kill_s + 10.0
        self._thread.join(limit)
        return not self._thread.is_alive()

    def emergency_kill(self) -> None:
        """From another thread, when the loop is stuck: SIGKILL every worker it holds."""
        for worker in self._workers:
            try:
                worker.kill_group()
            except Exception:
                log.exception("killing worker %d failed", worker.pid)

    # ---- the loop's own API (Handler code only) --------------------------------------------
    def watch(self, procedure_id: int | None, worker: WorkerProcess) -> None:
        """Take ownership of `worker` (now running `procedure_id`, or nobody's: see discard)."""
        w = _Watched(procedure_id, worker, wire.WorkerPipe(worker.conn))
        self._all[worker] = w
        if procedure_id is not None:
            self._by_procedure[procedure_id] = w
        self._selector.register(w.pipe.fileno(), selectors.EVENT_READ, (w, _CONN))
        self._selector.register(worker.sentinel, selectors.EVENT_READ, (w, _SENTINEL))
        self._workers = tuple(self._all)
        if self._exiting:
            self._begin_stop(w)

    def assign(self, procedure_id: int, worker: WorkerProcess) -> None:
        """Record which procedure the worker runs (containment writes a file: off the loop)."""
        self._offload(worker.assign, procedure_id)

    def discard(self, worker: WorkerProcess) -> None:
        """A worker nobody needs (its procedure ended while it started): kill it, reap it."""
        self.watch(None, worker)
        self._kill(self._all[worker])

    def send(self, owner: int, make: Callable[..., ParentMessage], /, **fields: Any) -> bool:
        """Queue `make(seq=<next>, **fields)` for the worker; False if it has no worker.

        Raises what encoding raises (e.g. RecursionError): the caller fails its procedure.
        """
        w = self._by_procedure.get(owner)
        if w is None or not w.conn_open:
            return False
        frame = wire.encode(make(seq=w.sent_seq + 1, **fields))
        w.sent_seq += 1
        w.pipe.send(frame)
        self._update_interest(w)
        return True

    def stop(self, procedure_id: int) -> None:
        """Start the stop ladder for the procedure's worker (no-op if already stopping/gone)."""
        w = self._by_procedure.get(procedure_id)
        if w is not None:
            self._begin_stop(w)

    def set_call_deadline(self, procedure_id: int, seconds: float | None) -> None:
        """Report the running call as timed out after `seconds` (None: no deadline)."""
        w = self._by_procedure.get(procedure_id)
        if w is not None:
            w.call_deadline = None if seconds is None else self._clock() + seconds

    def kill(self, procedure_id: int) -> None:
        """SIGKILL the procedure's worker now (it failed in a way no script can tidy up)."""
        w = self._by_procedure.get(procedure_id)
        if w is not None:
            self._kill(w)

    # ---- the loop --------------------------------------------------------------------------
    def _run(self) -> None:
        assert self._handler is not None
        try:
            while True:
                self.beat = self._clock()
                self._drain_inbox()
                if self._exiting and not self._all:
                    break
                self._poll_once()
                self._advance_ladders()
                self.doing = "delivering events"
                self._handler.after_batch()
        except BaseException as exc:  # the supervisor must never die silently
            self._die(exc)
            return
        self.doing = "exiting"
        self._release.shutdown(wait=True)
        self._handler.on_loop_exit()
        self._handler.after_batch()
        self._close_inbox()
        self._exited = True

    def _drain_inbox(self) -> None:
        assert self._handler is not None
        with self._inbox_lock:
            items, self._inbox = self._inbox, collections.deque()
            self._woken = False
        for item in items:
            if isinstance(item, _Exit):
                self._exiting = True
                for w in list(self._all.values()):
                    self._begin_stop(w)
                continue
            self.doing = f"handling {type(item).__name__}"
            try:
                self._handler.handle(item)
            except Exception:  # the Handler answers its own errors; this is the last net
                log.exception("handling %r failed", item)

    def _close_inbox(self) -> None:
        assert self._handler is not None
        with self._inbox_lock:
            self._accepting = False
            items, self._inbox = self._inbox, collections.deque()
        for item in items:
            if not isinstance(item, _Exit):
                try:
                    self._handler.reject(item)
                except Exception:
                    log.exception("rejecting %r failed", item)

    def _poll_once(self) -> None:
        timeout = HEARTBEAT_S
        deadline = self._next_deadline()
        if deadline is not None:
            timeout = min(timeout, max(0.0, deadline - self._clock()))
        self.doing = "waiting"
        for key, mask in self._selector.select(timeout):
            if key.data is None:
                self._drain_wake_pipe()
                continue
            data: tuple[_Watched, str] = key.data
            w, kind = data
            if self._all.get(w.worker) is not w:
                continue  # removed earlier in this batch
            if kind is _SENTINEL:
                self._on_sentinel(w)
                continue
            if mask & selectors.EVENT_WRITE:
                w.pipe.flush()
                self._update_interest(w)
            if mask & selectors.EVENT_READ:
                self._read(w)

    def _drain_wake_pipe(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _next_deadline(self) -> float | None:
        times = [
            t
            for w in self._all.values()
            for t in (w.deadline, w.reap_at, w.call_deadline)
            if t is not None
        ]
        return min(times) if times else None

    def _read(self, w: _Watched) -> None:
        assert self._handler is not None
        self.doing = f"reading worker {w.worker.pid}"
        try:
            messages = w.pipe.receive()
        except wire.ProtocolError as exc:
            log.error("worker %d: %s", w.worker.pid, exc)
            self._close_conn(w)
            if w.procedure_id is not None:
                self._report_broken(w, f"worker {w.worker.pid} broke the protocol: {exc}")
            self._kill(w)
            return
        for msg in messages:
            seq = getattr(msg, "seq", None)
            if seq != w.worker.last_received_seq + 1:
                # Sequence numbers are per pipe and gapless; a gap is a protocol bug.
                log.error("worker %d: message seq %r after %d (%r)",
                          w.worker.pid, seq, w.worker.last_received_seq, msg)  # fmt: skip
            if isinstance(seq, int):
                w.worker.last_received_seq = seq
            if w.procedure_id is None:
                continue
            try:
                self._handler.on_worker_message(w.procedure_id, msg)  # type: ignore[arg-type]
            except Exception as exc:  # one bad report fails its procedure, not the loop
                log.exception("procedure %d: handling %r failed", w.procedure_id, msg)
                self._report_broken(w, f"the engine failed on {type(msg).__name__}: {exc!r}")
                self._kill(w)
        if w.pipe.eof:
            self._close_conn(w)

    def _report_broken(self, w: _Watched, problem: str) -> None:
        assert self._handler is not None and w.procedure_id is not None
        try:
            self._handler.on_worker_broken(w.procedure_id, problem)
        except Exception:
            log.exception("procedure %d: reporting %r failed", w.procedure_id, problem)

    def _close_conn(self, w: _Watched) -> None:
        if w.conn_open:
            w.conn_open = False
            self._selector.unregister(w.pipe.fileno())

    def _update_interest(self, w: _Watched) -> None:
        if not w.conn_open:
            return
        want = w.pipe.wants_write
        if want != w.writing:
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if want else 0)
            self._selector.modify(w.pipe.fileno(), events, (w, _CONN))
            w.writing = want

    def _on_sentinel(self, w: _Watched) -> None:
        # The sentinel fired: first deliver whatever the worker said before dying. (Its
        # socket may stay open, held by a process it started: read what is there, no more.)
        while w.conn_open:
            self._read(w)
            if w.pipe.drained:
                break
        info = w.worker.reap(0)
        if info is None:
            # Not reapable yet (the forkserver has not reported): look again shortly,
            # without spinning on a descriptor that stays readable.
            if w.sentinel_open:
                w.sentinel_open = False
                self._selector.unregister(w.worker.sentinel)
            w.reap_at = self._clock() + REAP_RETRY_S
            return
        self._forget(w)
        if w.worker.placement is None:
            # Uncontained (engine tests): grandchildren left in the worker's group must not
            # outlive it. A contained worker's close() kills them by verified identity
            # instead: after the reap this pid may already name another process group.
            try:
                os.killpg(w.worker.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self._offload(w.worker.close)
        if w.procedure_id is not None:
            assert self._handler is not None
            self._handler.on_worker_exit(w.procedure_id, info)

    def _forget(self, w: _Watched) -> None:
        self._close_conn(w)
        if w.sentinel_open:
            w.sentinel_open = False
            self._selector.unregister(w.worker.sentinel)
        del self._all[w.worker]
        if w.procedure_id is not None and self._by_procedure.get(w.procedure_id) is w:
            del self._by_procedure[w.procedure_id]
        self._workers = tuple(self._all)

    def _offload(self, fn: Callable[..., object], *args: Any) -> None:
        try:
            self._release.submit(fn, *args)
        except RuntimeError:  # shut down (the loop is ending): do it here
            fn(*args)

    def _begin_stop(self, w: _Watched) -> None:
        if w.rung is not _Rung.RUNNING:
            return
        if w.conn_open:
            w.sent_seq += 1
            w.pipe.send(wire.encode(StopScript(seq=w.sent_seq)))
            self._update_interest(w)
        w.rung = _Rung.COOPERATIVE
        w.deadline = self._clock() + self.deadlines.cooperative_s

    def _kill(self, w: _Watched) -> None:
        if w.rung in (_Rung.KILL, _Rung.LOST):
            return
        w.worker.kill_group()
        w.rung, w.deadline = _Rung.KILL, self._clock() + self.deadlines.kill_s

    def _advance_ladders(self) -> None:
        now = self._clock()
        d = self.deadlines
        for w in list(self._all.values()):
            if w.call_deadline is not None and now >= w.call_deadline:
                w.call_deadline = None
                if w.procedure_id is not None and w.rung is _Rung.RUNNING:
                    assert self._handler is not None
                    self._handler.on_call_timeout(w.procedure_id)
            if w.reap_at is not None and now >= w.reap_at:
                w.reap_at = None
                self._on_sentinel(w)
                if self._all.get(w.worker) is not w:
                    continue
            if w.deadline is None or now < w.deadline:
                continue
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
                    if w.procedure_id is not None:
                        assert self._handler is not None
                        self._handler.on_worker_lost(w.procedure_id, w.worker.pid)
                case _Rung.LOST:
                    w.worker.kill_group()
                    w.deadline = now + REKILL_S
                case _Rung.RUNNING:
                    w.deadline = None

    # ---- death -------------------------------------------------------------------------------
    def _die(self, exc: BaseException) -> None:
        """The loop failed: kill every worker, tell the truth about each, keep killing."""
        log.critical("supervisor thread failed while %s", self.doing, exc_info=exc)
        self.failure = f"the supervisor thread died while {self.doing}: {exc!r}"
        watched = list(self._all.values())
        # Kill first: nobody watches these processes any more, so none may run on.
        for w in watched:
            try:
                w.worker.kill_group()
            except Exception:
                log.exception("killing worker %d failed", w.worker.pid)
        fates: dict[int, ExitInfo | None] = {}
        limit = time.monotonic() + DEATH_REAP_S
        for w in watched:
            try:
                info = w.worker.reap(max(0.0, limit - time.monotonic()))
            except Exception:
                info = None
            if w.procedure_id is not None:
                fates[w.procedure_id] = info
        handler = self._handler
        assert handler is not None
        reason = self.failure
        try:
            handler.on_loop_failed(reason, fates)
            handler.after_batch()
        except Exception:
            log.exception("reporting the supervisor's failure failed")
        self._close_inbox()
        # This thread is done supervising; it stays only to make sure every worker ends.
        alive = [w.worker for w in watched if w.worker.exit_info is None]
        for worker in (w.worker for w in watched if w.worker.exit_info is not None):
            self._close_quietly(worker)
        while alive:
            threading.Event().wait(REKILL_S)
            for worker in alive:
                worker.kill_group()
            for worker in [x for x in alive if x.reap(0) is not None]:
                alive.remove(worker)
                self._close_quietly(worker)
        self._workers = ()
        self._release.shutdown(wait=True)

    @staticmethod
    def _close_quietly(worker: WorkerProcess) -> None:
        try:
            worker.close()
        except Exception:
            log.exception("closing worker %d failed", worker.pid)
