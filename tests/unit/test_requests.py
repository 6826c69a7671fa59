"""Parsing client requests: good input builds typed requests, bad input names the field."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tango_oet.domain import (
    EmbeddedScript,
    FilesystemScript,
    GitScript,
    InvalidRequest,
    parse_prepare,
    parse_start,
    parse_stop,
)


def test_prepare_file() -> None:
    req = parse_prepare('{"script": "file:///s/x.py", "init": {"args": [1], "kwargs": {"a": 2}}}')
    assert req.script == FilesystemScript("/s/x.py")
    assert req.init.args == (1,) and req.init.kwargs == {"a": 2}


def test_prepare_git() -> None:
    req = parse_prepare(
        json.dumps(
            {
                "script": "git://scripts/obs.py",
                "git": {"repo": "https://example.org/r.git", "tag": "v1"},
                "create_env": True,
            }
        )
    )
    assert isinstance(req.script, GitScript)
    assert req.script.path == "scripts/obs.py" and req.script.git.tag == "v1"
    assert req.script.create_env and req.script.uri == "git://scripts/obs.py"


def test_prepare_embedded() -> None:
    req = parse_prepare('{"script": "embedded://demo", "source": "def main(): pass"}')
    assert req.script == EmbeddedScript("demo", "def main(): pass")


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("not json", "request"),
        ("[1]", "request"),
        ("{}", "script"),
        ('{"script": 3}', "script"),
        ('{"script": "http://x.py"}', "script"),
        ('{"script": "file://relative.py"}', "script"),
        ('{"script": "file:///x.txt"}', "script"),
        ('{"script": "file:///x.py", "bogus": 1}', "bogus"),
        ('{"script": "file:///x.py", "git": {}}', "git"),
        ('{"script": "file:///x.py", "init": []}', "init"),
        ('{"script": "file:///x.py", "init": {"args": {}}}', "init.args"),
        ('{"script": "file:///x.py", "init": {"kwargs": {"1a": 1}}}', "init.kwargs.1a"),
        ('{"script": "file:///x.py", "init": {"other": 1}}', "init.other"),
        ('{"script": "git://x.py"}', "git"),
        ('{"script": "git://x.py", "git": {"branch": "b"}}', "git.repo"),
        ('{"script": "git://x.py", "git": {"repo": "nope"}}', "git.repo"),
        (
            '{"script": "git://x.py", "git": {"repo": "file:///r", "branch": "a", "tag": "b"}}',
            "git",
        ),
        ('{"script": "git://x.py", "git": {"repo": "file:///r", "commit": "xyz"}}', "git.commit"),
        ('{"script": "git://../x.py", "git": {"repo": "file:///r"}}', "script"),
        (
            '{"script": "git://x.py", "git": {"repo": "file:///r"}, "create_env": "yes"}',
            "create_env",
        ),
        ('{"script": "embedded://demo"}', "source"),
        ('{"script": "embedded://bad name", "source": ""}', "script"),
        ('{"script": "file:///x.py", "init": {"args": [NaN]}}', "request"),
    ],
)
def test_prepare_errors_name_the_field(text: str, field: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_prepare(text)
    assert err.value.field == field
    assert err.value.reason == "OET_InvalidRequest"
    assert str(err.value).startswith(f"{field}:")


def test_start_defaults() -> None:
    req = parse_start('{"id": 3}')
    assert (req.procedure_id, req.function, req.call.args, req.force) == (3, "main", (), False)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('{"function": "main"}', "id"),
        ('{"id": "3"}', "id"),
        ('{"id": true}', "id"),
        ('{"id": 0}', "id"),
        ('{"id": 1, "function": "not valid"}', "function"),
        ('{"id": 1, "function": "_private"}', "function"),
        ('{"id": 1, "function": "init"}', "function"),
        ('{"id": 1, "args": "x"}', "args"),
        ('{"id": 1, "kwargs": []}', "kwargs"),
        ('{"id": 1, "force": 1}', "force"),
        ('{"id": 1, "extra": 1}', "extra"),
    ],
)
def test_start_errors(text: str, field: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_start(text)
    assert err.value.field == field


def test_stop() -> None:
    assert parse_stop('{"id": 2, "abort": true}').abort
    with pytest.raises(InvalidRequest) as err:
        parse_stop('{"id": 2, "abort": "no"}')
    assert err.value.field == "abort"


@given(st.text(max_size=200))
def test_any_text_is_parsed_or_rejected_with_a_typed_error(text: str) -> None:
    for parse in (parse_prepare, parse_start, parse_stop):
        try:
            parse(text)
        except InvalidRequest:
            pass


def _nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("depth", [65, 900, 5000])
def test_deeply_nested_arguments_are_refused_naming_the_field(depth: int) -> None:
    # ~900 levels used to reach the worker pipe and kill an engine thread (RecursionError).
    deep = "[" * depth + "1" + "]" * depth  # as a client sends it; json.dumps would overflow
    prepare = '{"script": "file:///s.py", "init": {"args": [' + deep + "]}}"
    with pytest.raises(InvalidRequest) as prepared:
        parse_prepare(prepare)
    assert prepared.value.field in ("init.args[0]", "request")
    start = '{"id": 1, "kwargs": {"deep": ' + deep + "}}"
    with pytest.raises(InvalidRequest) as started:
        parse_start(start)
    assert started.value.field in ("kwargs.deep", "request")


def test_nesting_up_to_the_limit_is_accepted() -> None:
    request = parse_start(json.dumps({"id": 1, "args": [_nested(63)]}))
    assert request.call.args == (_nested(63),)


def _brackets(depth: int) -> str:
    return "[" * depth + "]" * depth


def _init(init: str) -> str:
    return '{"script": "file:///x.py", "init": ' + init + "}"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (_init('{"args": [1, ' + _brackets(900) + "]}"), "init.args[1]"),
        (_init('{"kwargs": {"deep": ' + _brackets(65) + "}}"), "init.kwargs.deep"),
        (_init('{"args": [' + '{"a": ' * 70 + "1" + "}" * 70 + "]}"), "init.args[0]"),
        (_init('{"args": [' + _brackets(100_000) + "]}"), "request"),
    ],
    ids=["900-deep-list", "65-deep-kwarg", "70-deep-objects", "too-deep-to-parse"],
)
def test_absurd_nesting_is_refused_naming_the_field(text: str, field: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_prepare(text)
    assert err.value.field == field
    assert "nests deeper than" in err.value.message


def test_nesting_up_to_the_limit_is_accepted_in_init_and_start() -> None:
    from tango_oet.domain.requests import MAX_NESTING

    ok = _brackets(MAX_NESTING)
    req = parse_prepare(f'{{"script": "file:///x.py", "init": {{"args": [{ok}]}}}}')
    assert len(req.init.args) == 1
    with pytest.raises(InvalidRequest) as err:
        parse_start(f'{{"id": 1, "kwargs": {{"x": [{ok}]}}}}')
    assert err.value.field == "kwargs.x"
    parse_start(f'{{"id": 1, "args": [{_brackets(MAX_NESTING - 1)}]}}')


def test_a_container_containing_itself_is_refused() -> None:
    from tango_oet.domain import ProcedureInput

    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(InvalidRequest) as err:
        ProcedureInput((loop,)).check("init")
    assert err.value.field == "init.args[0]"


@pytest.mark.parametrize("bad", [0, -1, True, "1", None, 1e12])
def test_start_timeout_must_be_positive_seconds(bad: object) -> None:
    text = json.dumps({"id": 1, "timeout": bad}) if bad is not None else '{"id": 1, "timeout": {}}'
    with pytest.raises(InvalidRequest, match="timeout"):
        parse_start(text)


def test_start_timeout_is_kept_as_seconds() -> None:
    assert parse_start('{"id": 1, "timeout": 2}').timeout == 2.0
    assert parse_start('{"id": 1}').timeout is None
