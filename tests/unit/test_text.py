"""UTF-8 on the wire (`tango_oet.domain.text`), surrogates in requests, and the worker's lines."""

from __future__ import annotations

import json

import pytest

from tango_oet.domain import InvalidRequest
from tango_oet.domain.requests import parse_prepare, parse_start
from tango_oet.domain.text import clean, from_wire, to_wire
from tango_oet.execution.worker import LineWriter

TEXT = "é€日本"


def as_pytango_gives_it(data: bytes) -> str:
    """What a DevString argin is in Python: its bytes as Latin-1 text."""
    return data.decode("latin-1")


def test_an_argin_is_decoded_from_its_utf8_bytes() -> None:
    assert from_wire(as_pytango_gives_it(TEXT.encode())) == TEXT
    assert from_wire(TEXT.encode()) == TEXT
    assert from_wire("plain ascii") == "plain ascii"
    # Not from pytango (it cannot hold such a character): text already.
    assert from_wire(TEXT) == TEXT


@pytest.mark.parametrize(
    "data",
    [b"\xff", b"ok \xc3\x28", b"\xed\xb3\xbf", b"trunc \xe2\x82"],
    ids=["ff", "bad-continuation", "encoded-surrogate", "truncated"],
)
def test_an_argin_that_is_not_utf8_is_an_invalid_request(data: bytes) -> None:
    with pytest.raises(InvalidRequest) as info:
        from_wire(as_pytango_gives_it(data), "request")
    assert info.value.field == "request"
    assert "UTF-8" in info.value.message


def test_text_goes_out_as_utf8_and_lone_surrogates_as_the_replacement_character() -> None:
    assert to_wire(TEXT) == TEXT.encode()
    assert to_wire("a \udcff b") == "a \ufffd b".encode()
    assert clean("x\ud800y\udfffz") == "x\ufffdy\ufffdz"
    assert clean("ascii") == "ascii"


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        ({"id": 1, "args": ["ok", "bad \udcff"]}, "args[1]"),
        ({"id": 1, "kwargs": {"a": {"b": ["\ud800"]}}}, "kwargs.a.b[0]"),
        ({"id": 1, "kwargs": {"\udcff": 1}}, "kwargs"),
        ({"id": 1, "function": "f\udcff"}, "function"),
    ],
)
def test_a_request_holding_a_lone_surrogate_is_refused_naming_where(
    request_: dict[str, object], field: str
) -> None:
    text = json.dumps(request_)  # ensure_ascii: the surrogate travels as a \\u escape
    with pytest.raises(InvalidRequest) as info:
        parse_start(text)
    assert info.value.field == field
    assert "surrogate" in info.value.message


def test_surrogate_pairs_and_unicode_in_requests_are_text() -> None:
    request = parse_start(json.dumps({"id": 1, "args": ["😀", TEXT]}))
    assert request.call.args == ("😀", TEXT)
    prepare = parse_prepare(
        json.dumps({"script": "embedded://x", "source": f"x = {TEXT!r}", "init": {"args": [TEXT]}})
    )
    assert prepare.init.args == (TEXT,)


class _Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def add_lines(self, stream: str, lines: list[str]) -> None:
        self.lines.extend(lines)


def test_the_worker_replaces_lone_surrogates_in_printed_lines() -> None:
    channel = _Lines()
    writer = LineWriter(channel, "stdout")  # type: ignore[arg-type]  # only add_lines is used
    writer.write(f"{TEXT} \udcff")
    writer.write(" end\nascii\n")
    assert channel.lines == [f"{TEXT} \ufffd end", "ascii"]
    assert writer.encoding == "utf-8"
