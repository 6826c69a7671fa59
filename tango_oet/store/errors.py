"""Typed errors of the durable store, each naming the store file and what went wrong."""

from __future__ import annotations

from pathlib import Path

from tango_oet.domain.errors import StoreUnavailable


class StoreError(StoreUnavailable):
    """The store cannot be opened or written; `path` is the store file, `problem` the cause.

    Its reason (`OET_StoreUnavailable`) is the domain's, so a client maps it like any other.
    """

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"store {path}: {problem}")
        self.path = path
        self.problem = problem


class StoreCorrupt(StoreError):
    """The file is not a readable store; it was moved to `moved_to` and left untouched there."""

    def __init__(self, path: Path, problem: str, moved_to: Path) -> None:
        super().__init__(path, f"{problem}; the file was moved aside to {moved_to}")
        self.moved_to = moved_to


class StoreInUse(StoreError):
    """Another open Store (in this or another process) holds the file's lock."""


class StoreClosed(StoreError):
    """The store was closed; nothing more can be recorded through it."""
