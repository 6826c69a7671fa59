"""Garbage collection: keep the N most recently used, drop old ones, never one in use."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from tango_oet.environments import EnvironmentManager, ResolvedSource, no_progress
from tango_oet.environments.locks import DirClaim
from tango_oet.environments.store import META_FILE
from tests.environments.conftest import MakeManager, script
from tests.environments.repos import Repos

NEVER = threading.Event()


def at(manager: EnvironmentManager, repos: Repos, label: str) -> ResolvedSource:
    commit = repos.scripts.commits[label]
    return manager.resolve(script(repos.scripts.url, commit=commit), no_progress, NEVER)


def clone_ids(manager: EnvironmentManager) -> set[str]:
    return {row["id"] for row in manager.usage() if row["kind"] == "clone"}


def age(entry_dir: Path, days: float) -> None:
    """Pretend the entry was last used `days` ago (as a server running for days would see it)."""
    meta_file = entry_dir / META_FILE
    meta = json.loads(meta_file.read_text())
    then = time.gmtime(time.time() - days * 86400)
    meta["last_used"] = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", then)
    meta_file.write_text(json.dumps(meta))


def test_keep_most_recently_used(repos: Repos, make_manager: MakeManager) -> None:
    manager = make_manager(auto_gc=False)
    sources = [at(manager, repos, label) for label in ("first", "second", "feature")]
    recent = at(manager, repos, "first")  # a use makes it the most recent again
    for source in (*sources, recent):
        manager.release(source)
    removed = manager.collect_garbage(keep=1)
    assert sorted(removed) == sorted(f"clones/{s.entry_id}" for s in sources[1:])
    assert clone_ids(manager) == {recent.entry_id}
    assert recent.script_path.is_file()


def test_entries_in_use_are_never_removed(repos: Repos, make_manager: MakeManager) -> None:
    manager = make_manager(auto_gc=False)
    held = at(manager, repos, "first")
    other = at(manager, repos, "second")
    manager.release(other)
    assert manager.collect_garbage(keep=0) == [f"clones/{other.entry_id}"]
    assert clone_ids(manager) == {held.entry_id}
    assert [row["in_use"] for row in manager.usage()] == [True]
    manager.release(held)
    assert manager.collect_garbage(keep=0) == [f"clones/{held.entry_id}"]
    # Gone from disk, so the next resolve fetches it again.
    again = at(manager, repos, "first")
    assert again.script_path.is_file()
    assert manager.stats["clones"] == 3


def test_another_process_lease_protects_an_entry(repos: Repos, make_manager: MakeManager) -> None:
    server_a = make_manager(auto_gc=False)
    server_b = make_manager(auto_gc=False)  # same data directory, as another process would be
    held = at(server_b, repos, "first")
    assert server_a.usage()[0]["in_use"] is True
    assert server_a.collect_garbage(keep=0) == []
    server_b.release(held)
    assert server_a.collect_garbage(keep=0) == [f"clones/{held.entry_id}"]


def test_max_age(repos: Repos, make_manager: MakeManager) -> None:
    manager = make_manager(auto_gc=False)
    old, fresh = at(manager, repos, "first"), at(manager, repos, "second")
    manager.release(old)
    manager.release(fresh)
    age(old.checkout.parent, days=10)
    assert manager.collect_garbage(keep=100, max_age_days=30) == []
    assert manager.collect_garbage(keep=100, max_age_days=7) == [f"clones/{old.entry_id}"]
    assert clone_ids(manager) == {fresh.entry_id}


def test_constructor_policy_applies_after_each_publish(
    repos: Repos, make_manager: MakeManager
) -> None:
    manager = make_manager(keep=1)
    first = at(manager, repos, "first")
    manager.release(first)
    second = at(manager, repos, "second")  # publishing it collects `first`
    assert clone_ids(manager) == {second.entry_id}
    assert not first.checkout.exists()


def test_sweep_leftovers_of_crashed_builders(make_manager: MakeManager) -> None:
    manager = make_manager(auto_gc=False)
    envs = manager.data_dir / "envs"
    assert manager.collect_garbage() == [], "nothing cached yet, not even the directories"
    stale, alive = envs / ".tmp-crashed-x", envs / ".tmp-building-y"
    stale.mkdir(parents=True)
    alive.mkdir()
    lock = manager.data_dir / "locks" / "env-never-built.lock"
    lock.parent.mkdir()
    lock.touch()
    long_ago = time.time() - 3600
    for path in (stale, alive, lock):
        os.utime(path, (long_ago, long_ago))
    claim = DirClaim(alive)  # its builder is still at work
    try:
        removed = manager.collect_garbage()
    finally:
        claim.release()
    assert removed == ["envs/.tmp-crashed-x"]
    assert alive.exists() and not stale.exists()
    assert not lock.exists()


@pytest.mark.slow
def test_environments_are_collected_too(repos: Repos, make_manager: MakeManager) -> None:
    manager = make_manager(auto_gc=False)
    source = manager.resolve(script(repos.reqs.url, "scripts/obs.py"), no_progress, NEVER)
    env = manager.ensure_environment(source, no_progress, NEVER)
    manager.release(source)
    assert manager.collect_garbage(keep=0) == [f"clones/{source.entry_id}"]
    assert env.python.exists(), "an environment in use survives"
    manager.release(env)
    assert manager.collect_garbage(keep=0) == [f"envs/{env.env_id}"]
    assert not env.path.exists()
    assert manager.usage() == []
