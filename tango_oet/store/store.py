"""Store: the durable record of one device in one sqlite file, written by one thread.

The engine only enqueues (`record_summary`, `append_output`, `append_user_event`,
`remove_procedure`, `record_queue`): a `SimpleQueue.put`, never the disk. Ids are reserved
durably before they are handed out (`allocate_id`), so no id is given twice, even after
`kill -9`. Reads (`load`, `interrupted`) use their own read-only connection. See docs/store.md.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from tango_oet.domain.summary import ProcedureSummary, iso
from tango_oet.store import opening, reads, recovery, schema
from tango_oet.store.errors import StoreClosed, StoreError
from tango_oet.store.options import StoreOptions
from tango_oet.store.pending import (
    EVENT,
    OUTPUT,
    QUEUE,
    REMOVE,
    STOP,
    SUMMARY,
    SYNC,
    QueueChange,
    Sync,
)
from tango_oet.store.records import (
    ID_KINDS,
    IdKind,
    InterruptedProcedure,
    QueueItemRecord,
    Recovery,
    Restored,
    StoreStats,
)
from tango_oet.store.writer import HealthListener, Writer
from tango_oet.store.writes import check_queue_change

log = logging.getLogger(__name__)

FILE_NAME = "oet.sqlite3"

T = TypeVar("T")

__all__ = ["FILE_NAME", "Store", "StoreError"]


@dataclass
class _Ids:
    next: int  # the next id to hand out
    limit: int  # ids below it are reserved durably


class Store:
    """The durable history and queue of one device (see docs/store.md)."""

    def __init__(
        self,
        path: Path,
        *,
        options: StoreOptions | None = None,
        migrations: Sequence[schema.Migration] = schema.MIGRATIONS,
        on_health: HealthListener | None = None,
    ) -> None:
        """Open (or create) the store file `path`; raise StoreError if that is impossible.

        A damaged file is moved aside (StoreCorrupt says where) and not replaced now; the next
        open then starts a new store whose ids continue after those it could salvage.
        """
        self.path = path = Path(path)
        self.options = options = options or StoreOptions()
        opening.check_sqlite(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(path, f"cannot create its directory {path.parent}: {exc}") from exc
        self._lock_file = opening.FileLock(path)
        self._lock_file.acquire(path)
        try:
            opened = opening.open_file(path, options, migrations)
            try:
                notices = list(self._first_open_notices(opened))
                ids = reads.next_ids(opened.conn)
                for kind, value in opening.read_ids_file(path).items():
                    if value > ids[kind]:
                        if not opened.fresh:
                            notices.append(
                                f"{opening.ids_file(path)} says {kind} ids below {value} were "
                                f"reserved, the database only {ids[kind]} (an older copy put "
                                f"back?): ids continue at {value}"
                            )
                        ids[kind] = value
                self._writer = Writer(path, opened.conn, options, on_health)
            except sqlite3.Error as exc:
                opened.conn.close()
                raise StoreError(path, f"cannot read its counters: {exc}") from exc
            except BaseException:
                opened.conn.close()
                raise
        except BaseException:
            self._lock_file.release()
            raise
        self._conn = opened.conn
        self.notices: tuple[str, ...] = tuple(notices)
        for notice in notices:
            log.warning("store %s: %s", path, notice)
        self._ids = {kind: _Ids(ids[kind], ids[kind]) for kind in ID_KINDS}
        self._id_lock = threading.Lock()
        self._closed = False
        self._dropped = 0
        self._writer.start()

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        options: StoreOptions | None = None,
        migrations: Sequence[schema.Migration] = schema.MIGRATIONS,
        on_health: HealthListener | None = None,
    ) -> Store:
        """`Store(path, ...)`; a directory means `<directory>/oet.sqlite3`."""
        path = Path(path)
        if path.is_dir():
            path = path / FILE_NAME
        return cls(path, options=options, migrations=migrations, on_health=on_health)

    def _first_open_notices(self, opened: opening.Opened) -> tuple[str, ...]:
        notices = []
        if opened.applied and not opened.fresh:
            notices.append(
                f"upgraded from schema version {opened.applied[0] - 1} to {opened.applied[-1]}"
            )
        if opened.fresh:
            copies = opening.corrupt_copies(self.path)
            if copies:
                notices.append(self._seed_from(opened.conn, copies))
        return tuple(notices)

    def _seed_from(self, conn: sqlite3.Connection, copies: list[Path]) -> str:
        """A new store beside damaged copies: ids continue after any the copies handed out."""
        salvaged = opening.read_ids_file(self.path)
        for copy in copies:
            for kind, value in opening.salvage_ids(copy).items():
                salvaged[kind] = max(salvaged.get(kind, 1), value)
        newest = copies[-1]
        conn.execute("BEGIN IMMEDIATE")
        for kind, value in salvaged.items():
            conn.execute("UPDATE counters SET value = MAX(value, ?) WHERE name = ?", (value, kind))
        conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('started_beside', ?)",
            (str(newest),),
        )
        conn.execute("COMMIT")
        if "procedure" in salvaged:
            return (
                f"a new store was started; the previous file was damaged and is kept as "
                f"{newest}; procedure ids continue at {salvaged['procedure']}"
            )
        return (
            f"a new store was started; the previous file was damaged and is kept as {newest}; "
            "no ids could be read from it, so ids start again at 1 and may repeat old ones"
        )

    # ---- writes: enqueue only; any thread; never block -----------------------------------
    def record_summary(self, summary: ProcedureSummary | Mapping[str, Any] | str) -> None:
        """Record a procedure's summary (object, JSON object or JSON text); the latest wins.

        A mapping must not be mutated afterwards: it is serialised later, by the writer.
        """
        self._put((SUMMARY, summary))

    def append_output(self, procedure_id: int, lines: Iterable[str]) -> None:
        """Output lines of one procedure, oldest first, without the "<id> " prefix."""
        self._put((OUTPUT, procedure_id, tuple(lines)))

    def append_user_event(self, procedure_id: int, event: Mapping[str, Any] | Any) -> None:
        """A user event as `lastEvent` shows it: {"id", "topic", "payload", "time", "seq"},
        or an object whose `to_json()` gives that (converted by the writer, and only if kept)."""
        self._put((EVENT, procedure_id, event))

    def remove_procedure(self, procedure_id: int) -> None:
        """Erase a procedure's record, output and events (not for history trimming: the
        store keeps what leaves `HistoryLength`; its retention is StoreOptions')."""
        self._put((REMOVE, procedure_id))

    def record_queue(
        self,
        *,
        state: str | None = None,
        items: Iterable[QueueItemRecord] = (),
        removed: Iterable[int] = (),
    ) -> None:
        """One atomic change of the queue: its state, items added or changed, items removed.

        Raises ValueError (before anything is enqueued) for an unknown state.
        """
        change = QueueChange(state, tuple(items), tuple(removed))
        check_queue_change(change.state, change.items)
        self._put((QUEUE, change))

    # Names the service used first.
    save = record_summary
    append_event = append_user_event

    def _put(self, op: tuple[Any, ...]) -> None:
        if self._closed:
            # The engine's last events may race with a close; losing them must not crash it.
            self._dropped += 1
            if self._dropped == 1:
                log.warning("store %s is closed: dropped %r and any later record", self.path, op)
            return
        self._writer.enqueued += 1
        self._writer.put(op)

    # ---- synchronous: the caller waits for a commit ------------------------------------------
    def allocate_id(self, kind: IdKind = "procedure", *, timeout: float = 10.0) -> int:
        """An id of `kind` never handed out before, reserved durably before it is returned."""
        if kind not in ID_KINDS:
            raise ValueError(f"id kind must be one of {ID_KINDS}, got {kind!r}")
        with self._id_lock:
            ids = self._ids[kind]
            if ids.next >= ids.limit:
                upto = ids.next + self.options.id_block
                self._sync(Sync(counter=(kind, upto, "max")), timeout, f"reserving {kind} ids")
                ids.limit = upto
            given = ids.next
            ids.next += 1
            return given

    def peek_ids(self, count: int, kind: IdKind = "procedure") -> list[int]:
        """The next `count` ids `allocate_id(kind)` hands out, in order, reserving nothing.

        The device creates the attributes of these ids ahead of Prepare. After a restart they
        are not the highest stored id + 1 (a kill -9 skips the rest of a reserved block), so
        only the store can say. No write and no wait: ids below the reserved limit are handed
        out in sequence, and a new block continues where the last one ended.
        """
        if kind not in ID_KINDS:
            raise ValueError(f"id kind must be one of {ID_KINDS}, got {kind!r}")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"count must be an integer >= 0, got {count!r}")
        with self._id_lock:
            first = self._ids[kind].next
        return list(range(first, first + count))

    def flush(self, timeout: float = 10.0) -> None:
        """Return once everything enqueued before the call is committed; else StoreError."""
        self._sync(Sync(), timeout, "flushing")

    def mark_interrupted(
        self, now: datetime, *, unaccounted: Collection[int] = (), timeout: float = 10.0
    ) -> Recovery:
        """Every procedure not final in the record becomes FAILED (UNKNOWN if in `unaccounted`)
        with error.type ServerRestarted and `[state, now]` in its history; a RUNNING queue
        item becomes FAILED, WAITING ones PENDING, the queue IDLE. Committed on return."""
        stamp = iso(now)
        frozen = frozenset(unaccounted)
        result: Recovery = self._sync(
            Sync(call=lambda conn: recovery.mark_interrupted(conn, stamp, frozen)),
            timeout,
            "recovering interrupted procedures",
        )
        return result

    def _sync(self, sync: Sync, timeout: float, what: str) -> Any:
        if self._closed:
            raise StoreClosed(self.path, f"is closed; cannot complete {what}")
        self._writer.put_urgent((SYNC, sync))
        died = self._writer.died
        if died is not None:  # set before the writer's last drain: nobody would answer
            raise StoreError(self.path, died)
        return _wait(sync.done, timeout, self.path, what)

    # ---- reads (their own read-only connection) ----------------------------------------------
    def load(self, limit: int, *, output_lines: int = 1000, finished_items: int = 100) -> Restored:
        """The last `limit` procedures (with output and event tails), the device's last
        `output_lines` output lines, the queue with its last `finished_items`, and the ids."""
        if limit < 0 or output_lines < 0 or finished_items < 0:
            raise ValueError("limit, output_lines and finished_items must be >= 0")
        self.flush()
        with self._id_lock:
            ids: dict[str, int] = {kind: self._ids[kind].next for kind in ID_KINDS}
        return self._read(
            lambda conn: reads.load(
                conn,
                limit=limit,
                output_lines=output_lines,
                finished_items=finished_items,
                next_ids=ids,
            )
        )

    def restore(self, limit: int, output_lines: int) -> Restored:
        """`load`, as the service first called it."""
        return self.load(limit, output_lines=output_lines)

    def interrupted(self) -> list[InterruptedProcedure]:
        """Procedures recorded as not final (before `mark_interrupted`), oldest first."""
        self.flush()
        return self._read(recovery.live_procedures)

    def backup(self, destination: Path) -> None:
        """A consistent copy of everything committed, taken while the store keeps writing."""
        self.flush()
        destination = Path(destination)

        def copy(conn: sqlite3.Connection) -> None:
            target = sqlite3.connect(destination)
            try:
                conn.backup(target)
            finally:
                target.close()

        self._read(copy)

    def _read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        try:
            conn = reads.connect_reader(self.path)
        except sqlite3.Error as exc:
            raise StoreError(self.path, f"cannot open for reading: {exc}") from exc
        try:
            return query(conn)
        except sqlite3.Error as exc:
            raise StoreError(self.path, f"cannot read: {exc}") from exc
        finally:
            conn.close()

    # ---- state --------------------------------------------------------------------------------
    def health(self) -> tuple[bool, str]:
        """(ok, message): not ok while writes fail, after a record was rejected, or if the
        writer thread died; the message names the file and the error."""
        return self._writer.health()

    def stats(self) -> StoreStats:
        return self._writer.stats()

    def close(self, timeout: float = 30.0) -> None:
        """Commit what is queued, give back unused reserved ids, stop the writer; idempotent."""
        with self._id_lock:
            if self._closed:
                return
            for kind, ids in self._ids.items():
                if ids.limit > ids.next:
                    # Only this store writes the file (the lock): the rest of the block is free.
                    self._writer.put((SYNC, Sync(counter=(kind, ids.next, "set"))))
                    ids.limit = ids.next
            self._closed = True
        self._writer.put_urgent((STOP,))
        if not self._writer.join(timeout):
            # Keep the lock: a writer still inside a transaction must not meet a second owner.
            log.error("store %s: the writer did not stop within %s s", self.path, timeout)
            return
        try:
            self._conn.close()
        except sqlite3.Error as exc:
            log.warning("store %s: closing: %s", self.path, exc)
        self._lock_file.release()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _wait(done: Future[T], timeout: float, path: Path, what: str) -> T:
    try:
        return done.result(timeout)
    except FutureTimeout:
        raise StoreError(path, f"timed out after {timeout} s {what}") from None
