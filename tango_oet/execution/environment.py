"""Which environment variables a script sees: an allow-list (INTERFACE v2 `WorkerEnvironment`).

A script must not read the server's secrets from its environment. Each entry is a variable
name passed through from the server (`PATH`; a trailing `*` matches a prefix, `LC_*`) or a
`NAME=VALUE` set for every script. Standard library only: the worker imports it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

DEFAULT_WORKER_ENVIRONMENT: tuple[str, ...] = ("PATH", "HOME", "LANG", "LC_*", "TZ", "TANGO_HOST")

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\*?$")


def check_entries(entries: Iterable[str]) -> tuple[str, ...]:
    """The entries, each a name, a `PREFIX*` or `NAME=VALUE`; ValueError naming a bad one."""
    checked = []
    for entry in entries:
        name = entry.split("=", 1)[0]
        if not _NAME.match(name) or ("=" in entry and name.endswith("*")):
            raise ValueError(
                f"WorkerEnvironment entry {entry!r}: expected NAME, PREFIX* or NAME=VALUE"
            )
        checked.append(entry)
    return tuple(checked)


def worker_environment(source: Mapping[str, str], entries: Iterable[str]) -> dict[str, str]:
    """The environment a worker gets from `source` (the server's) under `entries`."""
    names: set[str] = set()
    prefixes: list[str] = []
    fixed: dict[str, str] = {}
    for entry in entries:
        if "=" in entry:
            name, value = entry.split("=", 1)
            fixed[name] = value
        elif entry.endswith("*"):
            prefixes.append(entry[:-1])
        else:
            names.add(entry)
    env = {k: v for k, v in source.items() if k in names or k.startswith(tuple(prefixes))}
    env.update(fixed)
    return env
