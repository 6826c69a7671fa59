"""The store's one writer thread: gathers enqueued changes, commits them in batches, retries.

The engine's side is a `SimpleQueue.put` of a tuple and nothing else: no lock it could wait on,
no disk, no JSON. Batches are committed `commit_interval` after their first change (or at once
when someone waits in `flush`, `allocate_id` or recovery). A failing write keeps the coalesced
changes and retries with a growing delay; `health()` says so, and the thread never ends except
through `stop` - if it dies of a bug anyway, health says that and every waiter is told.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tango_oet.store.errors import StoreError
from tango_oet.store.opening import ids_file, write_ids_file
from tango_oet.store.options import StoreOptions
from tango_oet.store.pending import STOP, SYNC, Pending, Sync
from tango_oet.store.records import StoreStats
from tango_oet.store.schema import is_environmental
from tango_oet.store.writes import BatchWriter

log = logging.getLogger(__name__)

HealthListener = Callable[[bool, str], None]


class Writer:
    def __init__(
        self,
        path: Path,
        conn: sqlite3.Connection,
        options: StoreOptions,
        on_health: HealthListener | None = None,
    ) -> None:
        self.path = path
        self._conn = conn
        self._options = options
        self._on_health = on_health
        self._queue: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._urgent = threading.Event()
        self._pending = Pending(options)
        self._batch = BatchWriter(conn, options)
        self._failure: str | None = None  # the last write failed: why
        self._rejected: str | None = None  # a record could not be stored (sticky)
        self._died: str | None = None
        self._reported: tuple[bool, str] = (True, "")
        self._stopped = threading.Event()
        self._stats = {"commits": 0, "summaries": 0, "lines": 0, "failures": 0, "rejected": 0}
        self.enqueued = 0
        self._thread = threading.Thread(target=self._run, name="oet-store", daemon=True)

    def start(self) -> None:
        self._thread.start()

    # ---- any thread ----------------------------------------------------------------------
    def put(self, op: tuple[Any, ...]) -> None:
        self._queue.put(op)

    def put_urgent(self, op: tuple[Any, ...]) -> None:
        self._queue.put(op)
        self._urgent.set()

    @property
    def died(self) -> str | None:
        return self._died

    def health(self) -> tuple[bool, str]:
        if self._died is not None:
            return False, f"store {self.path}: {self._died}"
        if self._failure is not None:
            return False, self._failure
        if self._rejected is not None:
            return False, self._rejected
        if self._thread.ident is not None and not self._thread.is_alive():
            if not self._stopped.is_set():
                return False, f"store {self.path}: the writer thread is not running"
            return True, f"store {self.path} closed"
        return True, f"store {self.path} healthy"

    def stats(self) -> StoreStats:
        s = self._stats
        return StoreStats(
            enqueued=self.enqueued,
            commits=s["commits"],
            written_summaries=s["summaries"],
            written_lines=s["lines"],
            failures=s["failures"],
            rejected=s["rejected"],
        )

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # ---- the thread ----------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # a thread boundary: say so, and release every waiter
            self._died = (
                f"the writer thread died ({type(exc).__name__}: {exc}); nothing more is written"
            )
            log.critical("store %s: %s", self.path, self._died, exc_info=True)
            error = StoreError(self.path, self._died)
            for sync in self._pending.take_syncs():
                _fail(sync, error)
            while True:  # later waiters too, so nobody waits out a timeout for nothing
                try:
                    op = self._queue.get_nowait()
                except queue.Empty:
                    break
                if op[0] == SYNC:
                    _fail(op[1], error)
            self._report()
        finally:
            self._stopped.set()

    def _loop(self) -> None:
        pending = self._pending
        delay = self._options.retry_interval
        while True:
            if pending.empty():
                self._absorb(self._queue.get())
            self._urgent.clear()
            self._drain()
            if not pending.urgent and pending.changes < self._options.max_batch:
                wait = delay if self._failure is not None else self._options.commit_interval
                if wait > 0:
                    self._urgent.wait(wait)  # gathers a batch; flush & co. cut it short
                self._drain()
            ok = self._commit()
            delay = (
                self._options.retry_interval
                if ok
                else min(max(delay, 0.001) * 2, self._options.max_retry_interval)
            )
            if pending.stop:
                if not ok:
                    log.error(
                        "store %s: closing with %d changes that could not be written: %s",
                        self.path,
                        pending.changes,
                        self._failure,
                    )
                return

    def _absorb(self, op: tuple[Any, ...]) -> None:
        self._pending.absorb(op)

    def _drain(self) -> None:
        get = self._queue.get_nowait
        absorb = self._pending.absorb
        while True:
            try:
                op = get()
            except queue.Empty:
                return
            absorb(op)
            if op[0] == STOP:
                return

    def _commit(self) -> bool:
        """One transaction with everything pending; True when it is durable."""
        pending = self._pending
        syncs = pending.take_syncs()
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                done = self._batch.write(pending)
                results = [self._apply_sync(sync) for sync in syncs]
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                self._batch.rolled_back()
                raise
            finally:
                self._note_rejected(self._batch.take_rejected())
        except Exception as exc:  # sqlite's or a bug's: the data stays pending, waiters told
            self._stats["failures"] += 1
            message = f"store {self.path}: cannot write: {type(exc).__name__}: {exc}"
            if self._failure != message:
                log.error("%s (changes kept in memory, retried)", message, exc_info=True)
            self._failure = message
            error = StoreError(self.path, f"cannot write: {exc}")
            for sync in syncs:
                _fail(sync, error)
            self._report()
            return False
        self._batch.committed(pending, done)
        if any(sync.counter is not None for sync in syncs):
            self._write_ids_file()
        pending.clear_data()
        s = self._stats
        s["commits"] += 1
        s["summaries"] += done.summaries
        s["lines"] += done.lines
        if self._failure is not None:
            log.warning("store %s is writable again", self.path)
            self._failure = None
        for sync, (ok, value) in zip(syncs, results, strict=True):
            if ok:
                sync.done.set_result(value)
            else:
                _fail(sync, value)
        self._report()
        return True

    def _write_ids_file(self) -> None:
        """The committed counters, repeated outside the database (opening.ids_file)."""
        try:
            values = {
                str(k): int(v) for k, v in self._conn.execute("SELECT name, value FROM counters")
            }
            write_ids_file(self.path, values)
        except (OSError, sqlite3.Error) as exc:  # the database holds them; this is a second copy
            log.warning("store %s: cannot write %s: %s", self.path, ids_file(self.path), exc)

    def _note_rejected(self, rejected: list[str]) -> None:
        if rejected:
            self._stats["rejected"] += len(rejected)
            for why in rejected:
                log.error("store %s: rejected %s", self.path, why)
            self._rejected = f"store {self.path}: a record could not be stored: {rejected[0]}"

    def _apply_sync(self, sync: Sync) -> tuple[bool, Any]:
        """Inside the transaction. A failing `call` is undone alone (savepoint), and reported."""
        conn = self._conn
        if sync.counter is not None:
            kind, value, mode = sync.counter
            update = "MAX(value, excluded.value)" if mode == "max" else "excluded.value"
            conn.execute(
                "INSERT INTO counters (name, value) VALUES (?, ?) "
                f"ON CONFLICT (name) DO UPDATE SET value = {update}",
                (kind, value),
            )
        if sync.call is None:
            return True, None
        conn.execute("SAVEPOINT store_call")
        try:
            value = sync.call(conn)
        except sqlite3.Error as exc:
            if is_environmental(exc):
                raise  # the disk's fault: the whole batch fails and is retried
            conn.execute("ROLLBACK TO store_call")
            conn.execute("RELEASE store_call")
            return False, StoreError(self.path, f"{type(exc).__name__}: {exc}")
        except Exception as exc:
            conn.execute("ROLLBACK TO store_call")
            conn.execute("RELEASE store_call")
            log.exception("store %s: a synchronous operation failed", self.path)
            return False, exc
        conn.execute("RELEASE store_call")
        return True, value

    def _report(self) -> None:
        now = self.health()
        if now == self._reported:
            return
        self._reported = now
        if self._on_health is not None:
            try:
                self._on_health(*now)
            except Exception:
                log.exception("store %s: the health listener raised", self.path)


def _fail(sync: Sync, error: BaseException) -> None:
    if not sync.done.done():
        sync.done.set_exception(error)
