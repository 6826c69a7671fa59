"""Commands that follow procedures live: `listen` (watch) and `run` (prepare, start, follow)."""

from __future__ import annotations

import argparse
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn

from tango_oet.cli.commands.procedures import prepare_from_args
from tango_oet.cli.connect import connect, fault_of
from tango_oet.cli.render import Output
from tango_oet.cli.values import format_duration, parse_kwargs, parse_value
from tango_oet.client import (
    DeviceError,
    Event,
    IllegalTransition,
    Procedure,
    ProgressUpdate,
    StateChange,
    Summary,
    WaitTimeout,
)
from tango_oet.domain.states import ProcedureState

#: `run`'s exit code for each final state.
EXIT_CODES = {
    ProcedureState.COMPLETE: 0,
    ProcedureState.FAILED: 1,
    ProcedureState.STOPPED: 2,
    ProcedureState.UNKNOWN: 2,
}
EXIT_INTERRUPTED = 130


def listen(args: argparse.Namespace, out: Output) -> int:
    """Print events as they happen: of one procedure until it ends, or of all until Ctrl-C."""
    oet = connect(args.device, args.timeout)
    fault = fault_of(oet)
    if fault is not None:
        raise fault  # nothing will ever come: not a silent wait until Ctrl-C
    if args.id is not None:
        stream = oet.procedure(args.id).iter_events(output=not args.no_output)
        what = f"procedure {args.id}"
    else:
        stream = oet.events(output=not args.no_output)
        what = f"all procedures of {oet.name}"
    out.note(f"listening to {what}; Ctrl-C to stop")  # stderr: never mixes with --json
    try:
        with stream:
            for item in stream:
                out.event(item, show_id=args.id is None)
    except KeyboardInterrupt:
        pass  # the normal way to end listening
    return 0


class _ProgressView:
    """On a terminal, one progress bar under the scrolling lines; elsewhere, progress lines."""

    def __init__(self, out: Output, proc: Procedure) -> None:
        self._out = out
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        if out.console is not None and not out.json_mode:
            self._bar = Progress(
                SpinnerColumn(),
                TextColumn(f"procedure {proc.id}"),
                BarColumn(),
                TextColumn("{task.description}"),
                console=out.console,
                transient=True,
            )
            self._task = self._bar.add_task("starting", total=None)

    def live(self) -> AbstractContextManager[Any]:
        return self._bar if self._bar is not None else nullcontext()

    def show(self, item: Event) -> None:
        if self._bar is not None and self._task is not None:
            if isinstance(item, ProgressUpdate):
                p = item.progress
                self._bar.update(
                    self._task, completed=p.done, total=p.total, description=str(p.message)
                )
                return
            if isinstance(item, StateChange):
                self._bar.update(self._task, description=item.state.name)
        self._out.event(item, show_id=False)


def run(args: argparse.Namespace, out: Output) -> int:
    """Prepare, start and follow one procedure; the exit code says how it ended."""
    oet = connect(args.device, args.timeout)
    if args.embedded and args.script is not None and "://" not in args.script:
        # With --embedded FILE the script is FILE: every positional is an argument.
        args.args, args.script = [args.script, *args.args], None
    call_args = [parse_value(a) for a in args.args]
    call_kwargs = parse_kwargs(args.call_kwarg, "--call-kwarg")
    # Subscribed before Prepare, so nothing the procedure does is missed.
    stream = oet.events()
    try:
        proc = prepare_from_args(oet, args)
        stream.focus(proc.id)
    except BaseException:
        stream.close()
        raise
    out.note(f"procedure {proc.id}; Ctrl-C stops it")
    view = _ProgressView(out, proc)
    try:
        with stream, view.live():
            try:
                proc.start(args.function, *call_args, force=True, **call_kwargs)
            except IllegalTransition:
                pass  # it ended before it could start (e.g. init failed): report that below
            except DeviceError:
                _stop_quietly(proc)  # do not leave a prepared procedure behind
                raise
            running = False
            for item in stream:
                view.show(item)
                if isinstance(item, StateChange):
                    running = running or item.state is ProcedureState.RUNNING
                    # Any function but main returns the procedure to READY: that is its end.
                    if running and item.state is ProcedureState.READY:
                        break
        if args.function != "main" and proc.state is ProcedureState.READY:
            return _report_call(out, proc)
        summary = proc.wait_final(timeout=args.timeout)
    except KeyboardInterrupt:
        return _interrupted(proc, out, args.stop_timeout)
    code = EXIT_CODES.get(summary.state, 1)
    _report(out, summary, code)
    return code


def _report_call(out: Output, proc: Procedure) -> int:
    """A function other than main returned: report it, then end the procedure `run` made."""
    summary = proc.summary()
    _stop_quietly(proc)
    _report(out, summary, 0)
    return 0


def _report(out: Output, summary: Summary, code: int) -> None:
    if out.json_mode:
        out.json({"type": "summary", "exit_code": code, "summary": summary.raw})
        return
    duration = format_duration(summary.duration())
    took = f" after {duration}" if duration else ""
    state = summary.state.name
    if summary.error is not None:
        out.line(f"{state}{took}: {summary.error.one_line()}", style="bold red")
        if summary.error.traceback:
            out.note(summary.error.traceback.rstrip())
    else:
        outcome = summary.outcome()
        text = f"{state}{took}" + (f": {outcome}" if outcome else "")
        out.line(text, style=f"bold {out.state_style(summary.state)}")


def _interrupted(proc: Procedure, out: Output, stop_timeout: float) -> int:
    out.note(f"interrupted: stopping procedure {proc.id}")
    try:
        _stop_quietly(proc)
        state = proc.wait(timeout=stop_timeout)
        out.note(f"procedure {proc.id} {state.name}")
    except WaitTimeout as exc:
        out.error(str(exc))
    except KeyboardInterrupt:
        out.note(f"not waiting: procedure {proc.id} is still stopping")
    except DeviceError as exc:
        out.error(exc.message())
    return EXIT_INTERRUPTED


def _stop_quietly(proc: Procedure) -> None:
    try:
        proc.stop()
    except IllegalTransition:
        pass  # already ended (or ending)
