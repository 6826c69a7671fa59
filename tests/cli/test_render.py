"""Rendering without a device: terminal vs piped output, value parsing, durations."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from rich.console import Console

from tango_oet.cli.commands.follow import _ProgressView
from tango_oet.cli.render import Output
from tango_oet.cli.values import (
    UsageError,
    elide_middle,
    format_bytes,
    format_duration,
    parse_kwargs,
    parse_value,
    shorten,
)
from tango_oet.client import (
    OutputLine,
    ProcedureState,
    Progress,
    ProgressUpdate,
    StateChange,
    Summary,
    UserEvent,
)


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _summary(pid: int, state: str, uri: str = "file:///s.py") -> Summary:
    return Summary.from_json(
        {
            "id": pid,
            "state": state,
            "script": {"kind": "filesystem", "uri": uri},
            "history": [["RUNNING", "2025-01-01T00:00:00Z"], [state, "2025-01-01T00:01:05Z"]],
            "calls": [
                {
                    "function": "main",
                    "args": [],
                    "kwargs": {},
                    "time": "2025-01-01T00:00:00Z",
                    "finished": "2025-01-01T00:01:05Z",
                    "result": {"ok": True},
                }
            ],
        }
    )


def test_piped_tables_are_plain_aligned_text() -> None:
    out = io.StringIO()
    Output(out=out, err=io.StringIO()).summaries([_summary(1, "COMPLETE"), _summary(12, "FAILED")])
    assert out.getvalue().splitlines() == [
        "ID  STATE     SCRIPT        STARTED               DURATION  RESULT / ERROR",
        '1   COMPLETE  file:///s.py  2025-01-01 00:00:00Z  1m05s     {"ok": true}',
        '12  FAILED    file:///s.py  2025-01-01 00:00:00Z  1m05s     {"ok": true}',
    ]


def test_a_terminal_gets_colour_unless_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    tty = FakeTerminal()
    Output(out=tty, err=FakeTerminal()).summaries([_summary(1, "COMPLETE")])
    assert "\x1b[" in tty.getvalue()
    assert "COMPLETE" in tty.getvalue()

    monkeypatch.setenv("NO_COLOR", "1")
    plain_tty = FakeTerminal()
    Output(out=plain_tty, err=FakeTerminal()).line("state RUNNING", style="blue")
    assert "\x1b[" not in plain_tty.getvalue()  # NO_COLOR drops colour (not bold)


def test_events_render_as_lines_or_json_lines() -> None:
    out = io.StringIO()
    human = Output(out=out, err=io.StringIO())
    human.event(StateChange(3, ProcedureState.RUNNING))
    human.event(OutputLine(3, "hello [bold]"), show_id=False)
    human.event(UserEvent(3, "scan", {"n": 1}, None, 5))
    assert out.getvalue() == '[3] state RUNNING\nhello [bold]\n[3] event scan {"n": 1}\n'

    out = io.StringIO()
    Output(json_mode=True, out=out).event(ProgressUpdate(3, Progress(1, 4, "a")))
    assert out.getvalue() == (
        '{"type": "progress", "id": 3, "done": 1, "total": 4, "message": "a"}\n'
    )


def test_progress_view_on_a_terminal_keeps_lines_above_the_bar() -> None:
    tty = FakeTerminal()
    out = Output(out=tty, err=FakeTerminal())
    view = _ProgressView(out, _Proc(7))  # type: ignore[arg-type]
    with view.live():
        view.show(StateChange(7, ProcedureState.RUNNING))
        view.show(ProgressUpdate(7, Progress(2, 4, "half")))
        view.show(OutputLine(7, "a line"))
    assert "a line" in tty.getvalue()
    assert "state RUNNING" in tty.getvalue()


class _Proc:
    def __init__(self, pid: int) -> None:
        self.id = pid


def test_values() -> None:
    assert parse_value("3") == 3
    assert parse_value("[1, 2]") == [1, 2]
    assert parse_value("true") is True
    assert parse_value("null") is None
    assert parse_value('"7"') == "7"
    assert parse_value("Moon") == "Moon"
    assert parse_value("NaN") == "NaN"  # not JSON the device accepts: a string
    assert parse_kwargs(["a=1", "b=x=y", "c="]) == {"a": 1, "b": "x=y", "c": ""}
    for bad in (["=1"], ["a"], ["1a=2"], ["a=1", "a=2"]):
        with pytest.raises(UsageError):
            parse_kwargs(bad)
    assert format_duration(timedelta(milliseconds=5)) == "5ms"
    assert format_duration(timedelta(seconds=12.34)) == "12.3s"
    assert format_duration(timedelta(seconds=245)) == "4m05s"
    assert format_duration(timedelta(hours=2, minutes=3)) == "2h03m"
    assert format_duration(None) == ""
    assert format_bytes(999) == "999 B"
    assert format_bytes(1_500_000) == "1.5 MB"
    assert shorten("a\nb  c", 10) == "a b c"
    assert shorten("x" * 20, 5) == "xxxx…"


DEEP = "file:///usr/share/tango-oet/scripts/observations/2025/north/field_a.py"
DEEPER = "file:///home/astro/obs/a/very/deep/directory/structure/here/field_b_long_name.py"


@pytest.mark.parametrize("width", [200, 120, 100, 80, 60, 40, 30, 20])
def test_a_terminal_list_keeps_each_script_file_name_at_any_width(width: int) -> None:
    tty = FakeTerminal()
    out = Output(out=tty, err=FakeTerminal())
    out.console = Console(file=tty, width=width, color_system=None, highlight=False)
    out.summaries([_summary(1, "COMPLETE", DEEP), _summary(12, "FAILED", DEEPER)])
    lines = tty.getvalue().splitlines()
    assert all(len(line.rstrip()) <= width for line in lines), lines
    text = "".join(line.strip() for line in lines) if width <= 30 else tty.getvalue()
    assert "field_a.py" in text and "field_b_long_name.py" in text, lines
    if width >= 40:  # each on one line, with its id and state
        rows = [line.split() for line in lines[1:]]
        assert [r[:2] for r in rows] == [["1", "COMPLETE"], ["12", "FAILED"]], lines
        assert rows[0][2].endswith("/field_a.py") and rows[1][2].endswith("/field_b_long_name.py")
        assert rows[0][2].startswith("file:///") or rows[0][2].startswith("…/")
    if width >= 100:
        assert lines[0].split()[:4] == ["ID", "STATE", "SCRIPT", "STARTED"], lines
        assert lines[1].split()[2].startswith("file:///usr/"), lines  # the start stays too
    if width >= 200:
        assert DEEP in lines[1] and DEEPER in lines[2], lines  # room enough: whole


def test_an_empty_list_on_a_terminal_is_just_the_header() -> None:
    tty = FakeTerminal()
    out = Output(out=tty, err=FakeTerminal())
    out.console = Console(file=tty, width=100, color_system=None)
    out.summaries([])
    header = "ID STATE SCRIPT STARTED DURATION RESULT / ERROR"
    assert tty.getvalue().split() == header.split()


def test_elide_middle_keeps_the_start_and_the_file_name() -> None:
    uri = "file:///usr/share/tango-oet/scripts/obs/field_a.py"
    assert elide_middle(uri, 80) == uri
    assert elide_middle(uri, 28) == "file:///usr/…/obs/field_a.py"
    assert elide_middle(uri, 20) == "file:///…/field_a.py"
    assert elide_middle(uri, 5) == "…/field_a.py"  # the name stays, even wider than asked
    for width in range(12, len(uri)):
        short = elide_middle(uri, width)
        assert len(short) <= width and short.endswith("/field_a.py"), (width, short)
    assert elide_middle("/home/me/a/b/c/d/script.py", 20) == "/home/…/d/script.py"
    assert elide_middle("embedded://a_long_embedded_name", 10) == "embedded://a_long_embedded_name"
    assert elide_middle("no slash at all in this", 10) == "no slash …"
