"""Where command output goes and how it looks: rich on a terminal, plain text when piped, JSON.

Only a terminal gets colour and boxes (rich, which also honours NO_COLOR); piped output is
written without rich at all, so it never contains ANSI escape codes. `--json` replaces the
human output of every command with JSON on stdout (one document, or JSON Lines for streams).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from tango_oet.cli.values import format_duration, shorten
from tango_oet.client.events import Event, OutputLine, ProgressUpdate, StateChange, StreamError
from tango_oet.client.summary import Summary
from tango_oet.domain.states import ProcedureState

STATE_STYLE: dict[ProcedureState, str] = {
    ProcedureState.READY: "cyan",
    ProcedureState.RUNNING: "bold blue",
    ProcedureState.PAUSED: "yellow",
    ProcedureState.STOPPING: "yellow",
    ProcedureState.COMPLETE: "green",
    ProcedureState.STOPPED: "magenta",
    ProcedureState.FAILED: "bold red",
    ProcedureState.UNKNOWN: "bold red",
}


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def iso_short(when: datetime | None) -> str:
    """`2025-01-02 10:11:12Z` (UTC, seconds): what the tables show."""
    if when is None:
        return ""
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


class Output:
    """stdout/stderr of one command run."""

    def __init__(
        self, json_mode: bool = False, out: TextIO | None = None, err: TextIO | None = None
    ) -> None:
        self.json_mode = json_mode
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr
        self.tty = _is_tty(self.out)
        self.console = Console(file=self.out, highlight=False) if self.tty else None
        err_tty = _is_tty(self.err)
        self.err_console = Console(file=self.err, highlight=False) if err_tty else None

    # ---- primitives --------------------------------------------------------------------------
    def line(self, text: str = "", style: str | None = None) -> None:
        """A line of human output (never in --json mode)."""
        if self.json_mode:
            return
        if self.console is not None:
            self.console.print(Text(text, style=style or ""), soft_wrap=True)
        else:
            self.out.write(text + "\n")
            self.out.flush()

    def json(self, obj: Any) -> None:
        """One JSON document on one line (used for documents and for JSON Lines streams)."""
        self.out.write(json.dumps(obj, default=str, ensure_ascii=False) + "\n")
        self.out.flush()

    def note(self, text: str) -> None:
        """Information for a person, on stderr, so it never mixes with data on stdout."""
        if self.err_console is not None:
            self.err_console.print(Text(text, style="dim"), soft_wrap=True)
        else:
            self.err.write(text + "\n")
            self.err.flush()

    def error(self, text: str) -> None:
        if self.err_console is not None:
            self.err_console.print(Text("tango-oet: ", style="bold red") + Text(text))
        else:
            self.err.write(f"tango-oet: {text}\n")
            self.err.flush()

    def table(
        self, headers: Sequence[str], rows: Sequence[Sequence[str]], styles: Sequence[str] = ()
    ) -> None:
        """Aligned columns: a rich table on a terminal, plain space-separated text otherwise.

        `styles` holds one style per row (terminal only), e.g. the colour of its state.
        """
        if self.json_mode:
            return
        if self.console is not None:
            table = Table(*headers, header_style="bold", box=None, pad_edge=False)
            for i, row in enumerate(rows):
                table.add_row(*row, style=styles[i] if i < len(styles) else None)
            self.console.print(table)
            return
        widths = [len(h) for h in headers]
        for row in rows:
            widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
        for row in [list(headers), *rows]:
            cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=True)]
            self.out.write("  ".join(cells).rstrip() + "\n")
        self.out.flush()

    # ---- the things commands show ------------------------------------------------------------
    def state_style(self, state: ProcedureState) -> str:
        return STATE_STYLE.get(state, "")

    def summaries(self, summaries: Sequence[Summary]) -> None:
        headers = ("ID", "STATE", "SCRIPT", "STARTED", "DURATION", "RESULT / ERROR")
        # Shorten for a human's terminal only: piped output is for programs, keep it whole.
        fit = shorten if self.console is not None else _whole
        rows = [
            (
                str(s.id),
                s.state.name,
                fit(s.script_uri, 50),
                iso_short(s.started),
                format_duration(s.duration()),
                fit(s.outcome(), 60),
            )
            for s in summaries
        ]
        self.table(headers, rows, [self.state_style(s.state) for s in summaries])

    def summary(self, s: Summary) -> None:
        """`describe`: everything about one procedure, errors with their traceback."""
        self.line(f"procedure {s.id}: {s.state.name}", style=f"bold {self.state_style(s.state)}")
        script = s.script_uri
        if s.git_commit:
            script += f" @ {s.git_commit}"
        self.line(f"  script      {script} ({s.script_kind})")
        if s.environment:
            self.line(f"  environment {s.environment}")
        self.line(f"  init        {_call_text('init', s.init_args, s.init_kwargs)}")
        if s.pid is not None:
            self.line(f"  pid         {s.pid}")
        if s.started:
            self.line(f"  started     {iso_short(s.started)}")
        if s.ended:
            self.line(f"  ended       {iso_short(s.ended)} after {format_duration(s.duration())}")
        if s.progress is not None:
            self.line(f"  progress    {s.progress}")
        self.line("  history")
        first = s.history[0][1] if s.history else None
        for state, when in s.history:
            offset = f"+{format_duration(when - first)}" if when and first else ""
            self.line(f"    {state.name:<13}{iso_short(when):<22}{offset}")
        if s.calls:
            self.line("  calls")
        for call in s.calls:
            text = _call_text(call.function, call.args, call.kwargs)
            if call.finished is not None:
                result = json.dumps(call.result, default=str)
                self.line(f"    {text} -> {result}  ({iso_short(call.time)})")
            else:
                self.line(f"    {text}  (since {iso_short(call.time)}, not finished)")
        if s.error is not None:
            self.line(f"  error       {s.error.one_line()}", style="red")
            if s.error.traceback:
                self.line("  traceback")
                for tb_line in s.error.traceback.rstrip().splitlines():
                    self.line(f"    {tb_line}")

    def event(self, item: Event, show_id: bool = True) -> None:
        """One live event as a line (listen, run)."""
        if self.json_mode:
            self.json(item.to_json())
            return
        text = str(item)
        if not show_id and not isinstance(item, StreamError):
            text = text.split("] ", 1)[-1]
        style = ""
        if isinstance(item, StateChange):
            style = self.state_style(item.state)
        elif isinstance(item, ProgressUpdate):
            style = "cyan"
        elif isinstance(item, OutputLine):
            style = ""
        elif isinstance(item, StreamError):
            style = "red"
        else:
            style = "yellow"
        self.line(text, style=style)


def _call_text(function: str, args: Sequence[Any], kwargs: dict[str, Any]) -> str:
    parts = [json.dumps(a, default=str) for a in args]
    parts += [f"{k}={json.dumps(v, default=str)}" for k, v in kwargs.items()]
    return f"{function}({', '.join(parts)})"


def _whole(text: str, width: int) -> str:
    return text
