"""A summary read back from its JSON (the store's record) is the summary that was written."""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tango_oet.domain.requests import ProcedureInput
from tango_oet.domain.scripts import EmbeddedScript, FilesystemScript, GitRef, GitScript
from tango_oet.domain.states import ProcedureState
from tango_oet.domain.summary import CallRecord, ErrorInfo, ProcedureSummary, Progress

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
identifiers = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,15}", fullmatch=True)
times = st.datetimes(timezones=st.just(UTC))
inputs = st.builds(
    ProcedureInput,
    args=st.lists(json_values, max_size=3).map(tuple),
    kwargs=st.dictionaries(identifiers, json_values, max_size=3),
)
repos = st.sampled_from(
    [
        "https://example.org/obs.git",
        "https://Example.ORG:443/a/../obs",
        "https://alice:s3cret@example.org/obs.git",
        "ssh://git@example.org:2222/obs.git",
        "git@example.org:group/obs.git",
        "file:///srv/git/obs",
    ]
)
refs = st.one_of(
    st.builds(GitRef, repos),
    st.builds(GitRef, repos, branch=identifiers),
    st.builds(GitRef, repos, tag=identifiers),
    st.builds(GitRef, repos, commit=st.from_regex(r"[0-9a-f]{4,40}", fullmatch=True)),
)
plain_scripts = st.one_of(
    st.builds(FilesystemScript, st.from_regex(r"/[^\x00]{0,40}\.py", fullmatch=True)),
    st.builds(EmbeddedScript, identifiers, st.text(max_size=200)),
)
git_scripts = st.builds(
    GitScript,
    st.from_regex(r"[a-z]{1,8}(/[a-z]{1,8}){0,2}\.py", fullmatch=True),
    refs,
    st.booleans(),
)
calls = st.builds(
    CallRecord,
    function=identifiers,
    call=inputs,
    time=times,
    finished=st.none() | times,
    result=json_values,
)
errors = st.builds(
    ErrorInfo,
    type=st.text(min_size=1, max_size=20),
    message=st.text(),
    traceback=st.text(),
    exitcode=st.none() | st.integers(-255, 255),
    signal=st.none() | st.sampled_from(["SIGKILL", "SIGTERM", "SIGSEGV"]),
)
progresses = st.builds(
    Progress,
    done=st.integers(0, 10**6) | st.floats(0, 1e6),
    total=st.none() | st.integers(1, 10**6),
    message=st.text(),
)


@st.composite
def summaries(draw: st.DrawFn) -> ProcedureSummary:
    git = draw(st.booleans())
    return ProcedureSummary(
        id=draw(st.integers(1, 2**31)),
        state=draw(st.sampled_from(ProcedureState)),
        script=draw(git_scripts if git else plain_scripts),
        init=draw(inputs),
        history=tuple(
            draw(st.lists(st.tuples(st.sampled_from(ProcedureState), times), max_size=6))
        ),
        calls=tuple(draw(st.lists(calls, max_size=3))),
        progress=draw(st.none() | progresses),
        error=draw(st.none() | errors),
        pid=draw(st.none() | st.integers(1, 2**22)),
        # Only a git script's summary carries the resolved commit.
        git_commit=draw(st.none() | st.from_regex(r"[0-9a-f]{40}", fullmatch=True))
        if git
        else None,
        environment=draw(st.none() | st.text(max_size=20)),
        abort_procedure=draw(st.none() | st.integers(1, 2**31)),
    )


def _source(summary: ProcedureSummary) -> str | None:
    return summary.script.source if isinstance(summary.script, EmbeddedScript) else None


@given(summaries())
def test_a_summary_read_back_from_its_json_text_is_equal(summary: ProcedureSummary) -> None:
    text = summary.to_json_text()
    again = ProcedureSummary.from_json(json.loads(text), embedded_source=_source(summary))
    assert again == summary
    assert again.to_json_text() == text


@given(summaries())
def test_without_its_source_an_embedded_summary_still_has_the_same_json(
    summary: ProcedureSummary,
) -> None:
    assert ProcedureSummary.from_json(summary.to_json()).to_json() == summary.to_json()


@given(summaries(), st.dictionaries(st.from_regex(r"x_[a-z]{1,8}", fullmatch=True), json_values))
def test_fields_a_later_release_adds_are_kept_in_extra(
    summary: ProcedureSummary, added: dict[str, Any]
) -> None:
    again = ProcedureSummary.from_json(summary.to_json() | added)
    assert again.extra == added


@pytest.mark.parametrize(
    "broken",
    [
        {"id": 3},
        {"id": 3, "state": "SLEEPING", "script": {"kind": "filesystem", "uri": "file:///a.py"}},
        {"id": 3, "state": "READY", "script": None},
    ],
)
def test_an_unreadable_record_raises_value_error_naming_it(broken: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="summary 3 is unreadable"):
        ProcedureSummary.from_json(broken)
