"""Containment: every process descended from a worker is found and killed, even after a crash.

Two mechanisms, chosen once per server by probing the host (see docs/containment.md):

  cgroup       each worker moves itself into its own cgroup v2 under
               <server's cgroup>/tango-oet/<instance>/<run>-<n>; everything it starts stays
               there (setsid and double fork included) and `cgroup.kill` ends it all at once.
  subreaper    (degraded, with a warning) the worker becomes a child subreaper, so orphans
               reparent to it while it lives, and kills its whole tree before it exits; the
               server kills the tree of a live worker itself, and finds what a dead worker
               left through an inherited environment marker and the worker's session id.

Both also record each worker (pid + start time, cgroup, procedure id) under `state_dir`, so a
new server can `sweep()` what a crashed one left. Nothing is ever killed by pid alone: see
`procfs`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tango_oet.execution import cgroups, procfs
from tango_oet.execution.procfs import MARKER_ENV, ProcessId

log = logging.getLogger(__name__)

CGROUP_ENV = "OET_CONTAINMENT_CGROUP"
CGROUP_DIR = "tango-oet"
RECORD_VERSION = 1
RECORD_BYTES = 4096
RELEASE_WAIT_S = 1.0  # for SIGKILLed leftovers to end before their cgroup is removed
SWEEP_WAIT_S = 5.0
_TOKEN = re.compile(r"[A-Za-z0-9_.-]{1,64}")

Mechanism = Literal["cgroup", "subreaper"]

#: Worker-side arguments: (environment marker, cgroup directory or None).
WorkerArgs = tuple[str, str | None]


class ContainmentError(Exception):
    """Containment was configured with an invalid instance token."""


@dataclass(frozen=True)
class KilledProcess:
    """A process containment signalled (or found alive after SIGKILL)."""

    pid: int
    start_time: int
    cmdline: str


@dataclass(frozen=True)
class KillReport:
    """What one worker's containment killed; `survivors` were still alive after the wait."""

    worker: str  # the placement token, "<run>-<n>"
    procedure_id: int | None
    worker_pid: int | None
    killed: tuple[KilledProcess, ...] = ()
    survivors: tuple[KilledProcess, ...] = ()

    @property
    def accounted(self) -> bool:
        """Everything found is dead: nothing of this worker is left running."""
        return not self.survivors


def instance_token(*parts: str) -> str:
    """A valid instance token naming e.g. (device name, data directory): stable and unique."""
    import hashlib

    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]
    return f"oet-{digest}"


class Placement:
    """Where one worker lives: its marker and cgroup, then its identity and procedure."""

    def __init__(self, owner: Containment, token: str, cgroup: Path | None) -> None:
        self._owner = owner
        self.token = token
        self.marker = f"{owner.instance}:{token}"
        self.cgroup = cgroup
        self.in_cgroup = cgroup is not None  # until verify() finds otherwise
        self.worker: ProcessId | None = None
        self.procedure_id: int | None = None
        self.released = False
        self.record_fd: int | None = None  # the record file, kept open for in-place rewrites

    def worker_args(self) -> WorkerArgs:
        """Arguments for `worker_main` (forkserver/spawn workers)."""
        return self.marker, str(self.cgroup) if self.cgroup is not None else None

    def environment(self) -> dict[str, str]:
        """Environment for `python -m tango_oet.execution.worker` (other interpreters)."""
        env = {MARKER_ENV: self.marker}
        if self.cgroup is not None:
            env[CGROUP_ENV] = str(self.cgroup)
        return env

    def bind(self, pid: int) -> None:
        """The worker process exists: record its identity (call right after starting it)."""
        self._owner._bind(self, pid)

    def verify(self) -> None:
        """After the worker's handshake: check that it is in its cgroup (degrades loudly if not)."""
        self._owner._verify(self)

    def assign(self, procedure_id: int) -> None:
        """The worker now runs `procedure_id` (recorded, so a sweep can name it)."""
        self._owner._assign(self, procedure_id)

    def signal(self, sig: int) -> bool:
        """Send `sig` to the worker only (e.g. SIGTERM), if it is still that process."""
        if self.worker is None:
            return False
        return bool(procfs.kill_verified([self.worker], sig=sig)[0])

    def kill(self, wait_s: float = 0.0) -> KillReport:
        """SIGKILL the worker and everything it started; waits up to `wait_s` for them to end."""
        return self._owner._kill(self, wait_s)

    def release(self) -> KillReport:
        """The worker has been reaped (or is being discarded): kill leftovers, forget it."""
        return self._owner._release(self)


class Containment:
    """Accounts for every worker of one server instance and the processes under it."""

    def __init__(
        self,
        instance: str,
        state_dir: Path,
        hierarchy: cgroups.Hierarchy | None,
        base: Path | None,
        warning: str | None,
    ) -> None:
        self.instance = instance
        self.state_dir = state_dir
        self.run = secrets.token_hex(4)
        self._hierarchy = hierarchy
        self._base = base
        self._warnings: list[str] = [warning] if warning else []
        self._lock = threading.Lock()
        self._seq = 0
        self._placements: dict[str, Placement] = {}
        self._boot = procfs.boot_id()
        self._records = state_dir / "workers"
        try:
            self._records.mkdir(parents=True, exist_ok=True)
            self._records_ok = True
        except OSError as exc:
            # Killing must work without the records; only a sweep after a crash loses detail.
            self._records_ok = False
            self._warnings.append(
                f"cannot record workers in {self._records} ({exc}): after a crash, the next"
                " start finds leftovers only by cgroup and environment marker"
            )
            log.warning("process containment degraded: %s", self._warnings[-1])
        if base is not None:
            self._remember_base(base)

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def for_instance(
        cls, instance_token: str, state_dir: Path, *, use_cgroups: bool = True
    ) -> Containment:
        """Detect what the host offers; `.warning` says what is missing when degraded."""
        if not _TOKEN.fullmatch(instance_token):
            raise ContainmentError(
                f"instance token {instance_token!r} must be 1-64 characters of A-Z a-z 0-9 _ . -"
            )
        hierarchy, base, warning = None, None, None
        if use_cgroups:
            try:
                hierarchy = cgroups.Hierarchy.find()
                base = hierarchy.own / CGROUP_DIR / instance_token
                _probe(hierarchy, base)
            except (cgroups.CgroupError, OSError, subprocess.SubprocessError) as exc:
                hierarchy, base = None, None
                warning = f"no cgroup v2 containment ({exc})"
        else:
            warning = "cgroup v2 containment disabled"
        if warning is not None:
            warning += (
                "; falling back to a child-subreaper worker and an environment marker: a"
                " process that a script forked without exec, or started with a cleared"
                " environment, escapes if its worker dies abruptly (SIGKILL, crash)"
            )
            if procfs.is_child_subreaper() is None:
                warning += "; prctl(PR_SET_CHILD_SUBREAPER) is unavailable too"
            log.warning("process containment degraded: %s", warning)
        return cls(instance_token, state_dir, hierarchy, base, warning)

    @property
    def mechanism(self) -> Mechanism:
        return "cgroup" if self._base is not None else "subreaper"

    @property
    def warning(self) -> str | None:
        """What containment cannot guarantee on this host (for Status and the log), or None."""
        with self._lock:
            return "; ".join(self._warnings) if self._warnings else None

    def _degrade(self, reason: str) -> None:
        with self._lock:
            if reason in self._warnings:
                return
            self._warnings.append(reason)
        log.warning("process containment degraded: %s", reason)

    # ---- placing workers ---------------------------------------------------------------------
    def place(self) -> Placement:
        """A placement for one new worker (its cgroup created); pass it to the launcher."""
        with self._lock:
            self._seq += 1
            token = f"{self.run}-{self._seq}"
        cgroup = None
        if self._base is not None:
            cgroup = self._base / token
            try:
                cgroup.mkdir(parents=True)
            except OSError as exc:
                self._degrade(f"cannot create cgroup {cgroup}: {exc}")
                cgroup = None
        placement = Placement(self, token, cgroup)
        with self._lock:
            self._placements[token] = placement
        return placement

    def placements(self) -> list[Placement]:
        with self._lock:
            return list(self._placements.values())

    def placement_of(self, procedure_id: int) -> Placement | None:
        with self._lock:
            for p in self._placements.values():
                if p.procedure_id == procedure_id:
                    return p
        return None

    def kill_procedure(
        self, procedure_id: int, wait_s: float = RELEASE_WAIT_S
    ) -> KillReport | None:
        """Kill the worker of `procedure_id` and all under it; None if no worker runs it."""
        placement = self.placement_of(procedure_id)
        return placement.kill(wait_s) if placement is not None else None

    def _bind(self, placement: Placement, pid: int) -> None:
        placement.worker = procfs.identify(pid)
        if placement.worker is None:
            return  # already gone: release() cleans up
        self._write_record(placement)

    def _verify(self, placement: Placement) -> None:
        if placement.cgroup is None or placement.worker is None or self._hierarchy is None:
            return
        if not self._hierarchy.contains(placement.cgroup, placement.worker.pid):
            placement.in_cgroup = False
            self._degrade(
                f"worker {placement.worker.pid} could not enter its cgroup {placement.cgroup}"
                " (see the worker's stderr); it relies on the subreaper fallback"
            )

    def _assign(self, placement: Placement, procedure_id: int) -> None:
        placement.procedure_id = procedure_id
        if placement.worker is not None:
            self._write_record(placement)

    # ---- killing -----------------------------------------------------------------------------
    def _kill(self, placement: Placement, wait_s: float) -> KillReport:
        noted: dict[ProcessId, str] = {}
        survivors: list[ProcessId] = []
        if placement.in_cgroup and placement.cgroup is not None and self._hierarchy is not None:
            for stat in cgroups.members(self._hierarchy, placement.cgroup):
                noted[stat.ident] = procfs.cmdline(stat.pid)
            cgroups.kill(self._hierarchy, placement.cgroup)
            if wait_s > 0 and not cgroups.wait_empty(placement.cgroup, wait_s):
                survivors = [s.ident for s in cgroups.members(self._hierarchy, placement.cgroup)]
        else:
            if placement.worker is not None:
                _, survivors = procfs.kill_tree(
                    placement.worker, include_root=True, wait_s=wait_s, note=_noter(noted)
                )
            # What a worker that died abruptly left behind is no longer in its tree.
            found = _scan_marked(lambda marker: marker == placement.marker)
            found += _scan_session(placement.worker)
            _, alive = procfs.kill_verified(found, wait_s, note=_noter(noted))
            survivors += alive
        return _report(placement.token, placement.procedure_id, placement.worker, noted, survivors)

    def _release(self, placement: Placement) -> KillReport:
        with self._lock:
            if placement.released:
                return KillReport(placement.token, placement.procedure_id, _pid(placement.worker))
            placement.released = True
        if (
            placement.in_cgroup
            and placement.cgroup is not None
            and not cgroups.populated(placement.cgroup)
        ):
            report = KillReport(placement.token, placement.procedure_id, _pid(placement.worker))
        else:
            report = self._kill(placement, RELEASE_WAIT_S)
        if placement.cgroup is not None and not cgroups.remove(placement.cgroup):
            log.error("cannot remove cgroup %s: a process in it survived SIGKILL", placement.cgroup)
        if report.accounted:
            self._drop_record(placement)
            with self._lock:
                self._placements.pop(placement.token, None)
        else:
            log.error("worker %s: processes survived SIGKILL: %s", placement.token, report)
            with self._lock:
                placement.released = False  # close() and the next sweep try again
        return report

    def sweep(self) -> list[KillReport]:
        """At server start: kill everything a previous run of this instance left behind."""
        reports: dict[str, KillReport] = {}
        records = self._read_records()
        for token, record in records.items():
            reports[token] = self._sweep_record(token, record)
        for base in self._known_bases():
            for cgroup in _children(base):
                token = cgroup.name
                if token.startswith(self.run + "-") or token in reports:
                    continue
                reports[token] = self._sweep_cgroup(token, None, None, cgroup)
        # Processes only the marker names (subreaper mode, or moved out of a cgroup).
        by_token: dict[str, list[ProcessId]] = {}
        prefix = self.instance + ":"
        for proc, marker in _scan_markers(lambda mk: mk.startswith(prefix)):
            token = marker[len(prefix) :]
            if not token.startswith(self.run + "-"):
                by_token.setdefault(token, []).append(proc)
        for token, procs in by_token.items():
            noted: dict[ProcessId, str] = {}
            _, alive = procfs.kill_verified(procs, SWEEP_WAIT_S, note=_noter(noted))
            old = reports.get(token, KillReport(token, None, None))
            extra = _report(token, old.procedure_id, None, noted, alive)
            reports[token] = KillReport(
                token,
                old.procedure_id,
                old.worker_pid,
                old.killed + extra.killed,
                old.survivors + extra.survivors,
            )
        for report in reports.values():
            if report.killed or report.survivors:
                log.warning("containment sweep: %s", report)
        return list(reports.values())

    def close(self) -> list[KillReport]:
        """Server stop: kill every worker of this run and everything under them."""
        reports = [p.kill(RELEASE_WAIT_S) for p in self.placements()]
        reports = [r for r in reports if r.killed or r.survivors]
        for placement in self.placements():
            placement.release()
        prefix = f"{self.instance}:{self.run}-"
        left = _scan_markers(lambda mk: mk.startswith(prefix))
        if left:
            noted: dict[ProcessId, str] = {}
            _, alive = procfs.kill_verified([p for p, _ in left], RELEASE_WAIT_S, _noter(noted))
            reports.append(_report(f"{self.run}-*", None, None, noted, alive))
        if self._base is not None:
            cgroups.remove(self._base)
        return reports

    # ---- sweeping a previous run -------------------------------------------------------------
    def _sweep_record(self, token: str, record: dict[str, Any]) -> KillReport:
        procedure_id = record.get("procedure_id")
        path = self._record_path(token)
        if record.get("boot_id") != self._boot:
            _unlink(path)  # another boot: none of its processes exists now
            return KillReport(token, procedure_id, None)
        worker = None
        if isinstance(record.get("pid"), int) and isinstance(record.get("start_time"), int):
            worker = ProcessId(record["pid"], record["start_time"])
        cgroup = Path(record["cgroup"]) if record.get("cgroup") else None
        report = self._sweep_cgroup(token, procedure_id, worker, cgroup)
        if report.accounted:
            _unlink(path)
        return report

    def _sweep_cgroup(
        self, token: str, procedure_id: int | None, worker: ProcessId | None, cgroup: Path | None
    ) -> KillReport:
        noted: dict[ProcessId, str] = {}
        survivors: list[ProcessId] = []
        if cgroup is not None and self._hierarchy is not None and cgroup.exists():
            for stat in cgroups.members(self._hierarchy, cgroup):
                noted[stat.ident] = procfs.cmdline(stat.pid)
            cgroups.kill(self._hierarchy, cgroup)
            if not cgroups.wait_empty(cgroup, SWEEP_WAIT_S):
                survivors = [s.ident for s in cgroups.members(self._hierarchy, cgroup)]
            cgroups.remove(cgroup)
        if worker is not None:
            # No session scan here (unlike right after a reap): the worker may have died long
            # ago, and a new session leader may hold its pid by now.
            _, alive = procfs.kill_tree(worker, True, SWEEP_WAIT_S, note=_noter(noted))
            survivors += alive
        return _report(token, procedure_id, worker, noted, survivors)

    # ---- records -----------------------------------------------------------------------------
    def _record_path(self, token: str) -> Path:
        return self._records / f"{token}.json"

    def _write_record(self, placement: Placement) -> None:
        assert placement.worker is not None
        if not self._records_ok:
            return
        record = {
            "version": RECORD_VERSION,
            "instance": self.instance,
            "boot_id": self._boot,
            "pid": placement.worker.pid,
            "start_time": placement.worker.start_time,
            "cgroup": str(placement.cgroup) if placement.cgroup is not None else None,
            "procedure_id": placement.procedure_id,
        }
        # Fixed size, rewritten in place by one pwrite (~10 us, vs ~100 us to create and rename
        # a file): assign() is on the Prepare path. One pwrite below a page is not torn by a
        # crash of this process, and no fsync: a record only matters while this boot lasts.
        data = json.dumps(record).encode()
        if len(data) > RECORD_BYTES:
            self._degrade(f"worker record {placement.token} exceeds {RECORD_BYTES} bytes")
            return
        try:
            if placement.record_fd is None:
                placement.record_fd = os.open(
                    self._record_path(placement.token), os.O_RDWR | os.O_CREAT, 0o644
                )
            os.pwrite(placement.record_fd, data.ljust(RECORD_BYTES), 0)
        except OSError as exc:
            self._degrade(f"cannot record worker {placement.token} in {self._records}: {exc}")

    def _drop_record(self, placement: Placement) -> None:
        if placement.record_fd is not None:
            os.close(placement.record_fd)
            placement.record_fd = None
        _unlink(self._record_path(placement.token))

    def _read_records(self) -> dict[str, dict[str, Any]]:
        records: dict[str, dict[str, Any]] = {}
        if not self._records_ok:
            return records
        for path in sorted(self._records.glob("*.json")):
            token = path.stem
            if token.startswith(self.run + "-"):
                continue
            try:
                text = path.read_text(encoding="utf-8")
                if not text.strip():
                    _unlink(path)  # created, never written: the cgroup/marker scans cover it
                    continue
                record = json.loads(text)
            except (OSError, ValueError) as exc:
                log.error("unreadable containment record %s (%s): kept aside as .bad", path, exc)
                try:
                    path.rename(path.with_suffix(".bad"))
                except OSError:
                    pass
                continue
            if isinstance(record, dict) and record.get("instance") == self.instance:
                records[token] = record
        return records

    def _remember_base(self, base: Path) -> None:
        # If the server's own cgroup moves between runs, a sweep must still find the old one.
        path = self.state_dir / "cgroup-bases.json"
        bases = self._known_bases()
        if base in bases:
            return
        try:
            path.write_text(json.dumps([str(b) for b in [*bases, base]]), encoding="utf-8")
        except OSError as exc:
            self._degrade(f"cannot record the cgroup base in {path}: {exc}")

    def _known_bases(self) -> list[Path]:
        bases = [self._base] if self._base is not None else []
        try:
            saved = json.loads((self.state_dir / "cgroup-bases.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            saved = []
        for entry in saved if isinstance(saved, list) else []:
            if isinstance(entry, str) and Path(entry) not in bases:
                bases.append(Path(entry))
        return bases


# ---- helpers -----------------------------------------------------------------------------------
_probed: dict[Path, str | None] = {}
_probe_lock = threading.Lock()


def _probe(hierarchy: cgroups.Hierarchy, base: Path) -> None:
    """Raise CgroupError/OSError unless a process can be put in a cgroup below `base` and killed.

    Done once per server process and cgroup (the answer does not change), with a real child.
    """
    with _probe_lock:
        if base.parent in _probed:
            error = _probed[base.parent]
            if error is not None:
                raise cgroups.CgroupError(error)
            base.mkdir(parents=True, exist_ok=True)
            return
        try:
            _probe_once(hierarchy, base)
            _probed[base.parent] = None
        except (cgroups.CgroupError, OSError, subprocess.SubprocessError) as exc:
            _probed[base.parent] = str(exc)
            raise


def _probe_once(hierarchy: cgroups.Hierarchy, base: Path) -> None:
    base.mkdir(parents=True, exist_ok=True)
    probe = base / f"probe-{os.getpid()}"
    probe.mkdir(exist_ok=True)
    child = subprocess.Popen(
        [sys.executable, "-S", "-c", "import sys; sys.stdin.read()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        cgroups.move(probe, child.pid)
        if not hierarchy.contains(probe, child.pid):
            raise cgroups.CgroupError(f"a process moved into {probe} is not listed in it")
        if not cgroups.has_kill_file(probe):
            log.info("no cgroup.kill (kernel < 5.14): cgroups are emptied by freeze and kill")
        cgroups.kill(hierarchy, probe)
        if not cgroups.wait_empty(probe, 5.0):
            raise cgroups.CgroupError(f"killing the members of {probe} did not empty it")
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        assert child.stdin is not None
        child.stdin.close()
        cgroups.remove(probe)


def _unlink(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.error("cannot remove containment record %s: %s", path, exc)


def _children(base: Path) -> list[Path]:
    try:
        return sorted(p for p in base.iterdir() if p.is_dir())
    except OSError:
        return []


def _scan_markers(match: Callable[[str], bool]) -> list[tuple[ProcessId, str]]:
    found = []
    for stat in procfs.scan().values():
        if stat.pid == os.getpid() or not stat.alive:
            continue
        marker = procfs.environ_value(stat.pid)
        if marker is not None and match(marker):
            found.append((stat.ident, marker))
    return found


def _scan_marked(match: Callable[[str], bool]) -> list[ProcessId]:
    return [proc for proc, _ in _scan_markers(match)]


def _scan_session(worker: ProcessId | None) -> list[ProcessId]:
    """Processes still in the dead worker's session (forked without exec, no setsid).

    The worker called setsid(), so its pid is their session id. Only trusted while that pid
    is unused or still the worker itself: a new process holding the pid could lead a session
    of its own.
    """
    if worker is None:
        return []
    table = procfs.scan()
    holder = table.get(worker.pid)
    if holder is not None and holder.ident != worker:
        return []
    return [
        s.ident
        for s in table.values()
        if s.session == worker.pid
        and s.pid != worker.pid
        and s.alive
        and s.start_time >= worker.start_time
    ]


def _noter(noted: dict[ProcessId, str]) -> Callable[[ProcessId], None]:
    def note(proc: ProcessId) -> None:
        noted.setdefault(proc, procfs.cmdline(proc.pid))

    return note


def _pid(proc: ProcessId | None) -> int | None:
    return proc.pid if proc is not None else None


def _report(
    token: str,
    procedure_id: int | None,
    worker: ProcessId | None,
    noted: dict[ProcessId, str],
    survivors: Iterable[ProcessId],
) -> KillReport:
    alive = set(survivors)
    return KillReport(
        worker=token,
        procedure_id=procedure_id,
        worker_pid=_pid(worker),
        killed=tuple(
            KilledProcess(p.pid, p.start_time, cmd) for p, cmd in noted.items() if p not in alive
        ),
        survivors=tuple(KilledProcess(p.pid, p.start_time, noted.get(p, "")) for p in alive),
    )
