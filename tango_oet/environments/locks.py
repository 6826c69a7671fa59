"""Mutual exclusion for cache entries: flock across processes, single-flight jobs in-process."""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from tango_oet.domain.errors import EnvironmentError_, OETError
from tango_oet.environments.model import ProgressSink
from tango_oet.environments.procs import Cancelled

log = logging.getLogger(__name__)

_POLL_MIN_S = 0.002
_POLL_MAX_S = 0.05
CLEANUP_WAIT_S = 30.0

T = TypeVar("T")


class FileLock:
    """An flock(2) on a lock file, shared or exclusive, whose wait a cancel event can interrupt.

    flock locks belong to an open file description, so two FileLock objects on the same path
    exclude each other even inside one process: that is what lets a shared "in use" lease in one
    thread keep the garbage collector of another thread (or process) away.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(
        self,
        *,
        shared: bool = False,
        cancel: threading.Event | None = None,
        on_wait: Callable[[], None] | None = None,
    ) -> None:
        """Block until the lock is ours; raise Cancelled if `cancel` is set meanwhile."""
        if not self._acquire(shared=shared, blocking=True, cancel=cancel, on_wait=on_wait):
            raise Cancelled()

    def try_acquire(self, *, shared: bool = False) -> bool:
        return self._acquire(shared=shared, blocking=False, cancel=None, on_wait=None)

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the last descriptor drops the flock

    def unlink(self) -> None:
        """Remove the lock file while holding it exclusively (after the entry itself is gone)."""
        assert self._fd is not None, "unlink needs the lock held"
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def _acquire(
        self,
        *,
        shared: bool,
        blocking: bool,
        cancel: threading.Event | None,
        on_wait: Callable[[], None] | None,
    ) -> bool:
        assert self._fd is None, f"{self.path} is already held by this FileLock"
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        self.path.parent.mkdir(parents=True, exist_ok=True)
        waited = False
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                interval = _POLL_MIN_S
                while True:
                    try:
                        fcntl.flock(fd, mode | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if not blocking:
                            os.close(fd)
                            return False
                        if not waited and on_wait is not None:
                            on_wait()
                        waited = True
                        # Poll, not a blocking flock: cancel must stay prompt.
                        if cancel is not None and cancel.wait(interval):
                            os.close(fd)
                            return False
                        if cancel is None:
                            time.sleep(interval)
                        interval = min(interval * 2, _POLL_MAX_S)
                if _same_file(fd, self.path):
                    self._fd = fd
                    return True
            except BaseException:
                os.close(fd)
                raise
            # The holder before us deleted the file (garbage collection): our lock guards an
            # orphaned inode that nobody else will ever open, so lock the new file instead.
            os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        current = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (current.st_dev, current.st_ino)


class DirClaim:
    """An exclusive flock on a work-in-progress directory: proof that its builder is still alive.

    Garbage collection removes temporary directories nobody claims, i.e. left by a crash.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def release(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    @staticmethod
    def is_claimed(path: Path) -> bool:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False


class _Flight(Generic[T]):
    def __init__(self, key: str) -> None:
        self.key = key
        self.sinks: list[ProgressSink] = []
        self.last: tuple[str, float, float | None, str] | None = None
        self.waiters = 0
        self.cancel = threading.Event()
        self.done = threading.Event()
        self.result: T | None = None
        self.error: BaseException | None = None


class SingleFlight(Generic[T]):
    """One job per key at a time, run in its own thread; concurrent callers share its outcome.

    A caller that cancels only leaves; the job is cancelled when its last caller has left, and
    that caller waits for the job's cleanup (killed children, removed temporary files) so that
    "cancelled" means "nothing of it is left". A failed job's error reaches every caller that was
    waiting; the next call starts afresh.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._flights: dict[str, _Flight[T]] = {}
        self._threads: list[threading.Thread] = []

    def run(
        self,
        key: str,
        work: Callable[[ProgressSink, threading.Event], T],
        progress: ProgressSink,
        cancel: threading.Event,
    ) -> T:
        with self._lock:
            flight = self._flights.get(key)
            if flight is None:
                flight = _Flight(key)
                self._flights[key] = flight
                thread = threading.Thread(
                    target=self._run_job,
                    args=(flight, work),
                    name=f"oet-{self._name}-{key}",
                    daemon=True,
                )
                self._threads = [t for t in self._threads if t.is_alive()]
                self._threads.append(thread)
                thread.start()
            flight.waiters += 1
            flight.sinks.append(progress)
            last = flight.last
        if last is not None:
            _safe_call(progress, *last)  # a late joiner learns where the job is
        while not flight.done.wait(_POLL_MAX_S):
            if cancel.is_set():
                self._leave(flight, progress)
                raise Cancelled()
        with self._lock:
            _remove_first(flight.sinks, progress)
        if flight.error is not None:
            raise _copy_error(flight.error)
        return flight.result  # type: ignore[return-value]  # set whenever error is None

    def cancel_all(self, timeout: float = CLEANUP_WAIT_S) -> None:
        """Cancel every job (at shutdown) and wait for their cleanup."""
        with self._lock:
            flights = list(self._flights.values())
            self._flights.clear()
            threads = list(self._threads)
        for flight in flights:
            flight.cancel.set()
        for thread in threads:
            thread.join(timeout)

    def _leave(self, flight: _Flight[T], progress: ProgressSink) -> None:
        with self._lock:
            _remove_first(flight.sinks, progress)
            flight.waiters -= 1
            last_one = flight.waiters == 0
            if last_one:
                flight.cancel.set()
                # A caller arriving now must start a fresh job, not join one being torn down.
                if self._flights.get(flight.key) is flight:
                    del self._flights[flight.key]
        if last_one:
            flight.done.wait(CLEANUP_WAIT_S)

    def _run_job(
        self, flight: _Flight[T], work: Callable[[ProgressSink, threading.Event], T]
    ) -> None:
        def broadcast(stage: str, done: float, total: float | None, message: str) -> None:
            with self._lock:
                flight.last = (stage, done, total, message)
                sinks = list(flight.sinks)
            for sink in sinks:
                _safe_call(sink, stage, done, total, message)

        try:
            flight.result = work(broadcast, flight.cancel)
        except OETError as exc:
            flight.error = exc
        except Exception as exc:  # a thread boundary: every failure must reach the waiters
            log.exception("%s job %s failed", self._name, flight.key)
            flight.error = EnvironmentError_(f"{type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                if self._flights.get(flight.key) is flight:
                    del self._flights[flight.key]
            flight.done.set()


def _safe_call(sink: ProgressSink, stage: str, done: float, total: float | None, msg: str) -> None:
    try:
        sink(stage, done, total, msg)
    except Exception:  # a broken progress sink must not break a build others wait for
        log.exception("progress sink failed")


def _remove_first(sinks: list[ProgressSink], sink: ProgressSink) -> None:
    for i, s in enumerate(sinks):
        if s is sink:
            del sinks[i]
            return


def _copy_error(error: BaseException) -> BaseException:
    # Each waiter raises its own instance: one exception object raised in many threads would
    # share (and keep rewriting) a single __traceback__.
    if isinstance(error, OETError):
        try:
            return type(error)(error.message)
        except TypeError:
            return EnvironmentError_(error.message)
    return EnvironmentError_(str(error))
