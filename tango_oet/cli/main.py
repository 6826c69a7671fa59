"""`tango-oet`: argument parsing, dispatch to the commands, and errors as messages + exit codes.

Exit codes: 0 success; 1 failure (the device refused, could not be reached, a wait timed out);
2 usage error; `run` adds 1 FAILED / 2 STOPPED or UNKNOWN / 130 interrupted (see docs/cli.md).
Errors are one line on stderr (`tango-oet: …`) with the Tango reason and desc, never a Python
traceback; with --json a JSON `{"error": …}` object also goes to stdout.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from tango_oet.cli.commands import admin, follow, procedures
from tango_oet.cli.connect import default_device, default_tango_host
from tango_oet.cli.render import Output
from tango_oet.cli.values import UsageError
from tango_oet.client.errors import ClientError, DeviceError

PROG = "tango-oet"
DEFAULT_TIMEOUT_S = 10.0

Handler = Callable[[argparse.Namespace, Output], int]


def _add_common(parser: argparse.ArgumentParser, top: bool) -> None:
    """--device/--json/--timeout, accepted before and after the subcommand."""
    group = parser.add_argument_group("common options")
    # On subcommands the defaults are suppressed, so they do not override the top level's.
    default = argparse.SUPPRESS
    group.add_argument(
        "--device",
        default=default_device() if top else default,
        help="device name or full TRL (default: $OET_DEVICE or oet/scheduler/1)",
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=False if top else default,
        help="machine-readable JSON output",
    )
    group.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        default=DEFAULT_TIMEOUT_S if top else default,
        help=f"timeout of each call to the device (default {DEFAULT_TIMEOUT_S:g})",
    )


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Operate an OETScheduler: prepare, run, watch and stop observing scripts.",
        allow_abbrev=False,
    )
    _add_common(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parsers: dict[str, argparse.ArgumentParser] = {}

    def command(name: str, handler: Handler | None, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, allow_abbrev=False)
        _add_common(p, top=False)
        p.set_defaults(handler=handler)
        parsers[name] = p
        return p

    # `up` hands its whole command line to the quick start (it has its own --help).
    parsers["up"] = sub.add_parser(
        "up",
        add_help=False,
        help="start a Tango database if none answers, register and start OETScheduler",
    )

    p = command("register", admin.register, "register devices of a dsconfig JSON file (idempotent)")
    p.add_argument("file", metavar="FILE.json")
    p.add_argument("--instance", help="only the devices of this server instance")

    p = command("probe", admin.probe, "exit 0 if the device answers and is not FAULT")
    p.add_argument("--ready", action="store_true", help="require State ON or RUNNING")

    p = command("prepare", procedures.prepare, "prepare a procedure; prints its id")
    p.add_argument("script", nargs="?", metavar="SCRIPT", help="path or file://|git://|embedded://")
    procedures.add_script_options(p)
    p.add_argument(
        "--wait", type=float, metavar="SECONDS", help="wait until READY (fail if it ends)"
    )

    p = command("start", procedures.start, "call a function (default main) of a procedure")
    p.add_argument("id", type=int, metavar="ID")
    p.add_argument("function", nargs="?", default="main", metavar="FN")
    p.add_argument("args", nargs="*", metavar="ARG", help="arguments (JSON if valid JSON)")
    p.add_argument("--kwarg", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--force", action="store_true", help="queue the call until READY")

    p = command("stop", procedures.stop, "stop a procedure (cooperative, SIGTERM, SIGKILL)")
    p.add_argument("id", type=int, metavar="ID")
    p.add_argument("--abort", action="store_true", help="then run the abort script")
    p.add_argument("--wait", type=float, metavar="SECONDS", help="wait until it has ended")

    p = command("pause", procedures.pause, "pause a procedure at its next checkpoint")
    p.add_argument("id", type=int, metavar="ID")
    p = command("resume", procedures.resume, "resume a paused procedure")
    p.add_argument("id", type=int, metavar="ID")

    command("list", procedures.list_, "table of the procedures in the history")
    p = command("describe", procedures.describe, "everything about one procedure")
    p.add_argument("id", type=int, metavar="ID")

    p = command("listen", follow.listen, "live states, events and output (Ctrl-C ends)")
    p.add_argument("id", type=int, nargs="?", metavar="ID", help="only this procedure")
    p.add_argument("--no-output", action="store_true", help="leave out output lines")

    p = command("run", follow.run, "prepare, start and follow a script until it ends")
    p.add_argument("script", nargs="?", metavar="SCRIPT", help="path or file://|git://|embedded://")
    p.add_argument("args", nargs="*", metavar="ARG", help="arguments of the function")
    procedures.add_script_options(p)
    p.add_argument("--function", default="main", metavar="FN", help="function to call (main)")
    p.add_argument(
        "--call-kwarg", action="append", default=[], metavar="NAME=VALUE", help="of the function"
    )
    p.add_argument(
        "--stop-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="on Ctrl-C, how long to wait for the stop (30)",
    )

    p = command("envs", admin.envs, "git clones and environments on this host; --gc cleans up")
    p.add_argument("--gc", action="store_true", help="remove old entries (never one in use)")
    p.add_argument("--keep", type=int, metavar="N", help="with --gc: keep the N most recent")
    p.add_argument("--max-age-days", type=float, metavar="D", help="with --gc: unused for D days")
    p.add_argument("--data-dir", metavar="DIR", help="the server's DataDirectory")
    return parser, parsers


def _exit_code(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    return code if isinstance(code, int) else 2


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser, parsers = build_parser()
    try:
        args, extra = parser.parse_known_args(arguments)
        if args.command == "up":
            return admin.up(extra)
        if extra:
            parsers[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return _exit_code(exc)
    out = Output(json_mode=args.json)
    handler: Handler = args.handler
    try:
        with default_tango_host():
            return handler(args, out)
    except UsageError as exc:
        parsers[args.command].print_usage(sys.stderr)
        out.error(f"{args.command}: {exc}")
        return 2
    except DeviceError as exc:
        _fail(out, exc.message(), type(exc).__name__, exc.reason)
        return 1
    except ClientError as exc:  # WaitTimeout, UnexpectedFinalState
        _fail(out, str(exc), type(exc).__name__, None)
        return 1
    except KeyboardInterrupt:
        out.note("interrupted")
        return 130
    except BrokenPipeError:  # e.g. `tango-oet list | head -1`
        _silence_stdout()
        return 0


def _fail(out: Output, message: str, kind: str, reason: str | None) -> None:
    out.error(message)
    if out.json_mode:
        out.json({"error": {"type": kind, "reason": reason, "message": message}})


def _silence_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so the interpreter's final flush is quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
