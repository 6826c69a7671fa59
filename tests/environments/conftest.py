"""Fixtures: local repositories and wheels (session-wide), and environment managers on temp dirs."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tango_oet.domain.scripts import GitRef, GitScript
from tango_oet.environments import EnvironmentManager
from tests.environments.repos import Repos, make_repos, make_wheelhouse

MakeManager = Callable[..., EnvironmentManager]


@dataclass
class Progress:
    """A ProgressSink that records every call."""

    calls: list[tuple[str, float, float | None, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, stage: str, done: float, total: float | None, message: str) -> None:
        with self._lock:
            self.calls.append((stage, done, total, message))

    @property
    def stages(self) -> list[str]:
        seen: list[str] = []
        for stage, *_ in self.calls:
            if not seen or seen[-1] != stage:
                seen.append(stage)
        return seen


def script(repo_url: str, path: str = "scripts/hello.py", **ref: str) -> GitScript:
    return GitScript(path=path, git=GitRef(repo=repo_url, **ref), create_env=True)


@pytest.fixture(scope="session")
def repos(tmp_path_factory: pytest.TempPathFactory) -> Repos:
    return make_repos(tmp_path_factory.mktemp("repos"))


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_wheelhouse(tmp_path_factory.mktemp("wheels") / "wheelhouse")


def _manager(data_dir: Path, wheelhouse: Path, **kwargs: Any) -> EnvironmentManager:
    kwargs.setdefault("find_links", [str(wheelhouse)])
    kwargs.setdefault("no_index", True)  # nothing may touch the network
    return EnvironmentManager(data_dir, **kwargs)


@pytest.fixture
def make_manager(tmp_path: Path, wheelhouse: Path) -> Iterator[MakeManager]:
    """Managers on this test's own data directory (several share it, like restarted servers)."""
    made: list[EnvironmentManager] = []

    def make(**kwargs: Any) -> EnvironmentManager:
        manager = _manager(kwargs.pop("data_dir", tmp_path / "data"), wheelhouse, **kwargs)
        made.append(manager)
        return manager

    yield make
    for manager in made:
        manager.close()


@pytest.fixture(scope="session")
def shared_manager(
    tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path
) -> Iterator[EnvironmentManager]:
    """One manager for tests that only read what it built; builds are shared across them."""
    manager = _manager(tmp_path_factory.mktemp("shared") / "data", wheelhouse)
    yield manager
    manager.close()
