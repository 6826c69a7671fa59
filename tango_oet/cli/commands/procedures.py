"""Commands on procedures: prepare, start, stop, pause, resume, list, describe."""

from __future__ import annotations

import argparse
from pathlib import Path

from tango_oet.cli.connect import connect, fault_of
from tango_oet.cli.render import Output
from tango_oet.cli.values import UsageError, parse_kwargs, parse_value
from tango_oet.client import DeviceError, Git, Procedure, Scheduler


def add_script_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by `prepare` and `run`: where the script is and its init arguments."""
    parser.add_argument(
        "--arg",
        action="append",
        default=[],
        metavar="VALUE",
        help="positional argument of the script's init() (JSON if valid JSON, else a string)",
    )
    parser.add_argument(
        "--kwarg",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="keyword argument of the script's init()",
    )
    git = parser.add_argument_group("git scripts (SCRIPT is then a path inside the repository)")
    git.add_argument("--git-repo", metavar="URL", help="repository URL (https://, file://, …)")
    ref = git.add_mutually_exclusive_group()
    ref.add_argument("--branch")
    ref.add_argument("--tag")
    ref.add_argument("--commit")
    git.add_argument(
        "--create-env", action="store_true", help="run in a venv built from the repository"
    )
    parser.add_argument(
        "--embedded",
        metavar="FILE",
        help="send FILE's source with the request (embedded://NAME, NAME = SCRIPT or FILE's stem)",
    )


def prepare_from_args(oet: Scheduler, args: argparse.Namespace) -> Procedure:
    """Prepare as the script options of `args` say."""
    init_args = [parse_value(a) for a in args.arg]
    init_kwargs = parse_kwargs(args.kwarg)
    git: Git | None = None
    if args.git_repo:
        git = Git(args.git_repo, branch=args.branch, tag=args.tag, commit=args.commit)
    elif args.branch or args.tag or args.commit or args.create_env:
        raise UsageError("--branch, --tag, --commit and --create-env need --git-repo")
    script: str | None = args.script
    source: str | None = None
    if args.embedded:
        if git is not None:
            raise UsageError("--embedded and --git-repo exclude each other")
        path = Path(args.embedded)
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--embedded {path}: cannot read it: {exc}") from None
        if script is None:
            script = path.stem
    if script is None:
        raise UsageError("give a SCRIPT (a path or a file://, git://, embedded:// URI)")
    return oet.prepare(
        script,
        init_args=init_args,
        init_kwargs=init_kwargs,
        git=git,
        create_env=args.create_env,
        source=source,
    )


def prepare(args: argparse.Namespace, out: Output) -> int:
    oet = connect(args.device, args.timeout)
    proc = prepare_from_args(oet, args)
    summary = None
    if args.wait is not None:
        proc.wait("READY", timeout=args.wait)
        summary = proc.summary()
    if out.json_mode:
        body = summary.raw if summary is not None else {"id": proc.id}
        out.json(body)
    elif out.tty:
        state = summary.state.name if summary is not None else "prepared"
        out.line(f"procedure {proc.id} {state}", style="bold")
    else:
        out.line(str(proc.id))  # piped: just the id, for ID=$(tango-oet prepare …)
    return 0


def start(args: argparse.Namespace, out: Output) -> int:
    oet = connect(args.device, args.timeout)
    call_args = [parse_value(a) for a in args.args]
    kwargs = parse_kwargs(args.kwarg)
    proc = Procedure(oet, args.id)
    proc.start(args.function, *call_args, force=args.force, **kwargs)
    if out.json_mode:
        out.json({"id": proc.id, "function": args.function, "args": call_args, "kwargs": kwargs})
    else:
        out.line(f"procedure {proc.id}: {args.function} started")
    return 0


def stop(args: argparse.Namespace, out: Output) -> int:
    oet = connect(args.device, args.timeout)
    proc = Procedure(oet, args.id)
    proc.stop(abort=args.abort)
    summary = proc.wait_final(timeout=args.wait) if args.wait is not None else None
    if out.json_mode:
        out.json(summary.raw if summary is not None else {"id": proc.id, "abort": args.abort})
    elif summary is not None:
        out.line(f"procedure {proc.id} {summary.state.name}", style=out.state_style(summary.state))
    else:
        out.line(f"procedure {proc.id}: stop requested" + (" (with abort)" if args.abort else ""))
    return 0


def pause(args: argparse.Namespace, out: Output) -> int:
    proc = Procedure(connect(args.device, args.timeout), args.id)
    proc.pause()
    if out.json_mode:
        out.json({"id": proc.id, "requested": "pause"})
    else:
        out.line(f"procedure {proc.id}: pause requested (takes effect at its next checkpoint)")
    return 0


def resume(args: argparse.Namespace, out: Output) -> int:
    proc = Procedure(connect(args.device, args.timeout), args.id)
    proc.resume()
    if out.json_mode:
        out.json({"id": proc.id, "requested": "resume"})
    else:
        out.line(f"procedure {proc.id}: resumed")
    return 0


def list_(args: argparse.Namespace, out: Output) -> int:
    oet = connect(args.device, args.timeout)
    fault = fault_of(oet)
    summaries = oet.procedures()
    if fault is not None:
        # A FAULT device is an error (exit 1, its Status named), never "no procedures"; a
        # person still sees what it holds (in memory, e.g. when its disk is full).
        if summaries and not out.json_mode:
            out.summaries(summaries)
        raise fault
    if out.json_mode:
        out.json([s.raw for s in summaries])
    elif not summaries:
        out.note("no procedures")
    else:
        out.summaries(summaries)
    return 0


def describe(args: argparse.Namespace, out: Output) -> int:
    oet = connect(args.device, args.timeout)
    fault = fault_of(oet)
    if fault is not None:
        if not out.json_mode:  # as `list`: what it still holds, then the error
            try:
                out.summary(Procedure(oet, args.id).summary())
            except DeviceError:
                pass  # the FAULT is the error to report
        raise fault
    summary = Procedure(oet, args.id).summary()
    if out.json_mode:
        out.json(summary.raw)
    else:
        out.summary(summary)
    return 0
