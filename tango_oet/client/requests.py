"""The JSON argins of Prepare, Start and Stop (INTERFACE.md), built from Python values."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Git:
    """Where a git script comes from; at most one of branch, tag and commit."""

    repo: str
    branch: str | None = None
    tag: str | None = None
    commit: str | None = None

    def to_json(self) -> dict[str, str]:
        ref = {"branch": self.branch, "tag": self.tag, "commit": self.commit}
        return {"repo": self.repo, **{k: v for k, v in ref.items() if v}}


ScriptLike = str | os.PathLike[str]
GitLike = Git | Mapping[str, str]


def script_uri(script: ScriptLike, *, git: GitLike | None = None, source: str | None = None) -> str:
    """The `script` field: a URI as given; else embedded:// (with source), git:// (with git),
    or file:// of the absolute path (resolved here, so it must be valid on the server too)."""
    if isinstance(script, str) and "://" in script:
        return script
    if source is not None:
        name = Path(script).name if isinstance(script, os.PathLike) else str(script)
        return f"embedded://{name}"
    if git is not None:
        return f"git://{os.fspath(script)}"
    return f"file://{Path(script).expanduser().resolve()}"


def prepare_request(
    script: ScriptLike,
    *,
    init_args: Sequence[Any] = (),
    init_kwargs: Mapping[str, Any] | None = None,
    git: GitLike | None = None,
    create_env: bool = False,
    source: str | None = None,
) -> dict[str, Any]:
    """The Prepare argin as a dict (the caller JSON-encodes it)."""
    request: dict[str, Any] = {"script": script_uri(script, git=git, source=source)}
    if git is not None:
        request["git"] = git.to_json() if isinstance(git, Git) else dict(git)
    if create_env:
        request["create_env"] = True
    if source is not None:
        request["source"] = source
    request["init"] = {"args": list(init_args), "kwargs": dict(init_kwargs or {})}
    return request


def start_request(
    procedure_id: int,
    function: str = "main",
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    force: bool = False,
) -> dict[str, Any]:
    return {
        "id": procedure_id,
        "function": function,
        "args": list(args),
        "kwargs": dict(kwargs or {}),
        "force": force,
    }


def stop_request(procedure_id: int, abort: bool = False) -> dict[str, Any]:
    return {"id": procedure_id, "abort": abort}
