"""Command-line values: JSON-or-string arguments, `key=value` keyword arguments, durations."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from datetime import timedelta
from typing import Any


class UsageError(Exception):
    """The command line is wrong (exit code 2), as opposed to a failure (exit code 1)."""


def parse_value(text: str) -> Any:
    """`42` -> 42, `[1, 2]` -> [1, 2], `true` -> True, `"x"` -> "x"; anything else: the text."""
    try:
        return json.loads(text, parse_constant=_no_constant)
    except ValueError:
        return text


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON the device accepts")


def parse_kwargs(items: Iterable[str], option: str = "--kwarg") -> dict[str, Any]:
    """`["n=3", "name=Moon"]` -> {"n": 3, "name": "Moon"}; names must be identifiers."""
    kwargs: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise UsageError(f"{option} {item!r}: expected NAME=VALUE with NAME an identifier")
        if key in kwargs:
            raise UsageError(f"{option} {key} given twice")
        kwargs[key] = parse_value(value)
    return kwargs


def format_duration(delta: timedelta | None) -> str:
    """Short human duration: `850ms`, `12.3s`, `4m05s`, `2h03m`."""
    if delta is None:
        return ""
    seconds = delta.total_seconds()
    if seconds < 1:
        return f"{max(0, math.floor(seconds * 1000))}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def format_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


def shorten(text: str, width: int) -> str:
    """One line, at most `width` characters (an ellipsis marks the cut)."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: max(0, width - 1)] + "…"
