"""A Tango client that runs as another OS user, for the access control tests.

Usage (as root): python ac_client.py <user> <device trl> <prepare argin> [Describe-id]
Prints one JSON line: what it could read, and how Prepare (and Describe) went.

Tango's access control names a client by its effective uid (getpwuid(geteuid()), lower-cased),
so the process becomes that user — after importing everything, since the interpreter of the
test venv may live where that user cannot read — and before creating any DeviceProxy, whose
first access check caches the user name for the life of the process.
"""

from __future__ import annotations

import json
import os
import pwd
import sys
from typing import Any

import tango


def become(user: str) -> None:
    entry = pwd.getpwnam(user)
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    os.environ.update({"USER": user, "LOGNAME": user, "HOME": "/tmp"})


def attempt(call: Any) -> dict[str, Any]:
    try:
        return {"ok": True, "value": call()}
    except tango.DevFailed as exc:
        return {"ok": False, "reason": exc.args[0].reason, "desc": exc.args[0].desc}


def main() -> None:
    user, trl, argin = sys.argv[1:4]
    become(user)
    proxy = tango.DeviceProxy(trl)
    report: dict[str, Any] = {
        "uid": os.geteuid(),
        "state": attempt(lambda: str(proxy.state())),
        "status": attempt(proxy.status),
        "procedures": attempt(lambda: json.loads(proxy.read_attribute("procedures").value)),
        "prepare": attempt(lambda: int(proxy.command_inout("Prepare", argin))),
    }
    if len(sys.argv) > 4:
        report["describe"] = attempt(lambda: proxy.command_inout("Describe", int(sys.argv[4])))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
