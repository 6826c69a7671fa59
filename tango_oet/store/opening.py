"""Opening a store file: one owner at a time, a corrupt file moved aside, never written over."""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tango_oet.store import schema
from tango_oet.store.errors import StoreCorrupt, StoreError, StoreInUse
from tango_oet.store.options import StoreOptions

CORRUPT_INFIX = ".corrupt-"
_SIDECARS = ("-wal", "-shm")  # sqlite's own names: moved along, a copy stays openable


class FileLock:
    """An exclusive flock on `<store>.lock`: a second Store on the same file is refused.

    sqlite alone would let two servers write one file, and both would hand out the same ids.
    The lock is on a separate file so that readers (sqlite3 CLI, backups) are never blocked.
    """

    def __init__(self, store_path: Path) -> None:
        self.path = store_path.with_name(store_path.name + ".lock")
        self._fd: int | None = None

    def acquire(self, store_path: Path) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StoreError(store_path, f"cannot create its lock file {self.path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise StoreInUse(
                store_path, f"is in use by another open store ({holder}); one device, one owner"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise StoreError(store_path, f"cannot lock {self.path}: {exc}") from exc
        try:  # who holds it, for the message a second opener gets; not relied upon
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()}\n".encode())
        except OSError:
            pass
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


def _read_holder(fd: int) -> str:
    try:
        return os.pread(fd, 100, 0).decode(errors="replace").strip() or "holder unknown"
    except OSError:
        return "holder unknown"


@dataclass(frozen=True)
class Opened:
    conn: sqlite3.Connection
    fresh: bool  # the file did not exist: a new store
    applied: list[int]  # migrations run at this open


def check_sqlite(path: Path) -> None:
    if sqlite3.sqlite_version_info < schema.MIN_SQLITE:
        need = ".".join(map(str, schema.MIN_SQLITE))
        raise StoreError(
            path, f"needs sqlite {need} or newer (JSON operators); this is {sqlite3.sqlite_version}"
        )


def open_file(path: Path, options: StoreOptions, migrations: Sequence[schema.Migration]) -> Opened:
    """Verify (read-only), then open for writing and migrate. The caller holds the lock."""
    fresh = not path.exists()
    if not fresh:
        verify(path, migrations)
    try:
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    except sqlite3.Error as exc:
        raise StoreError(path, f"cannot open: {exc}") from exc
    try:
        # WAL: readers (queries, backups) beside the one writer; the mode is stored in the file.
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(path, f"cannot switch to WAL journal mode (got {mode!r})")
        conn.execute(f"PRAGMA synchronous = {options.synchronous}")
        conn.execute(f"PRAGMA busy_timeout = {options.busy_timeout_ms}")
        conn.execute("PRAGMA journal_size_limit = 67108864")  # the WAL shrinks back to 64 MiB
        applied = schema.migrate(conn, migrations)
    except schema.NewerSchema as exc:
        conn.close()
        raise StoreError(path, str(exc)) from exc
    except schema.MigrationFailed as exc:
        conn.close()
        raise StoreError(path, f"{exc}; the file is unchanged at its previous version") from exc
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(path, f"cannot write: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return Opened(conn, fresh, applied)


def verify(path: Path, migrations: Sequence[schema.Migration]) -> None:
    """Refuse a file that is not a store of ours; move aside one that is damaged.

    The check runs on a read-only connection: closing it never checkpoints a WAL into a file
    that turned out to be corrupt, so what is moved aside is exactly what was found.
    """
    latest = migrations[-1].version if migrations else 0
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise StoreError(path, f"cannot read: {exc}") from exc
    wal = path.with_name(path.name + "-wal")
    if size == 0 and not (wal.exists() and wal.stat().st_size > 0):
        # sqlite would take an empty file for a new database and start ids again at 1.
        raise _move_aside(path, "the file is empty (truncated?)")
    problem: str | None = None
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise StoreError(path, f"cannot open for reading: {exc}") from exc
    try:
        app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
        version = schema.user_version(conn)
        if app_id not in (0, schema.APPLICATION_ID) or (
            version == 0 and conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        ):
            raise StoreError(
                path,
                f"is a sqlite file but not an OETScheduler store (application_id {app_id:#x}, "
                f"user_version {version}); it was left as it is",
            )
        if version > latest:
            raise StoreError(
                path,
                f"schema version {version} is newer than this release understands ({latest}); "
                "run the release that wrote it, or restore a backup",
            )
        rows = conn.execute("PRAGMA quick_check(5)").fetchall()
        if [r[0] for r in rows] != ["ok"]:
            problem = "integrity check failed: " + "; ".join(str(r[0]) for r in rows)
    except sqlite3.DatabaseError as exc:
        if schema.result_code(exc) not in schema.CORRUPTION:
            raise StoreError(path, f"cannot read: {exc}") from exc
        problem = str(exc)
    finally:
        conn.close()
    if problem is not None:
        raise _move_aside(path, problem)


def _move_aside(path: Path, problem: str) -> StoreCorrupt:
    """Rename the file (and its WAL) to `<name>.corrupt-<UTC time>`; return the error to raise."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}{CORRUPT_INFIX}{stamp}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}{CORRUPT_INFIX}{stamp}-{n}")
        n += 1
    try:
        for suffix in _SIDECARS:
            side = path.with_name(path.name + suffix)
            if side.exists():
                side.rename(target.with_name(target.name + suffix))
        path.rename(target)
    except OSError as exc:
        return StoreCorrupt(path, f"{problem}; moving it aside failed ({exc})", path)
    return StoreCorrupt(path, problem, target)


def corrupt_copies(path: Path) -> list[Path]:
    """Files an earlier open moved aside, oldest first."""
    return sorted(
        p
        for p in path.parent.glob(f"{path.name}{CORRUPT_INFIX}*")
        if not p.name.endswith(_SIDECARS)
    )


def salvage_ids(copy: Path) -> dict[str, int]:
    """Best effort: the next ids a damaged copy knew of, so a fresh store never reuses one."""
    found: dict[str, int] = {}
    try:
        conn = sqlite3.connect(f"{copy.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return found
    try:
        for sql in (
            "SELECT name, value FROM counters",
            "SELECT 'procedure', MAX(id) + 1 FROM procedures",
            "SELECT 'queue_item', MAX(id) + 1 FROM queue_items",
        ):
            try:
                for name, value in conn.execute(sql).fetchall():
                    if isinstance(value, int) and name in ("procedure", "queue_item"):
                        found[name] = max(found.get(name, 1), value)
            except sqlite3.Error:
                continue
    finally:
        conn.close()
    return found


# ---- the ids file --------------------------------------------------------------------------
# `<store>.ids` repeats the counters outside the database: a file too damaged to read, or an
# old backup put back, must still not make a device hand out an id it gave before.


def ids_file(path: Path) -> Path:
    return path.with_name(path.name + ".ids")


def read_ids_file(path: Path) -> dict[str, int]:
    """The counters last written beside the store ({} when absent or unreadable)."""
    try:
        obj = json.loads(ids_file(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(obj, dict):
        return {}
    return {
        k: v
        for k, v in obj.items()
        if k in ("procedure", "queue_item") and isinstance(v, int) and not isinstance(v, bool)
    }


def write_ids_file(path: Path, values: dict[str, int]) -> None:
    """Atomically (write, fsync, rename): a crash leaves the old or the new file, never half."""
    target = ids_file(path)
    tmp = target.with_name(target.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(values, f)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(target)
