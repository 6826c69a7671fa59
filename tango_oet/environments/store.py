"""The on-disk cache layout: entries published by atomic rename, their metadata, and removal.

    <data_dir>/clones/<id>/oet-entry.json    metadata (repo, commit, created, last_used, ...)
    <data_dir>/clones/<id>/src/              the work tree at that commit
    <data_dir>/envs/<id>/                    the venv root, with oet-entry.json inside
    <data_dir>/locks/<kind>-<id>.lock        flock: exclusive to build/remove, shared while in use
    <data_dir>/<kind>s/.tmp-*                being built (flock-claimed by its builder)
    <data_dir>/<kind>s/.trash-*              being deleted

An entry directory exists under its final name only once it is complete, because it is built
under a temporary name and renamed into place, with its metadata written before the rename.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from tango_oet.environments.locks import DirClaim, FileLock

log = logging.getLogger(__name__)

Kind = Literal["clone", "env"]
KINDS: tuple[Kind, ...] = ("clone", "env")
META_FILE = "oet-entry.json"
FORMAT = 1
_TMP = ".tmp-"
_TRASH = ".trash-"


def iso(epoch: float) -> str:
    t = datetime.fromtimestamp(epoch, UTC)
    return t.isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True)
class Entry:
    """A published cache entry as found on disk."""

    kind: Kind
    entry_id: str
    path: Path
    meta: dict[str, Any]

    @property
    def last_used(self) -> float:
        try:
            return parse_iso(str(self.meta["last_used"]))
        except (KeyError, ValueError):
            return 0.0


class Store:
    """Reads, publishes, touches and removes cache entries under one data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir

    def create_dirs(self) -> None:
        for kind in KINDS:
            self.root(kind).mkdir(parents=True, exist_ok=True)
        self.locks_dir.mkdir(parents=True, exist_ok=True)

    @property
    def locks_dir(self) -> Path:
        return self.data_dir / "locks"

    def root(self, kind: Kind) -> Path:
        return self.data_dir / f"{kind}s"

    def path(self, kind: Kind, entry_id: str) -> Path:
        return self.root(kind) / entry_id

    def lock(self, kind: Kind, entry_id: str) -> FileLock:
        return FileLock(self.locks_dir / f"{kind}-{entry_id}.lock")

    # ---- reading ----------------------------------------------------------------------------
    def read(self, kind: Kind, entry_id: str) -> Entry | None:
        path = self.path(kind, entry_id)
        try:
            meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict):
            return None
        return Entry(kind, entry_id, path, meta)

    def read_for_build(self, kind: Kind, entry_id: str) -> Entry | None:
        """The published entry, if any; the caller holds the exclusive lock and will build.

        A directory under the final name without readable metadata was not made by `publish`
        (tampering, a foreign tool): it would block the rename forever, so it goes.
        """
        entry = self.read(kind, entry_id)
        if entry is None and self.path(kind, entry_id).exists():
            log.warning("removing unreadable cache entry %s", self.path(kind, entry_id))
            self.remove(kind, entry_id)
        return entry

    def entries(self, kind: Kind) -> list[Entry]:
        found = []
        for child in sorted(_children(self.root(kind))):
            if child.name.startswith("."):
                continue
            entry = self.read(kind, child.name)
            if entry is not None:
                found.append(entry)
        return found

    # ---- writing ----------------------------------------------------------------------------
    def new_tmp(self, kind: Kind, hint: str) -> tuple[Path, DirClaim]:
        """A fresh work directory next to the final location (same filesystem: rename is atomic)."""
        tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP}{hint}-", dir=self.root(kind)))
        tmp.chmod(0o755)  # mkdtemp's 0700 would survive the rename into the shared cache
        return tmp, DirClaim(tmp)

    def publish(self, kind: Kind, entry_id: str, tmp: Path, meta: dict[str, Any]) -> Entry:
        """Write the metadata into `tmp`, then rename it to the entry's final name.

        The caller holds the entry's exclusive lock and has checked the name is free.
        """
        now = time.time()
        full = {"format": FORMAT, "id": entry_id, "kind": kind, **meta}
        full.setdefault("created", iso(now))
        full["last_used"] = iso(now)
        _write_json(tmp / META_FILE, full)
        final = self.path(kind, entry_id)
        os.rename(tmp, final)
        return Entry(kind, entry_id, final, full)

    def touch(self, entry: Entry) -> None:
        """Record a use; the garbage collector keeps recently used entries."""
        meta = {**entry.meta, "last_used": iso(time.time())}
        try:
            _write_json(entry.path / META_FILE, meta)
        except OSError as exc:  # a read-only cache still works; only GC ordering suffers
            log.warning("cannot record use of %s: %s", entry.path, exc)

    def remove(self, kind: Kind, entry_id: str) -> bool:
        """Delete an entry; the caller holds its exclusive lock.

        Renaming first makes the removal atomic for readers: a half-deleted tree is never found
        under the entry's name.
        """
        path = self.path(kind, entry_id)
        trash = self.root(kind) / f"{_TRASH}{entry_id}-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(path, trash)
        except FileNotFoundError:
            return False
        shutil.rmtree(trash, ignore_errors=True)
        return True

    def sweep(self, min_age_s: float = 60.0) -> list[str]:
        """Remove work directories left by crashed builders and interrupted removals.

        A fresh directory may not be claimed yet (mkdtemp, then flock), hence the minimum age.
        """
        removed = []
        now = time.time()
        for kind in KINDS:
            for child in _children(self.root(kind)):
                if not child.name.startswith((_TMP, _TRASH)) or _age(child, now) < min_age_s:
                    continue
                if child.name.startswith(_TRASH) or not DirClaim.is_claimed(child):
                    shutil.rmtree(child, ignore_errors=True)
                    removed.append(f"{kind}s/{child.name}")
        for kind in KINDS:
            for lock_file in self.locks_dir.glob(f"{kind}-*.lock"):
                eid = lock_file.stem.removeprefix(f"{kind}-")
                if _age(lock_file, now) < min_age_s or self.path(kind, eid).exists():
                    continue
                # Lock files of failed attempts: unlink only while holding them (FileLock
                # re-checks the inode after locking, so a concurrent locker takes a fresh file).
                lock = FileLock(lock_file)
                if lock.try_acquire():
                    try:
                        lock.unlink()
                    finally:
                        lock.release()
        return removed


def discard(path: Path) -> None:
    """Remove a work directory that will not be published."""
    shutil.rmtree(path, ignore_errors=True)


def tree_bytes(path: Path) -> int:
    """Disk usage of a tree in bytes (apparent sizes, symlinks not followed)."""
    total = 0
    for root, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def _children(directory: Path) -> list[Path]:
    try:
        return list(directory.iterdir())
    except FileNotFoundError:  # nothing was ever cached here
        return []


def _age(path: Path, now: float) -> float:
    try:
        return now - path.lstat().st_mtime
    except OSError:
        return 0.0


def _write_json(path: Path, data: dict[str, Any]) -> None:
    # Write-then-rename so a reader (or a crash) never sees half a file.
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
