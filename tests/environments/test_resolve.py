"""Resolving git scripts: refs to full commits, the clone cache, path safety, locks (real git)."""

from __future__ import annotations

import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tango_oet.domain.errors import EnvironmentError_, ScriptNotAllowed
from tango_oet.environments import EnvironmentManager, ResolvedSource, no_progress
from tango_oet.environments.locks import FileLock
from tango_oet.environments.model import entry_id
from tests.environments.conftest import MakeManager, Progress, script
from tests.environments.repos import Repos, git

NEVER = threading.Event()


def resolve(
    manager: EnvironmentManager, url: str, path: str = "scripts/hello.py", **ref: str
) -> ResolvedSource:
    return manager.resolve(script(url, path, **ref), no_progress, NEVER)


def lock_of(manager: EnvironmentManager, url: str, commit: str) -> FileLock:
    return FileLock(manager.data_dir / "locks" / f"clone-{entry_id(url, commit)}.lock")


def version_of(source: ResolvedSource) -> str:
    return source.script_path.read_text().splitlines()[0]


@pytest.mark.parametrize(
    ("ref", "label", "version"),
    [
        ({}, "second", "VERSION = 2"),  # default branch `trunk`, not master
        ({"branch": "trunk"}, "second", "VERSION = 2"),
        ({"branch": "feature"}, "feature", "VERSION = 3"),
        ({"tag": "v1"}, "first", "VERSION = 1"),  # annotated: the commit, not the tag object
        ({"tag": "light"}, "second", "VERSION = 2"),
    ],
)
def test_refs_resolve_to_full_commits(
    repos: Repos, make_manager: MakeManager, ref: dict[str, str], label: str, version: str
) -> None:
    source = resolve(make_manager(), repos.scripts.url, **ref)
    assert source.commit == repos.scripts.commits[label]
    assert source.repo == repos.scripts.url
    assert version_of(source) == version
    assert source.script_path == (source.checkout / "scripts/hello.py").resolve()
    head = git("rev-parse", "HEAD", cwd=source.checkout)
    assert head == source.commit


def test_full_and_short_commits(repos: Repos, make_manager: MakeManager) -> None:
    manager = make_manager()
    first = repos.scripts.commits["first"]
    full = resolve(manager, repos.scripts.url, commit=first.upper())
    assert full.commit == first
    assert version_of(full) == "VERSION = 1"
    feature = repos.scripts.commits["feature"]
    short = resolve(manager, repos.scripts.url, commit=feature[:8])
    assert short.commit == feature
    assert version_of(short) == "VERSION = 3"


def test_default_branch_progress(repos: Repos, make_manager: MakeManager) -> None:
    progress = Progress()
    make_manager().resolve(script(repos.scripts.url), progress, NEVER)
    assert progress.stages == ["resolving", "cloning"]
    assert repos.scripts.commits["second"] in progress.calls[1][3]


def test_cached_commit_needs_no_remote(
    repos: Repos, make_manager: MakeManager, tmp_path: Path
) -> None:
    # A private copy of the repository we can take away after the first resolve.
    bare = tmp_path / "copy.git"
    shutil.copytree(repos.scripts.bare, bare)
    manager = make_manager()
    first = resolve(manager, bare.as_uri(), commit=repos.scripts.commits["first"])
    shutil.rmtree(bare)
    again = resolve(manager, bare.as_uri(), commit=repos.scripts.commits["first"])
    short = resolve(manager, bare.as_uri(), commit=repos.scripts.commits["first"][:10])
    assert again.checkout == first.checkout == short.checkout
    assert manager.stats["clones"] == 1
    assert manager.stats["clone_reuses"] == 2


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ({"branch": "nope"}, "unknown branch 'nope'"),
        ({"tag": "v9"}, "unknown tag 'v9'"),
        ({"commit": "0123456789abcdef0123456789abcdef01234567"}, "not our ref"),  # git's words
        ({"commit": "abcdef0"}, "unknown commit 'abcdef0'"),
    ],
)
def test_unknown_refs_fail_with_gits_message(
    repos: Repos, make_manager: MakeManager, ref: dict[str, str], expected: str
) -> None:
    manager = make_manager()
    with pytest.raises(EnvironmentError_, match=expected) as info:
        resolve(manager, repos.scripts.url, **ref)
    assert info.value.reason == "OET_EnvironmentFailed"
    assert repos.scripts.url in info.value.message
    assert not list((manager.data_dir / "clones").iterdir()), "a failed clone must leave nothing"


def test_unreachable_repository(make_manager: MakeManager, tmp_path: Path) -> None:
    url = (tmp_path / "missing.git").as_uri()
    with pytest.raises(EnvironmentError_, match="does not appear to be a git repository"):
        resolve(make_manager(), url)


def test_missing_script(repos: Repos, make_manager: MakeManager) -> None:
    manager = make_manager()
    with pytest.raises(EnvironmentError_, match=r"'scripts/nope.py' not found .* at commit"):
        resolve(manager, repos.scripts.url, "scripts/nope.py")
    assert manager.usage()[0]["in_use"] is False  # the lease taken for the clone was returned


@pytest.mark.parametrize(
    "path", ["../outside.py", "scripts/../../x.py", ".git/hooks/pre-commit.py"]
)
def test_path_escaping_by_name_is_refused_before_any_git(
    repos: Repos, make_manager: MakeManager, path: str
) -> None:
    manager = make_manager()
    with pytest.raises(ScriptNotAllowed):
        resolve(manager, repos.scripts.url, path)
    assert manager.stats == {}


@pytest.mark.parametrize("path", ["scripts/escape.py", "linkdir/secret.py"])
def test_symlink_escape_is_refused(repos: Repos, make_manager: MakeManager, path: str) -> None:
    with pytest.raises(ScriptNotAllowed, match="outside the repository"):
        resolve(make_manager(), repos.scripts.url, path)


def test_symlink_inside_is_resolved(repos: Repos, make_manager: MakeManager) -> None:
    source = resolve(make_manager(), repos.scripts.url, "scripts/alias.py")
    assert source.script_path == (source.checkout / "scripts/hello.py").resolve()


def test_allow_list(repos: Repos, make_manager: MakeManager) -> None:
    manager = make_manager(git_allow=["https://github.com/ska-telescope/*"])
    manager.check_allowed("https://github.com/ska-telescope/ska-oso-scripting.git")
    with pytest.raises(ScriptNotAllowed, match="not allowed"):
        manager.check_allowed(repos.scripts.url)
    with pytest.raises(ScriptNotAllowed):
        resolve(manager, repos.scripts.url)
    assert manager.stats == {}


def test_concurrent_resolves_clone_once(repos: Repos, make_manager: MakeManager) -> None:
    manager = make_manager()
    barrier = threading.Barrier(8)

    def one(_: int) -> ResolvedSource:
        barrier.wait()
        return resolve(manager, repos.scripts.url, commit=repos.scripts.commits["first"])

    with ThreadPoolExecutor(8) as pool:
        sources = list(pool.map(one, range(8)))
    assert {s.checkout for s in sources} == {sources[0].checkout}
    assert manager.stats["clones"] == 1
    clones = manager.data_dir / "clones"
    assert [p.name for p in clones.iterdir()] == [sources[0].checkout.parent.name]


def test_waits_for_the_lock_another_process_holds(repos: Repos, make_manager: MakeManager) -> None:
    manager = make_manager()
    commit = repos.scripts.commits["first"]
    # flock locks belong to open file descriptions: this one excludes the manager like another
    # server process sharing the data directory would.
    other = lock_of(manager, repos.scripts.url, commit)
    other.acquire()
    waiting = threading.Event()

    def progress(stage: str, done: float, total: float | None, message: str) -> None:
        if "waiting for another process" in message:
            waiting.set()

    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(
            manager.resolve, script(repos.scripts.url, commit=commit), progress, NEVER
        )
        assert waiting.wait(30)
        assert not future.done()
        other.release()
        assert future.result(30).commit == commit


def test_cancel_while_waiting_for_a_lock(repos: Repos, make_manager: MakeManager) -> None:
    manager = make_manager()
    commit = repos.scripts.commits["second"]
    other = lock_of(manager, repos.scripts.url, commit)
    other.acquire()
    cancel = threading.Event()

    def progress(stage: str, done: float, total: float | None, message: str) -> None:
        if "waiting" in message:
            cancel.set()

    try:
        with pytest.raises(EnvironmentError_, match=r"^cancelled$"):
            manager.resolve(script(repos.scripts.url, commit=commit), progress, cancel)
    finally:
        other.release()
    assert not list((manager.data_dir / "clones").iterdir())


def test_an_unreadable_entry_is_replaced(repos: Repos, make_manager: MakeManager) -> None:
    manager = make_manager()
    commit = repos.scripts.commits["first"]
    junk = manager.data_dir / "clones" / entry_id(repos.scripts.url, commit)
    (junk / "src").mkdir(parents=True)  # e.g. restored from a backup without its metadata
    source = resolve(manager, repos.scripts.url, commit=commit)
    assert source.checkout == junk / "src"
    assert version_of(source) == "VERSION = 1"
