"""Git operations: pin a branch/tag/default branch to a commit and check a commit out, killably.

Plain `git` subprocesses rather than GitPython: every call must be killable (with its helpers
such as git-upload-pack or git-remote-https) the moment a procedure is stopped, and must never
wait for a credentials prompt.

Credentials of a request reach git only through its environment, answered by an inline
credential helper (credentials.py): never on a command line (which `ps` shows to every user),
never in `.git/config` of a checkout, and every message built from git's output is redacted.
"""

from __future__ import annotations

import re
import shutil
import threading
from pathlib import Path

from tango_oet.domain.errors import EnvironmentError_
from tango_oet.domain.scripts import GitRef
from tango_oet.domain.urls import Credentials, redact_text
from tango_oet.environments.credentials import credential_env
from tango_oet.environments.procs import Completed, clean_env, run

_LINE_RE = re.compile(r"^([0-9a-f]{40}|[0-9a-f]{64})\t(\S+)$")
FULL_SHA_RE = re.compile(r"^[0-9a-f]{40}$|^[0-9a-f]{64}$")

_ENV = {
    "GIT_TERMINAL_PROMPT": "0",  # a private repo without credentials must fail, not hang
    "GCM_INTERACTIVE": "never",
    "LC_ALL": "C",  # git's messages are quoted to operators and tested; keep them in English
}
# Tracing would write request headers (an Authorization among them) into the output we quote.
_UNSET = ("GIT_TRACE", "GIT_TRACE_CURL", "GIT_TRACE_PACKET", "GIT_CURL_VERBOSE", "GIT_TRACE2")
# No background gc/maintenance: it would escape the process group we kill on cancel.
_CONFIG = ("-c", "gc.auto=0", "-c", "maintenance.auto=false", "-c", "advice.detachedHead=false")


class Git:
    """Runs git with a timeout, a cancel event and no terminal prompts."""

    def __init__(self, timeout_s: float = 300.0, executable: str | None = None) -> None:
        found = executable or shutil.which("git")
        if found is None:
            raise _error("git is not installed (no `git` on PATH)")
        self.executable = found
        self.timeout_s = timeout_s
        self._env = {k: v for k, v in clean_env(_ENV).items() if not k.startswith(_UNSET)}

    def run(
        self,
        *args: str,
        cancel: threading.Event,
        cwd: Path | None = None,
        repo: str | None = None,
        credentials: Credentials | None = None,
    ) -> Completed:
        """Run git; with `credentials`, git may use them for `repo`'s origin and nowhere else."""
        env = self._env
        secrets: tuple[str, ...] = ()
        if credentials is not None and repo is not None:
            env = {**env, **credential_env(repo, credentials, env)}
            secrets = credentials.secrets()
        return run(
            [self.executable, *_CONFIG, *args],
            cancel=cancel,
            timeout=self.timeout_s,
            cwd=cwd,
            env=env,
            secrets=secrets,
        )

    # ---- resolving refs ---------------------------------------------------------------------
    def remote_commit(self, ref: GitRef, cancel: threading.Event) -> str:
        """The full sha a branch, a tag or the default branch of `ref.repo` points at now."""
        creds = ref.credentials
        if ref.branch:
            return self._ls_remote_one(ref.repo, "branch", ref.branch, cancel, creds)
        if ref.tag:
            return self._ls_remote_one(ref.repo, "tag", ref.tag, cancel, creds)
        return self._default_branch_commit(ref.repo, cancel, creds)

    def _default_branch_commit(
        self, repo: str, cancel: threading.Event, creds: Credentials | None
    ) -> str:
        # --symref shows which branch HEAD names (main, master, trunk...); we need only its sha.
        done = self.run(
            "ls-remote", "--symref", repo, "HEAD", cancel=cancel, repo=repo, credentials=creds
        )
        if done.returncode != 0:
            raise _error(f"cannot read repository {repo}: {done.tail()}")
        for sha, name in _refs(done.output):
            if name == "HEAD":
                return sha
        raise _error(
            f"repository {repo} has no default branch (HEAD does not name a commit; is it empty?)"
            + (f": {done.tail()}" if done.output.strip() else "")
        )

    def _ls_remote_one(
        self,
        repo: str,
        kind: str,
        name: str,
        cancel: threading.Event,
        creds: Credentials | None,
    ) -> str:
        full = f"refs/heads/{name}" if kind == "branch" else f"refs/tags/{name}"
        # For an annotated tag the peeled `^{}` line names the commit, the plain one the tag.
        patterns = [full] if kind == "branch" else [full, full + "^{}"]
        done = self.run(
            "ls-remote", "--exit-code", repo, *patterns,
            cancel=cancel, repo=repo, credentials=creds,
        )  # fmt: skip
        found = {ref: sha for sha, ref in _refs(done.output)}
        sha = found.get(full + "^{}") or found.get(full)
        if done.returncode == 2 or (done.returncode == 0 and sha is None):
            raise _error(f"unknown {kind} {name!r} in {repo}: git ls-remote found no {full}")
        if done.returncode != 0 or sha is None:
            raise _error(f"cannot read repository {repo}: {done.tail()}")
        return sha

    # ---- checking out -----------------------------------------------------------------------
    def checkout_commit(
        self,
        repo: str,
        want: str,
        dest: Path,
        cancel: threading.Event,
        credentials: Credentials | None = None,
    ) -> str:
        """Make `dest` a work tree of `repo` at commit `want` (full or short sha); return the sha.

        A full sha is fetched alone with depth 1 (servers speaking protocol v2, GitHub and
        file:// repositories allow that); otherwise, or if the server refuses, all branches and
        tags are fetched and the commit looked up among them.
        """
        if redact_text(repo) != repo:
            # It would be written into the checkout's .git/config: credentials go apart.
            raise _error("a repository URL with credentials was passed to git; pass them apart")
        want = want.lower()
        dest.mkdir(parents=True, exist_ok=True)
        self._check(self.run("init", "--quiet", str(dest), cancel=cancel), f"git init {dest}")
        self._check(
            self.run("remote", "add", "origin", repo, cancel=cancel, cwd=dest), "git remote add"
        )
        first_error = ""
        fetched = False
        if FULL_SHA_RE.match(want):
            shallow = self.run(
                "fetch", "--quiet", "--depth", "1", "--no-tags", "origin", want,
                cancel=cancel, cwd=dest, repo=repo, credentials=credentials,
            )  # fmt: skip
            fetched = shallow.returncode == 0
            first_error = "" if fetched else shallow.tail()
        if not fetched:
            full = self.run(
                "fetch", "--quiet", "--tags", "origin", "+refs/heads/*:refs/remotes/origin/*",
                cancel=cancel, cwd=dest, repo=repo, credentials=credentials,
            )  # fmt: skip
            if full.returncode != 0:
                raise _error(f"cannot fetch {repo}: {full.tail()}")
        parsed = self.run("rev-parse", "--verify", f"{want}^{{commit}}", cancel=cancel, cwd=dest)
        lines = parsed.output.split()
        if parsed.returncode != 0 or not lines or not FULL_SHA_RE.match(lines[-1]):
            why = "\n".join(s for s in (first_error, parsed.tail()) if s)
            raise _error(f"unknown commit {want!r} in {repo}: {why}")
        sha = lines[-1]
        self._check(
            self.run("checkout", "--quiet", "--detach", sha, cancel=cancel, cwd=dest),
            f"git checkout {sha}",
        )
        return sha

    @staticmethod
    def _check(done: Completed, what: str) -> None:
        if done.returncode != 0:
            raise _error(f"{what} failed: {done.tail()}")


def _error(message: str) -> EnvironmentError_:
    # Defence in depth: the URLs here come without credentials and git's output was redacted.
    return EnvironmentError_(redact_text(message))


def _refs(output: str) -> list[tuple[str, str]]:
    refs = []
    for line in output.splitlines():
        match = _LINE_RE.match(line.strip())
        if match:
            refs.append((match.group(1), match.group(2)))
    return refs
