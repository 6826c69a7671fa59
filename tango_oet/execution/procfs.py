"""Process identity from /proc (pid + start time) and signals that can never hit a reused pid.

Standard library only: the worker (possibly under an environment's own interpreter) uses it
too, to kill what its script left behind before it exits.

A pid alone names whichever process holds it now. A `ProcessId` pairs it with the start time
(field 22 of /proc/<pid>/stat, clock ticks since boot), and every signal here is sent through a
pidfd opened *before* the start time is checked: if the check passes, the pidfd refers to that
very process, so a pid reused between reading and signalling is never touched.
"""

from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37
MARKER_ENV = "OET_CONTAINMENT"
_MAX_KILL_ROUNDS = 200  # a tree that keeps forking is re-scanned until empty, but not forever
_SETTLE_S = 0.5  # at most, for killed processes to end before the last scan


@dataclass(frozen=True, slots=True)
class ProcessId:
    """One process, unambiguously: its pid and its start time (clock ticks since boot)."""

    pid: int
    start_time: int


@dataclass(frozen=True, slots=True)
class ProcStat:
    """The fields of /proc/<pid>/stat that containment needs."""

    pid: int
    state: str
    ppid: int
    pgrp: int
    session: int
    start_time: int

    @property
    def ident(self) -> ProcessId:
        return ProcessId(self.pid, self.start_time)

    @property
    def alive(self) -> bool:
        """Not a zombie (nor dead): it can still run code and start processes."""
        return self.state not in ("Z", "X", "x")


def read_stat(pid: int) -> ProcStat | None:
    """/proc/<pid>/stat parsed, or None if there is no such process (or it is a kernel thread)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return None
    # The command name is in parentheses and may itself hold spaces and parentheses.
    rest = data[data.rfind(b")") + 2 :].split()
    if len(rest) < 20:
        return None
    return ProcStat(
        pid=pid,
        state=rest[0].decode("ascii", "replace"),
        ppid=int(rest[1]),
        pgrp=int(rest[2]),
        session=int(rest[3]),
        start_time=int(rest[19]),
    )


def identify(pid: int) -> ProcessId | None:
    stat = read_stat(pid)
    return stat.ident if stat is not None else None


def scan() -> dict[int, ProcStat]:
    """Every process visible in /proc now (not atomic: callers re-scan until stable)."""
    table: dict[int, ProcStat] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = read_stat(int(name))
            if stat is not None:
                table[stat.pid] = stat
    return table


def descendants(root: int, table: dict[int, ProcStat]) -> list[ProcStat]:
    """Processes below `root` in the parent tree of `table` (root itself excluded)."""
    children: dict[int, list[ProcStat]] = {}
    for stat in table.values():
        children.setdefault(stat.ppid, []).append(stat)
    found: list[ProcStat] = []
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), ()):
            if child.pid != root:
                found.append(child)
                stack.append(child.pid)
    return found


def environ_value(pid: int, name: str = MARKER_ENV) -> str | None:
    """The value of `name` in the environment the process was exec'ed with, if readable."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            data = f.read()
    except OSError:
        return None
    key = name.encode() + b"="
    for entry in data.split(b"\0"):
        if entry.startswith(key):
            return entry[len(key) :].decode("utf-8", "replace")
    return None


def cmdline(pid: int, limit: int = 200) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            data = f.read(limit * 4)
    except OSError:
        return ""
    return data.replace(b"\0", b" ").decode("utf-8", "replace").strip()[:limit]


def boot_id() -> str:
    """Identifies this boot: start times recorded under another boot mean nothing."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return ""


def open_verified(proc: ProcessId) -> int | None:
    """A pidfd for `proc` if it is still that process (same start time), else None."""
    try:
        fd = os.pidfd_open(proc.pid)
    except (ProcessLookupError, OSError):
        return None
    # Checked after opening: if the start time still matches now, the pidfd names this process.
    now = identify(proc.pid)
    if now != proc:
        os.close(fd)
        return None
    return fd


def kill_verified(
    procs: Iterable[ProcessId],
    wait_s: float = 0.0,
    note: Callable[[ProcessId], None] | None = None,
    sig: int = signal.SIGKILL,
) -> tuple[list[ProcessId], list[ProcessId]]:
    """Signal each process that still is what `procs` says; (signalled, still alive after wait).

    A process whose pid now belongs to someone else (or to nobody) is skipped: never signalled.
    With `wait_s` > 0, waits (on the pidfds) up to that long for the signalled ones to end.
    `note` sees each verified process just before it is signalled (e.g. to read its cmdline).
    """
    fds: dict[int, ProcessId] = {}
    signalled: list[ProcessId] = []
    for proc in procs:
        fd = open_verified(proc)
        if fd is None:
            continue
        if note is not None:
            note(proc)
        try:
            signal.pidfd_send_signal(fd, sig)
        except ProcessLookupError:
            os.close(fd)
            continue
        except OSError:
            os.close(fd)
            continue
        signalled.append(proc)
        fds[fd] = proc
    try:
        alive = _wait_pidfds(fds, wait_s) if wait_s > 0 else dict(fds)
    finally:
        for fd in fds:
            os.close(fd)
    return signalled, list(alive.values())


def _wait_pidfds(fds: dict[int, ProcessId], wait_s: float) -> dict[int, ProcessId]:
    """Wait until every pidfd is readable (its process ended) or `wait_s` passed; the rest."""
    pending = dict(fds)
    poller = select.poll()
    for fd in pending:
        poller.register(fd, select.POLLIN)
    deadline = time.monotonic() + wait_s
    while pending:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        for fd, _ in poller.poll(left * 1000):
            poller.unregister(fd)
            pending.pop(fd, None)
    return pending


def kill_tree(
    root: ProcessId,
    include_root: bool,
    wait_s: float = 0.0,
    note: Callable[[ProcessId], None] | None = None,
) -> tuple[list[ProcessId], list[ProcessId]]:
    """SIGKILL every live descendant of `root` (re-scanning until none is left), then `root`.

    Meant for a live `root` that is a child subreaper: orphans of killed processes reparent to
    it and stay in view. Returns (signalled, still alive after `wait_s`).
    """
    signalled: list[ProcessId] = []
    if identify(root.pid) != root:
        return signalled, []
    seen: set[ProcessId] = set()
    settled = False
    for _ in range(_MAX_KILL_ROUNDS):
        new = [s.ident for s in descendants(root.pid, scan()) if s.alive and s.ident not in seen]
        if not new:
            if settled:
                break
            # Once the killed processes have ended, their orphans have been reparented: one
            # more scan then sees every survivor.
            _still_alive(signalled, _SETTLE_S)
            settled = True
            continue
        settled = False
        seen.update(new)
        done, _ = kill_verified(new, note=note)
        signalled.extend(done)
    if include_root:
        done, _ = kill_verified([root], note=note)
        signalled.extend(done)
    if wait_s <= 0:
        return signalled, []
    return signalled, _still_alive(signalled, wait_s)


def _still_alive(procs: Iterable[ProcessId], wait_s: float) -> list[ProcessId]:
    fds: dict[int, ProcessId] = {}
    for proc in procs:
        fd = open_verified(proc)
        if fd is not None:
            fds[fd] = proc
    try:
        return list(_wait_pidfds(fds, wait_s).values())
    finally:
        for fd in fds:
            os.close(fd)


def set_child_subreaper() -> bool:
    """Make this process adopt its orphaned descendants (setsid, double fork); True if it did."""
    try:
        import ctypes  # imported here: only the fallback (no cgroup) needs it

        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def is_child_subreaper() -> bool | None:
    """Whether prctl says this process is a child subreaper; None if prctl is unavailable."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        value = ctypes.c_int(0)
        if libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(value), 0, 0, 0) != 0:
            return None
        return bool(value.value)
    except (OSError, AttributeError):
        return None
