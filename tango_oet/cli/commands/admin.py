"""Commands for running the service: up, register, probe (Kubernetes), envs (disk usage, GC)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import tango

from tango_oet.cli.render import Output, iso_short
from tango_oet.cli.values import UsageError, format_bytes
from tango_oet.client.errors import translated
from tango_oet.client.summary import parse_time
from tango_oet.device import quickstart, registration
from tango_oet.service.config import default_data_dir


def up(argv: Sequence[str]) -> int:
    """`tango-oet up …` is the quick start's own command line (tango_oet.device.quickstart)."""
    try:
        return quickstart.main(list(argv))
    except SystemExit as exc:  # its argparse: --help or a usage error
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except (OSError, ValueError) as exc:  # e.g. a --devices file that is missing or broken
        print(f"tango-oet up: {exc}", file=sys.stderr)
        return 1


def register(args: argparse.Namespace, out: Output) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    with translated("sys/database/2"):
        db = tango.Database()
        try:
            result = registration.register(db, path, instance=args.instance)
        except ValueError as exc:
            out.error(str(exc))
            return 1
    if out.json_mode:
        out.json(
            {
                "tango_host": f"{db.get_db_host()}:{db.get_db_port()}",
                "devices": [d.name for d in result.devices],
                "changes": result.changes,
            }
        )
    else:
        out.line(f"registered {result.summary()}")
    return 0


def probe(args: argparse.Namespace, out: Output) -> int:
    """Exit 0 if the device answers (and with --ready is ON or RUNNING); one line either way."""
    ok, message = registration.probe(args.device, ready=args.ready)
    if out.json_mode:
        out.json({"ok": ok, "device": args.device, "message": message})
    elif ok:
        out.line(message)
    else:
        out.error(message)
    return 0 if ok else 1


def _data_dir(args: argparse.Namespace, out: Output) -> Path:
    """--data-dir, else the device's DataDirectory property, else the server's default."""
    if args.data_dir:
        return Path(args.data_dir).expanduser()
    try:
        values = tango.DeviceProxy(args.device).get_property("DataDirectory")["DataDirectory"]
        configured = [str(v) for v in values if str(v).strip()]
    except (tango.DevFailed, KeyError):
        configured = []
    path = Path(configured[0]).expanduser() if configured else default_data_dir()
    source = f"DataDirectory of {args.device}" if configured else "the default"
    out.note(f"data directory {path} ({source})")
    return path


def envs(args: argparse.Namespace, out: Output) -> int:
    """Clones and environments on disk (on the server host), and garbage collection."""
    from tango_oet.environments import EnvironmentManager

    if args.keep is not None and args.keep < 0:
        raise UsageError("--keep must be >= 0")
    if (args.keep is not None or args.max_age_days is not None) and not args.gc:
        raise UsageError("--keep and --max-age-days only apply with --gc")
    data_dir = _data_dir(args, out)
    manager = EnvironmentManager(data_dir, auto_gc=False)
    try:
        removed = (
            manager.collect_garbage(keep=args.keep, max_age_days=args.max_age_days)
            if args.gc
            else []
        )
        rows = manager.usage()
    finally:
        manager.close()
    if out.json_mode:
        out.json({"data_dir": str(data_dir), "entries": rows, "removed": removed})
        return 0
    for name in removed:
        out.line(f"removed {name}")
    if not rows:
        out.note(f"no clones or environments in {data_dir}")
        return 0
    headers = ("KIND", "ID", "REPO", "COMMIT", "SIZE", "LAST USED", "IN USE")
    table = [
        (
            str(r["kind"]),
            str(r["id"]),
            str(r["repo"] or ""),
            str(r["commit"] or "")[:12],
            format_bytes(int(r["bytes"] or 0)),
            _when(r["last_used"]),
            "yes" if r["in_use"] else "",
        )
        for r in rows
    ]
    out.table(headers, table)
    total = sum(int(r["bytes"] or 0) for r in rows)
    out.line(f"{len(rows)} entries, {format_bytes(total)}")
    return 0


def _when(value: object) -> str:
    if isinstance(value, int | float):
        return iso_short(datetime.fromtimestamp(value, UTC))
    if isinstance(value, str):
        return iso_short(parse_time(value)) or value
    return json.dumps(value) if value is not None else ""
