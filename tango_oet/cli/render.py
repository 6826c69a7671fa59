"""Where command output goes and how it looks: rich on a terminal, plain text when piped, JSON.

Only a terminal gets colour and boxes (rich, which also honours NO_COLOR); piped output is
written without rich at all, so it never contains ANSI escape codes. `--json` replaces the
human output of every command with JSON on stdout (one document, or JSON Lines for streams).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from rich.console import Console
from rich.table import Column, Table
from rich.text import Text

from tango_oet.cli.values import elide_middle, format_duration, shorten
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
        self,
        headers: Sequence[str],
        rows: Sequence[Sequence[str]],
        styles: Sequence[str] = (),
        whole: Collection[int] = (),
    ) -> None:
        """Aligned columns: a rich table on a terminal, plain space-separated text otherwise.

        `styles` holds one style per row (terminal only), e.g. the colour of its state.
        With `whole`, the cells were already fitted to the terminal: those columns are never
        wrapped, and the others are folded, not cut, on a terminal narrower still.
        """
        if self.json_mode:
            return
        if self.console is not None:
            columns = [
                Column(h, no_wrap=True, min_width=max([len(h), *(len(r[i]) for r in rows)]))
                if i in whole
                # Folded (never cut at the end) when even the fitted cells do not fit.
                else Column(h, overflow="fold" if whole else "ellipsis")
                for i, h in enumerate(headers)
            ]
            table = Table(*columns, header_style="bold", box=None, pad_edge=False)
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
        headers = ["ID", "STATE", "SCRIPT", "STARTED", "DURATION", "RESULT / ERROR"]
        rows = [
            [
                str(s.id),
                s.state.name,
                s.script_uri,
                iso_short(s.started),
                format_duration(s.duration()),
                " ".join(s.outcome().split()),
            ]
            for s in summaries
        ]
        styles = [self.state_style(s.state) for s in summaries]
        # Fitted to a human's terminal only: piped output is for programs, kept whole.
        if self.console is not None:
            headers, rows = _fit(headers, rows, self.console.width)
            # SCRIPT folds if even this is too wide: its file name is never cut off.
            whole = [i for i, h in enumerate(headers) if h != "SCRIPT"]
            self.table(headers, rows, styles, whole=whole)
        else:
            self.table(headers, rows, styles)

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


#: Columns of `list` (by index) that give way, in this order, on a terminal too narrow for all.
_OPTIONAL = (3, 4, 5)  # STARTED, DURATION, RESULT / ERROR
_SCRIPT, _RESULT = 2, 5
_MIN_RESULT = 16


def _fit(
    headers: list[str], rows: list[list[str]], width: int
) -> tuple[list[str], list[list[str]]]:
    """The `list` table cut to `width` columns: SCRIPT from its middle (its file name always
    stays whole), RESULT at its end, and on a narrow terminal without STARTED, DURATION,
    RESULT (in that order)."""

    def widest(i: int, cells: Sequence[str] | None = None) -> int:
        cells = [r[i] for r in rows] if cells is None else cells
        return max([len(headers[i]), *(len(c) for c in cells)])

    if not rows:
        return headers, rows
    # The least elide_middle makes of the scripts: `…/` and the file name.
    shortest = max(len(elide_middle(r[_SCRIPT], 0)) for r in rows)
    for n in range(len(_OPTIONAL) + 1):
        keep = [i for i in range(len(headers)) if i not in _OPTIONAL[:n]]
        gaps = 2 * (len(keep) - 1)  # rich's padding between columns
        fixed = sum(widest(i) for i in keep if i not in (_SCRIPT, _RESULT))
        left = width - gaps - fixed  # for SCRIPT and RESULT
        result = min(widest(_RESULT), _MIN_RESULT) if _RESULT in keep else 0
        budget = max(shortest, min(widest(_SCRIPT), left - result))
        scripts = [elide_middle(r[_SCRIPT], budget) for r in rows]
        room = left - widest(_SCRIPT, scripts)
        if room >= result:
            break
    for row, script in zip(rows, scripts, strict=True):
        row[_SCRIPT] = script
        row[_RESULT] = shorten(row[_RESULT], max(1, room))
    return [headers[i] for i in keep], [[r[i] for i in keep] for r in rows]


def _call_text(function: str, args: Sequence[Any], kwargs: dict[str, Any]) -> str:
    parts = [json.dumps(a, default=str) for a in args]
    parts += [f"{k}={json.dumps(v, default=str)}" for k, v in kwargs.items()]
    return f"{function}({', '.join(parts)})"
