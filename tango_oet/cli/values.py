"""Command-line values: JSON-or-string arguments, `key=value` keyword arguments, durations,
and shortening text (a path or URI from its middle, so its file name stays)."""

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


def elide_middle(text: str, width: int) -> str:
    """A path or URI in at most `width` characters, cut in its middle: the file name stays.

    `file:///usr/share/tango-oet/scripts/obs/field_a.py` at 28 -> `file:///usr/…/obs/field_a.py`:
    the start (scheme, first directories) and the end (file name, then its directories) are
    kept whole, up to `width`. The file name is kept even when that makes it wider than
    `width` (a lost name is what this avoids); text without a `/` is shortened at its end.
    """
    line = " ".join(text.split())
    if len(line) <= width:
        return line
    cut = line.rfind("/")
    if cut < 0:
        return shorten(line, width)
    scheme, sep, _ = line.partition("://")
    # Always kept at the start: the scheme and `://`, and the root `/` of an absolute path.
    fixed = len(scheme) + len(sep) if sep and "/" not in scheme else 0
    if line.startswith("/", fixed):
        fixed += 1
    if cut < fixed:
        return line  # `embedded://NAME`: all of it is the name
    head, tail = line[:fixed], line[cut:]  # tail: "/name.py"
    if len(head) + 1 + len(tail) > width:
        return "…" + tail  # only the name fits (or not even that: it is kept whole)
    middle = line[fixed:cut].split("/")  # the directories in between, outermost first
    left, right = 0, len(middle)  # middle[left:right] is what is elided
    grew = True
    while grew and left < right:
        grew = False
        # One more directory nearest the file first, then one more at the start.
        if len(head) + 1 + len(middle[right - 1]) + 1 + len(tail) <= width:
            right -= 1
            tail = "/" + middle[right] + tail
            grew = True
        if left < right and len(head) + len(middle[left]) + 1 + 1 + len(tail) <= width:
            head += middle[left] + "/"
            left += 1
            grew = True
    if left >= right:
        return line
    return head + "…" + tail
