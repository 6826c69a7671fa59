"""Rendering without a device: terminal vs piped output, value parsing, durations."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest

from tango_oet.cli.commands.follow import _ProgressView
from tango_oet.cli.render import Output
from tango_oet.cli.values import (
    UsageError,
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


def _summary(pid: int, state: str) -> Summary:
    return Summary.from_json(
        {
            "id": pid,
            "state": state,
            "script": {"kind": "filesystem", "uri": "file:///s.py"},
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
