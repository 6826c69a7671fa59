"""The typed client gives its users text as the script and the device meant it (UTF-8 on the
wire, INTERFACE "Safe by default"): output lines, error descriptions and Status."""

from __future__ import annotations

import pytest

from tango_oet.client import InvalidRequest, OutputLine
from tests.client.conftest import StartClient
from tests.client.helpers import drain

TEXT = "é€日本"
PRINTS = f"def main():\n    print({TEXT!r})\n    return 1\n"


def test_output_lines_arrive_as_the_script_printed_them(start_client: StartClient) -> None:
    oet = start_client()
    proc = oet.prepare("prints", source=PRINTS)
    with proc.iter_events() as stream:
        proc.start(force=True)
        lines = [e.text for e in drain(stream) if isinstance(e, OutputLine)]
    assert lines == [TEXT]


def test_an_error_names_a_unicode_value_as_it_was_sent(start_client: StartClient) -> None:
    oet = start_client()
    proc = oet.prepare("prints", source=PRINTS)
    proc.wait("READY", timeout=20)
    with pytest.raises(InvalidRequest) as info:
        proc.start("fünction")
    assert "fünction" in info.value.desc
