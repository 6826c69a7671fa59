"""EnvironmentManager: checkouts and venvs per (repo, commit), cached, locked and collected."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from tango_oet.domain.errors import EnvironmentError_, ScriptNotAllowed
from tango_oet.domain.scripts import GitScript
from tango_oet.domain.urls import (
    Credentials,
    GitUrl,
    GitUrlError,
    check_pattern,
    git_url_allowed,
    parse_git_url,
)
from tango_oet.environments.builder import (
    BuildOptions,
    build_venv,
    choose_installer,
    server_pip_usable,
)
from tango_oet.environments.git import FULL_SHA_RE, Git
from tango_oet.environments.locks import FileLock, SingleFlight
from tango_oet.environments.model import (
    Environment,
    ProgressSink,
    ResolvedSource,
    entry_id,
    env_id,
)
from tango_oet.environments.procs import Cancelled
from tango_oet.environments.runtime import publish_runtime
from tango_oet.environments.store import KINDS, Entry, Kind, Store, discard, tree_bytes

log = logging.getLogger(__name__)

_DAY_S = 86400.0
_VANISHED_RETRIES = 3
_MIN_SHORT_SHA = 7  # shorter prefixes are too likely to be ambiguous to trust the cache with


@dataclass
class _Lease:
    lock: FileLock
    count: int


class EnvironmentManager:
    """Resolves git scripts to cached checkouts and builds one venv per (repo, commit).

    Every entry (clone or environment) is built in a temporary directory and published by an
    atomic rename, under an exclusive flock so two server processes sharing `data_dir` build it
    once; in-process, concurrent callers of the same key share one job (SingleFlight). What
    `resolve` and `ensure_environment` return is *leased* (a shared flock) until `release` is
    called with it: garbage collection never removes a leased entry.
    """

    def __init__(
        self,
        data_dir: Path,
        git_allow: Sequence[str] = ("*",),
        installer: str = "auto",
        keep: int = 20,
        max_age_days: float | None = None,
        find_links: Sequence[str] = (),
        build_timeout_s: float = 900.0,
        *,
        no_index: bool = False,
        index_url: str | None = None,
        git_timeout_s: float = 300.0,
        auto_gc: bool = True,
    ) -> None:
        if keep < 0:
            raise ValueError(f"keep must be >= 0, got {keep}")
        self.data_dir = Path(data_dir)
        try:
            self.git_allow = tuple(check_pattern(p) for p in git_allow)
        except GitUrlError as exc:
            raise ValueError(f"GitAllowList: {exc}") from None
        self.keep = keep
        self.max_age_days = max_age_days
        self.auto_gc = auto_gc
        kind, uv = choose_installer(installer)
        self.build_options = BuildOptions(
            installer=kind,
            uv=uv,
            find_links=tuple(find_links),
            no_index=no_index,
            index_url=index_url,
            timeout_s=build_timeout_s,
            server_pip=kind == "pip" and server_pip_usable(),
        )
        self._git_timeout_s = git_timeout_s
        self._git: Git | None = None  # found on first use: a server without git still serves files
        self._store = Store(self.data_dir)
        self._clones: SingleFlight[Entry] = SingleFlight("clone")
        self._builds: SingleFlight[Entry] = SingleFlight("build")
        self._lock = threading.Lock()
        self._leases: dict[tuple[Kind, str], _Lease] = {}
        self._stats: Counter[str] = Counter()
        self._runtime: Path | None = None
        self._runtime_lock = threading.Lock()
        self._closed = False
        self._dirs_created = False

    # ---- public API -------------------------------------------------------------------------
    def check_allowed(self, repo: str) -> None:
        """Raise ScriptNotAllowed unless `repo`, normalised, matches a pattern of the allow-list.

        Matching is done on the normalised URL (domain/urls.py): no `..`, no credentials.
        """
        self._allowed_url(repo)

    def _allowed_url(self, repo: str) -> GitUrl:
        try:
            url = parse_git_url(repo)
        except GitUrlError as exc:
            raise ScriptNotAllowed(f"git repository refused: {exc}") from None
        if not self.git_allow:
            raise ScriptNotAllowed(
                f"git repository {url.url!r} is not allowed: GitAllowList is empty; set the "
                "GitAllowList property (fnmatch patterns of allowed repositories)"
            )
        if not git_url_allowed(url, self.git_allow):
            raise ScriptNotAllowed(
                f"git repository {url.url!r} is not allowed by GitAllowList {list(self.git_allow)}"
            )
        return url

    def resolve(
        self, script: GitScript, progress: ProgressSink, cancel: threading.Event
    ) -> ResolvedSource:
        """Pin the script's ref to a full commit and return a leased checkout of it."""
        self._start(cancel)
        ref = script.git
        repo = self._allowed_url(ref.repo).url  # == ref.repo: GitRef holds it normalised
        creds = ref.credentials
        rel = _script_relpath(script.path)
        want = ref.commit.lower() if ref.commit else None
        if want is None:
            progress("resolving", 0, 1, f"resolving {ref.describe()} of {repo}")
            want = self._git_tool().remote_commit(ref, cancel)
            progress("resolving", 1, 1, f"{ref.describe()} is {want}")
        elif not FULL_SHA_RE.match(want):
            want = self._cached_full_sha(repo, want) or want
        entry = self._clone(repo, want, progress, cancel, creds)
        try:
            checkout = entry.path / "src"
            commit = str(entry.meta["commit"])
            script_path = _locate_script(checkout, rel, repo, commit)
        except BaseException:
            self._release_lease("clone", entry.entry_id)
            raise
        return ResolvedSource(repo, commit, checkout, script_path)

    def ensure_environment(
        self, source: ResolvedSource, progress: ProgressSink, cancel: threading.Event
    ) -> Environment:
        """Return a leased environment for the source's (repo, commit), building it if needed."""
        self._start(cancel)
        eid = env_id(source.repo, source.commit)
        entry = self._lease_existing("env", eid, source.repo, source.commit, cancel)
        if entry is not None:
            self._count("env_reuses")
        else:
            entry = self._single_flight_then_lease(
                self._builds,
                "env",
                eid,
                source.repo,
                source.commit,
                lambda sink, c: self._build(source, eid, sink, c),
                progress,
                cancel,
            )
        try:
            runtime = self.runtime_dir()
        except BaseException:
            self._release_lease("env", eid)
            raise
        progress("ready", 1, 1, f"environment {eid} ready")
        return Environment(eid, entry.path, entry.path / "bin" / "python", runtime)

    def release(self, item: ResolvedSource | Environment) -> None:
        """End a lease taken by `resolve` or `ensure_environment` (once per returned object)."""
        if isinstance(item, Environment):
            self._release_lease("env", item.env_id)
        else:
            self._release_lease("clone", item.entry_id)

    def runtime_dir(self) -> Path:
        """A directory holding only `tango_oet` (without device/client/cli) for PYTHONPATH."""
        with self._runtime_lock:
            if self._runtime is None or not (self._runtime / "tango_oet").is_dir():
                try:
                    self._runtime = publish_runtime(self.data_dir / "runtime")
                except OSError as exc:
                    raise EnvironmentError_(f"cannot publish the worker runtime: {exc}") from exc
            return self._runtime

    def usage(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per clone and environment on disk."""
        rows = []
        for kind in KINDS:
            for entry in self._store.entries(kind):
                rows.append(
                    {
                        "id": entry.entry_id,
                        "kind": kind,
                        "repo": entry.meta.get("repo"),
                        "commit": entry.meta.get("commit"),
                        "path": str(entry.path),
                        "bytes": tree_bytes(entry.path),
                        "last_used": entry.meta.get("last_used"),
                        "in_use": self._in_use(kind, entry.entry_id),
                    }
                )
        return rows

    def collect_garbage(
        self, keep: int | None = None, max_age_days: float | None = None
    ) -> list[str]:
        """Remove entries beyond the `keep` most recently used of each kind, or unused for longer
        than `max_age_days`; never one in use. Returns the removed `clones/<id>`, `envs/<id>`."""
        return self._collect(keep, max_age_days, spare=frozenset())

    @property
    def stats(self) -> dict[str, int]:
        """Counters since construction: clones, env_builds (started), clone_reuses, env_reuses."""
        with self._lock:
            return dict(self._stats)

    def close(self) -> None:
        """Cancel running clones and builds (their children are killed) and drop all leases."""
        self._closed = True
        self._clones.cancel_all()
        self._builds.cancel_all()
        with self._lock:
            leases, self._leases = list(self._leases.values()), {}
        for lease in leases:
            lease.lock.release()

    # ---- clones -----------------------------------------------------------------------------
    def _clone(
        self,
        repo: str,
        want: str,
        progress: ProgressSink,
        cancel: threading.Event,
        creds: Credentials | None = None,
    ) -> Entry:
        if FULL_SHA_RE.match(want):
            eid = entry_id(repo, want)
            entry = self._lease_existing("clone", eid, repo, want, cancel)
            if entry is not None:
                self._count("clone_reuses")
                progress("cloning", 1, 1, f"using cached checkout of {want}")
                return entry
            return self._single_flight_then_lease(
                self._clones,
                "clone",
                eid,
                repo,
                want,
                lambda sink, c: self._fetch(repo, want, sink, c, creds),
                progress,
                cancel,
            )
        # A short sha is only known after fetching; share the job by what was asked for.
        key = "short-" + entry_id(repo, want)
        fetched = self._clones.run(
            key, lambda sink, c: self._fetch(repo, want, sink, c, creds), progress, cancel
        )
        commit = str(fetched.meta["commit"])
        entry = self._lease_existing("clone", fetched.entry_id, repo, commit, cancel)
        if entry is None:
            raise EnvironmentError_(f"checkout {fetched.path} vanished (garbage collection?)")
        return entry

    def _fetch(
        self,
        repo: str,
        want: str,
        progress: ProgressSink,
        cancel: threading.Event,
        creds: Credentials | None = None,
    ) -> Entry:
        """Runs in a SingleFlight thread: fetch `want` into a temporary dir and publish it."""
        full = FULL_SHA_RE.match(want) is not None
        lock = self._store.lock("clone", entry_id(repo, want)) if full else None
        if lock is not None:
            lock.acquire(cancel=cancel, on_wait=_waiting(progress, "cloning"))
        try:
            if lock is not None:
                existing = self._store.read_for_build("clone", entry_id(repo, want))
                if existing is not None:
                    return existing
            tmp, claim = self._store.new_tmp("clone", entry_id(repo, want))
            published = False
            try:
                progress("cloning", 0, 1, f"fetching {want} from {repo}")
                self._count("clones")
                sha = self._git_tool().checkout_commit(repo, want, tmp / "src", cancel, creds)
                eid = entry_id(repo, sha)
                if lock is None:  # short sha: only now do we know which entry this is
                    lock = self._store.lock("clone", eid)
                    lock.acquire(cancel=cancel, on_wait=_waiting(progress, "cloning"))
                    existing = self._store.read_for_build("clone", eid)
                    if existing is not None:
                        return existing
                entry = self._store.publish("clone", eid, tmp, {"repo": repo, "commit": sha})
                published = True
                progress("cloning", 1, 1, f"checked out {sha}")
            finally:
                claim.release()
                if not published:
                    discard(tmp)
        finally:
            if lock is not None:
                lock.release()
        self._gc_after_publish("clone", entry.entry_id)
        return entry

    def _cached_full_sha(self, repo: str, short: str) -> str | None:
        """The one cached commit of `repo` starting with `short`, sparing a full fetch."""
        if len(short) < _MIN_SHORT_SHA:
            return None
        matches = {
            str(e.meta.get("commit"))
            for e in self._store.entries("clone")
            if e.meta.get("repo") == repo and str(e.meta.get("commit", "")).startswith(short)
        }
        return matches.pop() if len(matches) == 1 else None

    # ---- environments -----------------------------------------------------------------------
    def _build(
        self, source: ResolvedSource, eid: str, progress: ProgressSink, cancel: threading.Event
    ) -> Entry:
        """Runs in a SingleFlight thread: build the venv under the entry's exclusive lock."""
        lock = self._store.lock("env", eid)
        lock.acquire(cancel=cancel, on_wait=_waiting(progress, "creating"))
        try:
            existing = self._store.read_for_build("env", eid)
            if existing is not None:  # another process built it while we waited for the lock
                return existing
            if not source.checkout.is_dir():
                raise EnvironmentError_(f"checkout {source.checkout} is gone; resolve again")
            tmp, claim = self._store.new_tmp("env", eid)
            published = False
            try:
                self._count("env_builds")
                meta = build_venv(
                    tmp,
                    self._store.path("env", eid),
                    source.checkout,
                    self.build_options,
                    progress,
                    cancel,
                )
                entry = self._store.publish(
                    "env", eid, tmp, {"repo": source.repo, "commit": source.commit, **meta}
                )
                published = True
            finally:
                claim.release()
                if not published:
                    discard(tmp)
        finally:
            lock.release()
        self._gc_after_publish("env", eid)
        return entry

    # ---- leases -----------------------------------------------------------------------------
    def _single_flight_then_lease(
        self,
        flights: SingleFlight[Entry],
        kind: Kind,
        eid: str,
        repo: str,
        commit: str,
        work: Callable[[ProgressSink, threading.Event], Entry],
        progress: ProgressSink,
        cancel: threading.Event,
    ) -> Entry:
        # Between the job's publish and our lease, garbage collection in another process could
        # remove the entry; then simply do it again.
        for _ in range(_VANISHED_RETRIES):
            flights.run(eid, work, progress, cancel)
            entry = self._lease_existing(kind, eid, repo, commit, cancel)
            if entry is not None:
                return entry
        raise EnvironmentError_(f"{kind} {eid} keeps vanishing right after it is built")

    def _lease_existing(
        self, kind: Kind, eid: str, repo: str, commit: str, cancel: threading.Event
    ) -> Entry | None:
        """Lease the published entry `eid` and record a use; None if there is none."""
        if self._store.read(kind, eid) is None:
            return None
        self._acquire_lease(kind, eid, cancel)
        entry = self._store.read(kind, eid)  # again: it may have been collected meanwhile
        if entry is None:
            self._release_lease(kind, eid)
            return None
        if entry.meta.get("repo") != repo or entry.meta.get("commit") != commit:
            self._release_lease(kind, eid)
            raise EnvironmentError_(
                f"cache entry {entry.path} holds {entry.meta.get('repo')}@"
                f"{entry.meta.get('commit')}, not {repo}@{commit}"
            )
        self._store.touch(entry)
        return entry

    def _acquire_lease(self, kind: Kind, eid: str, cancel: threading.Event) -> None:
        with self._lock:
            lease = self._leases.get((kind, eid))
            if lease is not None:
                lease.count += 1
                return
        lock = self._store.lock(kind, eid)
        lock.acquire(shared=True, cancel=cancel)
        with self._lock:
            lease = self._leases.get((kind, eid))
            if lease is None:
                self._leases[(kind, eid)] = _Lease(lock, 1)
                return
            lease.count += 1
        lock.release()  # another thread leased it meanwhile; one descriptor is enough

    def _release_lease(self, kind: Kind, eid: str) -> None:
        with self._lock:
            lease = self._leases.get((kind, eid))
            if lease is None:
                return
            lease.count -= 1
            if lease.count > 0:
                return
            del self._leases[(kind, eid)]
        lease.lock.release()

    def _in_use(self, kind: Kind, eid: str) -> bool:
        with self._lock:
            if (kind, eid) in self._leases:
                return True
        lock = self._store.lock(kind, eid)
        if not lock.try_acquire():
            return True  # leased or being rebuilt by another thread or process
        lock.release()
        return False

    # ---- garbage collection -----------------------------------------------------------------
    def _collect(
        self,
        keep: int | None,
        max_age_days: float | None,
        spare: frozenset[tuple[Kind, str]],
    ) -> list[str]:
        keep = self.keep if keep is None else keep
        max_age_days = self.max_age_days if max_age_days is None else max_age_days
        now = time.time()
        removed = []
        for kind in KINDS:
            entries = sorted(self._store.entries(kind), key=lambda e: e.last_used, reverse=True)
            for rank, entry in enumerate(entries):
                expired = max_age_days is not None and now - entry.last_used > max_age_days * _DAY_S
                if (rank < keep and not expired) or (kind, entry.entry_id) in spare:
                    continue
                lock = self._store.lock(kind, entry.entry_id)
                if not lock.try_acquire():
                    continue  # leased (in use) here or in another process, or being built
                try:
                    if self._store.remove(kind, entry.entry_id):
                        removed.append(f"{kind}s/{entry.entry_id}")
                    lock.unlink()
                finally:
                    lock.release()
        removed += self._store.sweep()
        if removed:
            log.info("garbage collection removed %s", ", ".join(removed))
        return removed

    def _gc_after_publish(self, kind: Kind, eid: str) -> None:
        if not self.auto_gc:
            return
        try:
            # Spare the new entry: its waiters have not leased it yet.
            self._collect(None, None, spare=frozenset({(kind, eid)}))
        except Exception:  # collection is housekeeping; it must not fail a build
            log.exception("garbage collection after publishing %s %s failed", kind, eid)

    # ---- helpers ----------------------------------------------------------------------------
    def _git_tool(self) -> Git:
        if self._git is None:
            self._git = Git(self._git_timeout_s)
        return self._git

    def _count(self, name: str) -> None:
        with self._lock:
            self._stats[name] += 1

    def _start(self, cancel: threading.Event) -> None:
        if self._closed:
            raise EnvironmentError_("the environment manager is closed")
        if cancel.is_set():
            raise Cancelled()
        if not self._dirs_created:
            # Created on first use, not at construction: a server whose data directory is not
            # writable still serves filesystem and embedded scripts.
            try:
                self._store.create_dirs()
            except OSError as exc:
                raise EnvironmentError_(
                    f"cannot use data directory {self.data_dir}: {exc}"
                ) from exc
            self._dirs_created = True


def _waiting(progress: ProgressSink, stage: str) -> Callable[[], None]:
    return lambda: progress(stage, 0, None, "waiting for another process working on it")


def _script_relpath(path: str) -> PurePosixPath:
    rel = PurePosixPath(path.lstrip("/"))
    if not rel.parts or ".." in rel.parts:
        raise ScriptNotAllowed(f"script path {path!r} must stay inside the repository")
    if rel.parts[0] == ".git":
        raise ScriptNotAllowed(f"script path {path!r} points into the repository's .git")
    return rel


def _locate_script(checkout: Path, rel: PurePosixPath, repo: str, commit: str) -> Path:
    root = checkout.resolve()
    target = (root / rel).resolve()  # follows symlinks, so a link out of the tree is caught
    if not target.is_relative_to(root) or target.relative_to(root).parts[:1] == (".git",):
        raise ScriptNotAllowed(
            f"script path {str(rel)!r} leads outside the repository (through a symlink)"
        )
    if not target.is_file():
        raise EnvironmentError_(f"script {str(rel)!r} not found in {repo} at commit {commit}")
    return target
