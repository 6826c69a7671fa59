"""The values handed to callers: resolved sources, environments, progress sinks, entry ids."""

from __future__ import annotations

import hashlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

STAGES = ("resolving", "cloning", "creating", "installing", "ready")


@dataclass(frozen=True)
class ResolvedSource:
    """A git script pinned to a full commit, checked out in the clone cache."""

    repo: str  # as requested
    commit: str  # full 40-hex sha
    checkout: Path  # clone directory at that commit (read-only use)
    script_path: Path  # absolute, symlinks resolved, validated to lie inside `checkout`

    @property
    def entry_id(self) -> str:
        return entry_id(self.repo, self.commit)


@dataclass(frozen=True)
class Environment:
    """A virtual environment built for one (repo, commit), ready to run a worker."""

    env_id: str
    path: Path  # venv root
    python: Path  # <venv>/bin/python: the interpreter the worker must run under
    sys_path_runtime: Path  # put on the worker's PYTHONPATH so `tango_oet.scripting` imports


class ProgressSink(Protocol):
    """Receives progress of a resolve or build; called from the manager's threads."""

    def __call__(self, stage: str, done: float, total: float | None, message: str) -> None: ...


def no_progress(stage: str, done: float, total: float | None, message: str) -> None:
    """A ProgressSink that ignores everything."""


_SLUG_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def repo_slug(repo: str) -> str:
    """A short, filesystem-safe, human-readable name for a repository URL."""
    tail = repo.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    tail = tail.removesuffix(".git")
    slug = _SLUG_UNSAFE.sub("-", tail).strip("-.")[:40]
    return slug or "repo"


def entry_id(repo: str, commit: str) -> str:
    """The cache key of (repo, commit) as a directory name, e.g. `scripts-1a2b3c4d-9fa6bbb734ab`.

    The URL hash keeps two repositories with the same last path component (forks share commit
    shas) apart; the slug only makes the name readable.
    """
    url_hash = hashlib.sha256(repo.encode()).hexdigest()[:8]
    return f"{repo_slug(repo)}-{url_hash}-{commit[:12]}"


def env_id(repo: str, commit: str) -> str:
    """The id of the environment of (repo, commit) built from this interpreter's Python version.

    Environments link to the interpreter they were made from and hold packages built for its
    version; the tag keeps a server upgraded to another Python from reusing them.
    """
    return f"{entry_id(repo, commit)}-py{sys.version_info.major}{sys.version_info.minor}"
