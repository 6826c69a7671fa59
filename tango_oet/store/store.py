"""Store: one sqlite file per device, written by one thread so the engine never waits on disk.

The engine only enqueues (`save`, `append_output`, `append_event`); the writer thread takes
everything queued, keeps the latest summary of each procedure, and commits it in one
transaction. Procedure ids are reserved in blocks, durably, before they are handed out, so no
id is given twice even after `kill -9`. A write that fails is kept and retried with the next
batch, and `health()` reports it (the device goes FAULT naming the file and the error).
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tango_oet.domain.summary import ProcedureSummary, iso, utc_now
from tango_oet.store import schema

log = logging.getLogger(__name__)

ID_BLOCK = 64  # ids reserved per durable write: one write per 64 Prepares
OUTPUT_LINES_KEPT = 1000  # per procedure
EVENTS_KEPT = 1000  # per procedure
MAX_BATCH = 10000


class StoreError(Exception):
    """The store cannot be opened or written; the message names the file and the error."""


@dataclass(frozen=True)
class _Output:
    procedure_id: int
    lines: tuple[str, ...]


@dataclass(frozen=True)
class _Event:
    procedure_id: int
    event: dict[str, Any]


@dataclass(frozen=True)
class _Reserve:
    counter: str
    upto: int
    done: Future[None]


@dataclass(frozen=True)
class _Settle:
    """At a clean close: the unused rest of the reserved block is given back (no gap)."""

    counter: str
    value: int


@dataclass(frozen=True)
class _Flush:
    done: Future[None]


class _Stop:
    pass


_Item = ProcedureSummary | _Output | _Event | _Reserve | _Settle | _Flush | _Stop


@dataclass(frozen=True)
class Restored:
    """What a new server starts from."""

    summaries: list[dict[str, Any]]  # the last `limit` procedures' Summary JSON, oldest first
    output: list[str]  # the last output lines, "<id> <line>", oldest first
    next_id: int  # the first procedure id never handed out


class Store:
    """The durable history of one device (see docs/store.md)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._connect()
            (check,) = conn.execute("PRAGMA quick_check").fetchone()
            if check != "ok":
                raise sqlite3.DatabaseError(f"integrity check failed: {check}")
            schema.migrate(conn)
            self._next_id = self._first_free(conn, "procedure")
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the store {path}: {exc}") from exc
        self._limit = self._next_id  # nothing reserved yet in this run
        self._conn = conn
        self._id_lock = threading.Lock()
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._failure: str | None = None
        self._retry: list[_Item] = []
        self._thread = threading.Thread(target=self._run, name="oet-store", daemon=True)
        self._thread.start()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode: a commit survives a crash of the server (kill -9); only a
        # power cut can lose the last commits, never corrupt the file.
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA busy_timeout = 5000")
        return conn

    @staticmethod
    def _first_free(conn: sqlite3.Connection, counter: str) -> int:
        row = conn.execute("SELECT value FROM counters WHERE name = ?", (counter,)).fetchone()
        (highest,) = conn.execute("SELECT COALESCE(MAX(id), 0) FROM procedures").fetchone()
        return max(int(row[0]) if row else 1, int(highest) + 1)

    # ---- reads (before the engine starts) ---------------------------------------------------
    def restore(self, limit: int, output_lines: int) -> Restored:
        """The last `limit` procedures and `output_lines` output lines, as they were stored."""
        reader = sqlite3.connect(self.path)
        try:
            rows = reader.execute(
                "SELECT summary FROM procedures ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
            lines = reader.execute(
                "SELECT procedure_id, line FROM output ORDER BY seq DESC LIMIT ?",
                (output_lines,),
            ).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the store {self.path}: {exc}") from exc
        finally:
            reader.close()
        return Restored(
            summaries=[json.loads(text) for (text,) in reversed(rows)],
            output=[f"{pid} {line}" for pid, line in reversed(lines)],
            next_id=self._next_id,
        )

    # ---- ids ---------------------------------------------------------------------------------
    def allocate_id(self) -> int:
        """A procedure id never handed out before, durably so before it is returned."""
        with self._id_lock:
            if self._next_id >= self._limit:
                upto = self._next_id + ID_BLOCK
                done: Future[None] = Future()
                self._queue.put(_Reserve("procedure", upto, done))
                try:
                    done.result(timeout=10.0)
                except Exception as exc:
                    raise StoreError(f"cannot reserve ids in {self.path}: {exc}") from exc
                self._limit = upto
            allocated = self._next_id
            self._next_id += 1
            return allocated

    def peek_ids(self, count: int) -> list[int]:
        """The ids `allocate_id` hands out next, in order, reserving nothing."""
        with self._id_lock:
            return list(range(self._next_id, self._next_id + count))

    # ---- writes (any thread; never block) ----------------------------------------------------
    def save(self, summary: ProcedureSummary) -> None:
        self._queue.put(summary)

    def append_output(self, procedure_id: int, lines: Iterable[str]) -> None:
        self._queue.put(_Output(procedure_id, tuple(lines)))

    def append_event(self, procedure_id: int, event: dict[str, Any]) -> None:
        self._queue.put(_Event(procedure_id, event))

    def flush(self, timeout: float = 10.0) -> None:
        """Return once everything enqueued before the call is committed; raise StoreError if not."""
        done: Future[None] = Future()
        self._queue.put(_Flush(done))
        try:
            done.result(timeout)
        except Exception as exc:
            raise StoreError(f"cannot write the store {self.path}: {exc}") from exc

    def health(self) -> tuple[bool, str]:
        if self._failure is not None:
            return False, self._failure
        if not self._thread.is_alive():
            return False, f"the store writer of {self.path} is not running"
        return True, "store healthy"

    def close(self) -> None:
        """Commit what is queued, then stop the writer and close the file; idempotent."""
        if self._thread.is_alive():
            with self._id_lock:
                self._queue.put(_Settle("procedure", self._next_id))
                self._limit = self._next_id  # any later allocation reserves again
            self._queue.put(_Stop())
            self._thread.join(timeout=30.0)
        try:
            self._conn.close()
        except sqlite3.Error:
            pass

    # ---- the writer thread ---------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            batch = [*self._retry, self._queue.get()]
            self._retry = []
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(isinstance(item, _Stop) for item in batch)
            self._write(batch)
            if stop:
                return

    def _write(self, batch: list[_Item]) -> None:
        summaries: dict[int, ProcedureSummary] = {}
        outputs: list[_Output] = []
        events: list[_Event] = []
        reserves: list[_Reserve] = []
        settles: list[_Settle] = []
        flushes: list[_Flush] = []
        for item in batch:
            match item:
                case ProcedureSummary():
                    summaries[item.id] = item  # the latest of each procedure is enough
                case _Output():
                    outputs.append(item)
                case _Event():
                    events.append(item)
                case _Reserve():
                    reserves.append(item)
                case _Settle():
                    settles.append(item)
                case _Flush():
                    flushes.append(item)
        try:
            self._commit(summaries, outputs, events, reserves, settles)
        except Exception as exc:  # a thread boundary: keep the data, report, retry later
            message = f"cannot write the store {self.path}: {exc}"
            if self._failure is None:
                log.error("%s", message)
            self._failure = message
            # Summaries are retried (the latest one per procedure, bounded by the history);
            # output and events are only a tail, so under a failing disk they are dropped.
            self._retry = [*summaries.values()]
            for done in self._waiters(reserves, flushes):
                done.set_exception(StoreError(message))
            return
        if self._failure is not None:
            log.warning("the store %s is writable again", self.path)
        self._failure = None
        for done in self._waiters(reserves, flushes):
            done.set_result(None)

    @staticmethod
    def _waiters(reserves: list[_Reserve], flushes: list[_Flush]) -> list[Future[None]]:
        return [r.done for r in reserves] + [f.done for f in flushes]

    def _commit(
        self,
        summaries: dict[int, ProcedureSummary],
        outputs: list[_Output],
        events: list[_Event],
        reserves: list[_Reserve],
        settles: list[_Settle],
    ) -> None:
        now = iso(utc_now())
        conn = self._conn
        conn.execute("BEGIN")
        try:
            for r in reserves:
                conn.execute(
                    "INSERT INTO counters (name, value) VALUES (?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET value = MAX(value, excluded.value)",
                    (r.counter, r.upto),
                )
            for settle in settles:
                conn.execute(
                    "INSERT INTO counters (name, value) VALUES (?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    (settle.counter, settle.value),
                )
            conn.executemany(
                "INSERT INTO procedures (id, state, script, created, updated, summary) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                "state = excluded.state, updated = excluded.updated, summary = excluded.summary",
                [
                    (
                        s.id,
                        s.state.name,
                        s.script.uri,
                        iso(s.history[0][1]) if s.history else now,
                        now,
                        s.to_json_text(),
                    )
                    for s in summaries.values()
                ],
            )
            conn.executemany(
                "INSERT INTO output (procedure_id, line) VALUES (?, ?)",
                [(o.procedure_id, line) for o in outputs for line in o.lines],
            )
            conn.executemany(
                "INSERT INTO user_events (procedure_id, event) VALUES (?, ?)",
                [(e.procedure_id, json.dumps(e.event, default=repr)) for e in events],
            )
            for table, kept, ids in (
                ("output", OUTPUT_LINES_KEPT, {o.procedure_id for o in outputs}),
                ("user_events", EVENTS_KEPT, {e.procedure_id for e in events}),
            ):
                for pid in ids:
                    conn.execute(
                        f"DELETE FROM {table} WHERE procedure_id = ? AND seq <= "
                        f"(SELECT seq FROM {table} WHERE procedure_id = ? "
                        "ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                        (pid, pid, kept),
                    )
            conn.execute("COMMIT")
        except BaseException:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise
