"""Script descriptors: where a procedure's code comes from (filesystem, git, embedded text)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Literal

from tango_oet.domain.errors import InvalidRequest
from tango_oet.domain.urls import Credentials, GitUrlError, parse_git_url, redact_text

_SHA_RE = re.compile(r"^[0-9a-fA-F]{4,40}$")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,99}$")
MAX_EMBEDDED_SOURCE = 1_000_000  # bytes; a script is code, not data


@dataclass(frozen=True)
class FilesystemScript:
    """A script on the server's filesystem, `file:///abs/path.py`."""

    path: str

    kind: Literal["filesystem"] = "filesystem"

    @property
    def uri(self) -> str:
        return f"file://{self.path}"


@dataclass(frozen=True)
class GitRef:
    """Which revision of a repository to use; at most one of branch/tag/commit is set.

    `repo` is the normalised URL without credentials (domain/urls.py): what the allow-list
    checks, git fetches and every summary shows. Credentials given in the URL are moved to
    `credentials`, which no repr, comparison or summary includes; only git receives them.
    (Not an __init__ argument: they arrive inside the URL, or through `with_credentials`;
    `dataclasses.replace` drops them.)
    """

    repo: str
    branch: str | None = None
    tag: str | None = None
    commit: str | None = None
    credentials: Credentials | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Whoever builds a GitRef (a request, a test, a record read back from the store), its
        # repo never holds a secret. A URL that does not parse keeps its text minus any
        # userinfo: requests are refused earlier (parse_git_ref), and resolving refuses it.
        try:
            parsed = parse_git_url(self.repo)
        except GitUrlError:
            object.__setattr__(self, "repo", redact_text(self.repo))
            return
        object.__setattr__(self, "repo", parsed.url)
        object.__setattr__(self, "credentials", parsed.credentials)

    def with_credentials(self, credentials: Credentials | None) -> GitRef:
        """This reference with other credentials (e.g. kept apart by a queue)."""
        ref = GitRef(self.repo, self.branch, self.tag, self.commit)
        object.__setattr__(ref, "credentials", credentials)
        return ref

    def describe(self) -> str:
        if self.commit:
            return f"commit {self.commit}"
        if self.tag:
            return f"tag {self.tag}"
        if self.branch:
            return f"branch {self.branch}"
        return "default branch"


@dataclass(frozen=True)
class GitScript:
    """A script at a path inside a git repository, `git://path/in/repo.py`."""

    path: str
    git: GitRef
    create_env: bool = False

    kind: Literal["git"] = "git"

    @property
    def uri(self) -> str:
        return f"git://{self.path}"


@dataclass(frozen=True)
class EmbeddedScript:
    """Source text sent with the request, `embedded://name`."""

    name: str
    source: str

    kind: Literal["embedded"] = "embedded"

    @property
    def uri(self) -> str:
        return f"embedded://{self.name}"


Script = FilesystemScript | GitScript | EmbeddedScript


def _opt_str(obj: dict[str, object], key: str, name: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(name, f"must be a non-empty string, got {value!r}")
    return value.strip()


def parse_git_ref(obj: object) -> GitRef:
    """Validate the `git` object of a Prepare request."""
    if not isinstance(obj, dict):
        raise InvalidRequest("git", f"must be an object with 'repo', got {obj!r}")
    unknown = set(obj) - {"repo", "branch", "tag", "commit"}
    if unknown:
        raise InvalidRequest("git", f"unknown field(s) {sorted(unknown)}")
    raw = obj.get("repo")
    if raw is None:
        raise InvalidRequest("git.repo", "is required")
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidRequest("git.repo", "must be a non-empty URL string")
    try:
        parse_git_url(raw.strip())  # GitRef parses it again, leniently: here errors are wanted
    except GitUrlError as exc:  # its message never holds the URL's credentials
        raise InvalidRequest("git.repo", str(exc)) from None
    branch = _opt_str(obj, "branch", "git.branch")
    tag = _opt_str(obj, "tag", "git.tag")
    commit = _opt_str(obj, "commit", "git.commit")
    given = [n for n, v in (("branch", branch), ("tag", tag), ("commit", commit)) if v]
    if len(given) > 1:
        raise InvalidRequest("git", f"give at most one of branch/tag/commit, got {given}")
    if commit is not None and not _SHA_RE.match(commit):
        raise InvalidRequest("git.commit", f"must be a hex sha (4-40 digits), got {commit!r}")
    for name, value in (("branch", branch), ("tag", tag)):
        if value is not None and (value.startswith("-") or ".." in value or " " in value):
            raise InvalidRequest(f"git.{name}", f"is not a valid git ref name: {value!r}")
    return GitRef(repo=raw.strip(), branch=branch, tag=tag, commit=commit)


def _relative_repo_path(path: str) -> str:
    rel = path.lstrip("/")
    parts = PurePosixPath(rel).parts
    if not rel or not rel.endswith(".py"):
        raise InvalidRequest("script", f"git script path must name a .py file, got {path!r}")
    if ".." in parts:
        raise InvalidRequest("script", f"git script path must stay inside the repository: {path!r}")
    return rel


def parse_script(uri: object, request: dict[str, object]) -> Script:
    """Build the script descriptor of a Prepare request from its `script` URI and companions."""
    if not isinstance(uri, str) or not uri:
        raise InvalidRequest("script", f"must be a URI string, got {uri!r}")
    shown = redact_text(uri)  # what error messages quote: a URI could carry a user:password@
    if uri.startswith("file://"):
        path = uri[len("file://") :]
        if not path.startswith("/"):
            raise InvalidRequest("script", f"file:// URI must hold an absolute path, got {shown!r}")
        if not path.endswith(".py"):
            raise InvalidRequest("script", f"must name a .py file, got {shown!r}")
        _reject_extra(request, {"git", "create_env", "source"}, "file://")
        return FilesystemScript(path=str(PurePosixPath(path)))
    if uri.startswith("git://"):
        _reject_extra(request, {"source"}, "git://")
        if "git" not in request:
            raise InvalidRequest("git", "is required for a git:// script")
        create_env = request.get("create_env", False)
        if not isinstance(create_env, bool):
            raise InvalidRequest("create_env", f"must be true or false, got {create_env!r}")
        return GitScript(
            path=_relative_repo_path(uri[len("git://") :]),
            git=parse_git_ref(request["git"]),
            create_env=create_env,
        )
    if uri.startswith("embedded://"):
        _reject_extra(request, {"git", "create_env"}, "embedded://")
        name = uri[len("embedded://") :]
        if not _NAME_RE.match(name):
            raise InvalidRequest(
                "script", f"embedded name must be an identifier-like word, got {name!r}"
            )
        source = request.get("source")
        if not isinstance(source, str):
            raise InvalidRequest("source", "is required (a string of Python code) for embedded://")
        if len(source.encode()) > MAX_EMBEDDED_SOURCE:
            raise InvalidRequest("source", f"is larger than {MAX_EMBEDDED_SOURCE} bytes")
        return EmbeddedScript(name=name, source=source)
    raise InvalidRequest(
        "script", f"unknown scheme in {shown!r}; use file://, git:// or embedded://"
    )


def _reject_extra(request: dict[str, object], forbidden: set[str], scheme: str) -> None:
    extra = sorted(forbidden & set(request))
    if extra:
        raise InvalidRequest(extra[0], f"does not apply to a {scheme} script")
