"""Git references of requests: the URL is normalised and its credentials never reach a summary,
a repr or an error."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from tango_oet.domain import GitRef, GitScript, InvalidRequest, ProcedureState, parse_prepare
from tango_oet.domain.requests import ProcedureInput
from tango_oet.domain.summary import ErrorInfo, ProcedureSummary
from tango_oet.domain.urls import Credentials

SECRET = "hunter2-Secret"


def prepare_git(repo: str) -> GitScript:
    request = {"script": "git://scripts/obs.py", "git": {"repo": repo, "branch": "main"}}
    script = parse_prepare(json.dumps(request)).script
    assert isinstance(script, GitScript)
    return script


@pytest.mark.parametrize(
    "repo",
    [
        f"https://oet:{SECRET}@Git.Example.org:443/grp//r.git/",
        f"http://{SECRET}@git.example.org/grp/r.git",  # a token as the user name
        f"file://oet:{SECRET}@/srv/git/grp/r.git",
    ],
)
def test_credentials_are_parsed_out_of_the_url(repo: str) -> None:
    script = prepare_git(repo)
    ref = script.git
    assert SECRET not in ref.repo and "oet" not in ref.repo
    assert ref.repo.endswith("/grp/r.git")
    assert ref.credentials is not None and SECRET in (
        ref.credentials.username,
        ref.credentials.password,
    )
    summary = ProcedureSummary(
        id=1,
        state=ProcedureState.FAILED,
        script=script,
        init=ProcedureInput(),
        history=((ProcedureState.CREATING, datetime.now(UTC)),),
        error=ErrorInfo("EnvironmentFailed", f"cannot read repository {ref.repo}"),
    )
    for text in (summary.to_json_text(), repr(summary), repr(script), str(ref)):
        assert SECRET not in text
    assert json.loads(summary.to_json_text())["script"]["git"]["repo"] == ref.repo


def test_the_repo_is_stored_normalised() -> None:
    ref = prepare_git("HTTPS://Git.Example.org:443/grp/./x/../r.git/").git
    assert ref.repo == "https://git.example.org/grp/r.git"
    assert ref.credentials is None


def test_credentials_take_no_part_in_equality_and_survive_with_credentials() -> None:
    with_secret = GitRef(f"https://u:{SECRET}@h.example/r", branch="main")
    plain = GitRef("https://h.example/r", branch="main")
    assert with_secret == plain and hash(with_secret) == hash(plain)
    assert with_secret.credentials == Credentials("u", SECRET)
    moved = plain.with_credentials(Credentials("u", SECRET))
    assert moved.credentials == Credentials("u", SECRET) and moved == plain
    assert SECRET not in repr(moved)


def test_an_unparseable_url_built_directly_keeps_no_credentials() -> None:
    # e.g. a record read back from the store; requests never get this far (below).
    ref = GitRef(f"https://u:{SECRET}@h.example/r?query")
    assert SECRET not in ref.repo and ref.credentials is None


@pytest.mark.parametrize(
    ("repo", "problem"),
    [
        (f"https://u:{SECRET}@h.example/../r", "climbs above the root"),
        (f"https://u:{SECRET}@h.example/r?x=1", "no query"),
        (f"ftp://u:{SECRET}@h.example/r", "not supported"),
        (f"ssh://u:{SECRET}@h.example/r", "cannot carry a password"),
        (f"u:{SECRET}@h.example:r", "no '@' or ':'"),
        (f"nonsense-{SECRET}@", "must be a URL"),
        ("", "non-empty"),
        (42, "non-empty URL string"),
    ],
)
def test_refused_repositories_name_the_field_not_the_secret(repo: object, problem: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_prepare(json.dumps({"script": "git://x.py", "git": {"repo": repo}}))
    assert info.value.field == "git.repo"
    assert problem in info.value.message
    assert SECRET not in info.value.message


def test_script_uris_with_credentials_are_quoted_redacted() -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_prepare(json.dumps({"script": f"file://u:{SECRET}@/x.py"}))
    assert info.value.field == "script" and SECRET not in info.value.message
    with pytest.raises(InvalidRequest) as info:
        parse_prepare(json.dumps({"script": f"https://u:{SECRET}@h.example/x.py"}))
    assert SECRET not in info.value.message
