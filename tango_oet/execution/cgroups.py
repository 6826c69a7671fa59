"""The cgroup v2 operations containment needs: find the hierarchy, create, fill, kill, remove.

A cgroup holds every descendant of the processes put in it, whatever they do (setsid, double
fork, clearing their environment): membership is inherited at fork and only a privileged
process can leave. `cgroup.kill` (Linux >= 5.14) kills all members atomically; on older kernels
the members are frozen, then killed one by one through verified pidfds.
"""

from __future__ import annotations

import os
import select
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from tango_oet.execution import procfs


class CgroupError(Exception):
    """The unified cgroup hierarchy is missing, unreadable or not writable."""


@dataclass(frozen=True)
class Hierarchy:
    """A mounted cgroup2 file system, and where this process sits in it."""

    mount: Path  # e.g. /sys/fs/cgroup or /sys/fs/cgroup/unified
    mount_root: str  # the cgroup path shown at `mount` (not "/" inside some containers)
    own: Path  # this process's cgroup directory

    @classmethod
    def find(cls) -> Hierarchy:
        mount, root = _cgroup2_mount()
        own = _own_cgroup_path()
        rel = own
        if root != "/":
            if not (own == root or own.startswith(root.rstrip("/") + "/")):
                raise CgroupError(f"this process's cgroup {own} is outside the mount at {mount}")
            rel = own[len(root.rstrip("/")) :] or "/"
        return cls(mount=mount, mount_root=root, own=mount / rel.lstrip("/"))

    def name_of(self, path: Path) -> str:
        """The cgroup path /proc/<pid>/cgroup shows for members of the directory `path`."""
        rel = path.relative_to(self.mount).as_posix()
        base = self.mount_root.rstrip("/")
        return f"{base}/{rel}" if rel != "." else (self.mount_root or "/")

    def contains(self, path: Path, pid: int) -> bool:
        if not path.is_relative_to(self.mount):
            return False
        return cgroup_of(pid) == self.name_of(path)


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    out, i = [], 0
    while i < len(field):
        code = field[i + 1 : i + 4]
        if field[i] == "\\" and len(code) == 3 and code.isdigit():
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def _cgroup2_mount() -> tuple[Path, str]:
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise CgroupError(f"cannot read /proc/self/mountinfo: {exc}") from exc
    for line in lines:
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if tail and tail[0] == "cgroup2" and len(fields) >= 5:
            return Path(_unescape(fields[4])), _unescape(fields[3])
    raise CgroupError("no cgroup2 file system is mounted")


def _own_cgroup_path() -> str:
    name = cgroup_of(os.getpid())
    if name is None:
        raise CgroupError("/proc/self/cgroup has no cgroup v2 entry")
    return name


def cgroup_of(pid: int) -> str | None:
    """The unified-hierarchy cgroup path of `pid` ("0::<path>" in /proc/<pid>/cgroup)."""
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8") as f:
            for line in f:
                if line.startswith("0::"):
                    return line[3:].rstrip("\n")
    except OSError:
        return None
    return None


def procs(path: Path) -> list[int]:
    """Pids of the live members of the cgroup (empty if it is gone)."""
    try:
        with open(path / "cgroup.procs", encoding="ascii") as f:
            return [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return []


def populated(path: Path) -> bool:
    """Whether the cgroup or any cgroup below it has a live process."""
    try:
        with open(path / "cgroup.events", encoding="ascii") as f:
            for line in f:
                key, _, value = line.partition(" ")
                if key == "populated":
                    return value.strip() != "0"
    except FileNotFoundError:
        return False
    return False


def move(path: Path, pid: int) -> None:
    with open(path / "cgroup.procs", "w", encoding="ascii") as f:
        f.write(str(pid))


def has_kill_file(path: Path) -> bool:
    return (path / "cgroup.kill").exists()


def kill(hierarchy: Hierarchy, path: Path) -> None:
    """SIGKILL every member of the cgroup (and of cgroups below it)."""
    try:
        with open(path / "cgroup.kill", "w", encoding="ascii") as f:
            f.write("1")
        return
    except FileNotFoundError:
        if not path.exists():
            return
    _kill_members(hierarchy, path)


def _kill_members(hierarchy: Hierarchy, path: Path) -> None:
    """Without cgroup.kill: freeze (so no member forks meanwhile), kill each verified member."""
    frozen = _set_frozen(path, True)
    try:
        for _ in range(100):
            members = procs(path)
            if not members:
                return
            for pid in members:
                try:
                    fd = os.pidfd_open(pid)
                except OSError:
                    continue
                try:
                    # Checked after opening the pidfd: still a member, so the pidfd is one.
                    if hierarchy.contains(path, pid):
                        signal.pidfd_send_signal(fd, signal.SIGKILL)
                except OSError:
                    pass
                finally:
                    os.close(fd)
            if not frozen:
                wait_empty(path, 0.05)
    finally:
        if frozen:
            _set_frozen(path, False)


def _set_frozen(path: Path, frozen: bool) -> bool:
    try:
        with open(path / "cgroup.freeze", "w", encoding="ascii") as f:
            f.write("1" if frozen else "0")
        return True
    except OSError:
        return False


def wait_empty(path: Path, timeout: float) -> bool:
    """Wait until no live process is left in the cgroup; True if it is empty."""
    deadline = time.monotonic() + timeout
    try:
        fd = os.open(path / "cgroup.events", os.O_RDONLY)
    except FileNotFoundError:
        return True
    try:
        poller = select.poll()
        # cgroup.events signals a change of "populated" as POLLPRI.
        poller.register(fd, select.POLLPRI)
        while True:
            os.lseek(fd, 0, os.SEEK_SET)
            if b"populated 0" in os.read(fd, 4096):
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            poller.poll(left * 1000)
    finally:
        os.close(fd)


def remove(path: Path) -> bool:
    """rmdir the cgroup (children first); False if a live process still holds it."""
    try:
        path.rmdir()  # the usual case, a leaf: no need to list its ~20 control files
        return True
    except FileNotFoundError:
        return True
    except OSError:
        pass
    try:
        for child in path.iterdir():
            if child.is_dir():
                remove(child)
        path.rmdir()
        return True
    except FileNotFoundError:
        return True
    except OSError:
        return False


def members(hierarchy: Hierarchy, path: Path) -> list[procfs.ProcStat]:
    """Live members of the cgroup and of cgroups below it, with their identities."""
    found: list[procfs.ProcStat] = []
    dirs = [path, *sorted(p for p in path.rglob("*") if p.is_dir())] if path.exists() else []
    for d in dirs:
        for pid in procs(d):
            stat = procfs.read_stat(pid)
            if stat is not None:
                found.append(stat)
    return found
