"""Containment with real processes: nothing a script started outlives its procedure or its server.

Every test runs under both mechanisms where the host allows: a cgroup v2 per worker, and the
degraded subreaper + environment-marker fallback. The script reports the pids it started
through its call's result (the double-forked daemons through a close-on-exec pipe, so the
result arrives only once they have exec'ed); nothing here waits by sleeping.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tango_oet.execution import messages as m
from tango_oet.execution import procfs
from tango_oet.execution.containment import Containment
from tango_oet.execution.launcher import ContextLauncher, InterpreterLauncher, WorkerProcess
from tango_oet.execution.messages import decode_worker
from tango_oet.execution.procfs import ProcessId

REPO = Path(__file__).resolve().parents[2]
GONE_WITHIN_S = 5.0

SCRIPT = textwrap.dedent("""
    import os, signal, subprocess, time

    def _daemon(execute):
        # fork, setsid, fork: the classic daemon, whose parent is gone at once.
        r, w = os.pipe()  # close-on-exec: EOF on r tells that the daemon has exec'ed
        pid = os.fork()
        if pid == 0:
            try:
                os.close(r)
                os.setsid()
                if os.fork() != 0:
                    os._exit(0)
                os.write(w, b"%d" % os.getpid())
                if execute:
                    os.execvp("sleep", ["sleep", "1003"])
                os.close(w)
                while True:
                    signal.pause()
            finally:
                os._exit(1)
        os.close(w)
        os.waitpid(pid, 0)
        data = b""
        while chunk := os.read(r, 64):
            data += chunk
        os.close(r)
        return int(data)

    def _forked_child():
        # forked without exec and without setsid: same session as the worker
        pid = os.fork()
        if pid == 0:
            try:
                while True:
                    signal.pause()
            finally:
                os._exit(1)
        return pid

    def spawn():
        child = subprocess.Popen(["sleep", "1000"])
        session = subprocess.Popen(["sleep", "1001"], start_new_session=True)
        return {
            "child": child.pid,
            "setsid": session.pid,
            "daemon_exec": _daemon(True),
            "daemon_fork": _daemon(False),
            "fork_child": _forked_child(),
        }

    def sigterm_during_cleanup():
        # The worker kills what its script left through procfs.kill_verified on its way out
        # (worker._exit). Have a SIGTERM arrive just before its first kill, as the supervisor's
        # (or the worker's own, sent when its receiver finds the pipe closed) can.
        from tango_oet.execution import procfs
        real = procfs.kill_verified
        def kill_verified(*args, **kwargs):
            procfs.kill_verified = real
            os.kill(os.getpid(), signal.SIGTERM)
            return real(*args, **kwargs)
        procfs.kill_verified = kill_verified

    def main(block=False, ignore_term=False):
        if ignore_term:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while block:
            time.sleep(3600)
""")

CRASH_DRIVER = textwrap.dedent("""
    import json, pathlib, sys
    from tango_oet.execution import messages as m
    from tango_oet.execution.containment import Containment
    from tango_oet.execution.launcher import ContextLauncher

    def run():
        token, state, use_cgroups, script = sys.argv[1:5]
        containment = Containment.for_instance(
            token, pathlib.Path(state), use_cgroups=use_cgroups == "1"
        )
        worker = ContextLauncher("forkserver", containment).launch()
        worker.handshake()
        worker.assign(7)
        worker.send(m.LoadScript, procedure_id=7, name="crash", path=None,
                    source=pathlib.Path(script).read_text())
        worker.send(m.CallFunction, call_id=0, function="spawn")
        while True:
            msg = m.decode_worker(worker.conn.recv_bytes())
            if isinstance(msg, m.ScriptFailed):
                raise SystemExit(msg.traceback)
            if isinstance(msg, m.CallReturned):
                break
        worker.send(m.CallFunction, call_id=1, function="main",
                    kwargs={"block": True, "ignore_term": True})
        print(json.dumps({**msg.result, "worker": worker.pid}), flush=True)
        sys.stdin.read()  # until the test kills this "server" with SIGKILL

    if __name__ == "__main__":
        run()
""")


# ---- helpers -------------------------------------------------------------------------------------
def _cgroups_available() -> bool:
    with tempfile.TemporaryDirectory() as state:
        probe = Containment.for_instance(f"test-probe-{os.getpid()}", Path(state))
        probe.close()
        return probe.mechanism == "cgroup"


CGROUPS = _cgroups_available()
MECHANISMS = [
    pytest.param(
        "cgroup", marks=pytest.mark.skipif(not CGROUPS, reason="no writable cgroup v2 here")
    ),
    "subreaper",
]


class Guard:
    """Processes a test started: killed (verified) at the end whatever happened."""

    def __init__(self) -> None:
        self.procs: list[ProcessId] = []
        self.containments: list[Containment] = []

    def track(self, pids: dict[str, int]) -> dict[str, ProcessId]:
        idents = {}
        for name, pid in pids.items():
            ident = procfs.identify(pid)
            assert ident is not None, f"{name} ({pid}) is not running"
            idents[name] = ident
            self.procs.append(ident)
        return idents

    def cleanup(self) -> None:
        for c in self.containments:
            c.close()
        procfs.kill_verified(self.procs, wait_s=5.0)


@pytest.fixture
def guard() -> Iterator[Guard]:
    g = Guard()
    yield g
    g.cleanup()


@pytest.fixture(params=MECHANISMS)
def mechanism(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def make_containment(
    guard: Guard, state: Path, mechanism: str, token: str | None = None
) -> Containment:
    c = Containment.for_instance(
        token or f"test-{uuid.uuid4().hex[:12]}", state, use_cgroups=mechanism == "cgroup"
    )
    assert c.mechanism == mechanism
    guard.containments.append(c)
    return c


def receive_until(worker: WorkerProcess, kind: type) -> Any:
    seen: list[object] = []
    while True:
        assert worker.conn.poll(15), f"no {kind.__name__} after {seen!r}"
        msg = decode_worker(worker.conn.recv_bytes())
        seen.append(msg)
        if isinstance(msg, m.ScriptFailed):
            raise AssertionError(msg.traceback)
        if isinstance(msg, kind):
            return msg


def start_spawning_worker(
    guard: Guard, containment: Containment, procedure_id: int = 1, interpreter: bool = False
) -> tuple[WorkerProcess, dict[str, ProcessId]]:
    """A worker whose script has started every kind of child; their identities."""
    launcher: ContextLauncher | InterpreterLauncher
    if interpreter:
        launcher = InterpreterLauncher(Path(sys.executable), REPO, containment=containment)
    else:
        launcher = ContextLauncher("forkserver", containment)
    worker = launcher.launch()
    me = guard.track({"worker": worker.pid})
    worker.handshake()
    worker.assign(procedure_id)
    worker.send(
        m.LoadScript, procedure_id=procedure_id, name="containment", path=None, source=SCRIPT
    )
    receive_until(worker, m.Loaded)
    worker.send(m.CallFunction, call_id=0, function="spawn")
    result = receive_until(worker, m.CallReturned).result
    assert isinstance(result, dict)
    return worker, {**me, **guard.track(result)}


def assert_all_gone(procs: dict[str, ProcessId], timeout: float = GONE_WITHIN_S) -> None:
    """Every process ends (a zombie has ended) within `timeout`; else name the survivors."""
    alive = {name: p for name, p in procs.items() if _alive(p)}
    fds = {}
    for name, p in alive.items():
        fd = procfs.open_verified(p)
        if fd is not None:
            fds[fd] = name
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    pending = dict(fds)
    deadline = time.monotonic() + timeout
    while pending and (left := deadline - time.monotonic()) > 0:
        for fd, _ in poller.poll(left * 1000):
            poller.unregister(fd)
            pending.pop(fd)
    for fd in fds:
        os.close(fd)
    survivors = {pending[fd]: alive[pending[fd]] for fd in pending}
    assert not survivors, f"still alive after {timeout} s: {survivors}"


def _alive(p: ProcessId) -> bool:
    stat = procfs.read_stat(p.pid)
    return stat is not None and stat.start_time == p.start_time and stat.alive


def finish(worker: WorkerProcess) -> None:
    """What the supervisor does once a worker is gone: reap it, then close (release) it."""
    info = worker.reap(timeout=15)
    assert info is not None, f"worker {worker.pid} did not exit"
    worker.close()


# ---- procedure end: normal, Stop, SIGKILL, the supervisor's kill ---------------------------------
def test_normal_end_kills_every_descendant(guard: Guard, tmp_path: Path, mechanism: str) -> None:
    containment = make_containment(guard, tmp_path, mechanism)
    worker, procs = start_spawning_worker(guard, containment)
    worker.send(m.CallFunction, call_id=1, function="main")
    receive_until(worker, m.CallReturned)
    finish(worker)
    assert_all_gone(procs)
    assert containment.placements() == []
    assert list((tmp_path / "workers").iterdir()) == []


def test_stop_kills_every_descendant(guard: Guard, tmp_path: Path, mechanism: str) -> None:
    containment = make_containment(guard, tmp_path, mechanism)
    worker, procs = start_spawning_worker(guard, containment)
    worker.send(m.CallFunction, call_id=1, function="main", kwargs={"block": True})
    # The supervisor's ladder: a cooperative stop (ignored: the script sleeps), then SIGTERM.
    worker.send(m.StopScript)
    worker.signal(signal.SIGTERM)
    finish(worker)
    assert_all_gone(procs)


def test_a_sigterm_during_the_workers_cleanup_does_not_interrupt_it(
    guard: Guard, tmp_path: Path, mechanism: str
) -> None:
    """The script has ended and the worker is killing what it left: a late SIGTERM must not
    abort that (in subreaper mode nothing else finds a forked daemon that did not exec)."""
    containment = make_containment(guard, tmp_path, mechanism)
    worker, procs = start_spawning_worker(guard, containment)
    worker.send(m.CallFunction, call_id=1, function="sigterm_during_cleanup")
    receive_until(worker, m.CallReturned)
    worker.send(m.CallFunction, call_id=2, function="main")
    receive_until(worker, m.CallReturned)
    info = worker.reap(timeout=15)
    worker.close()
    assert_all_gone(procs)
    assert info is not None and info.exitcode == 0, info  # main returned: a clean exit


def test_worker_sigkilled_from_outside(guard: Guard, tmp_path: Path, mechanism: str) -> None:
    """The worker cannot clean up: the server finds what it left (cgroup, or marker + session)."""
    containment = make_containment(guard, tmp_path, mechanism)
    worker, procs = start_spawning_worker(guard, containment)
    os.kill(worker.pid, signal.SIGKILL)
    finish(worker)
    if mechanism == "subreaper":
        # The documented gap of the fallback: forked without exec AND a session of its own,
        # orphaned by an abrupt death, it carries no marker the server can find.
        escaped = procs.pop("daemon_fork")
        assert _alive(escaped)
    assert_all_gone(procs)


def test_supervisor_kill_of_a_live_worker_kills_its_tree(
    guard: Guard, tmp_path: Path, mechanism: str
) -> None:
    """kill_group (the ladder's SIGKILL rung) reaches everything, daemons included."""
    containment = make_containment(guard, tmp_path, mechanism)
    worker, procs = start_spawning_worker(guard, containment)
    worker.send(m.CallFunction, call_id=1, function="main", kwargs={"ignore_term": True})
    worker.kill_group()
    assert_all_gone(procs)
    finish(worker)


def test_kill_procedure_reports_what_it_killed(
    guard: Guard, tmp_path: Path, mechanism: str
) -> None:
    containment = make_containment(guard, tmp_path, mechanism)
    worker, procs = start_spawning_worker(guard, containment, procedure_id=42)
    assert containment.kill_procedure(41) is None
    report = containment.kill_procedure(42)
    assert report is not None and report.accounted
    assert report.procedure_id == 42 and report.worker_pid == worker.pid
    assert {(k.pid, k.start_time) for k in report.killed} == {
        (p.pid, p.start_time) for p in procs.values()
    }
    assert any("sleep 1003" in k.cmdline for k in report.killed)
    assert_all_gone(procs)
    finish(worker)


def test_interpreter_worker_is_contained(guard: Guard, tmp_path: Path, mechanism: str) -> None:
    """`python -m tango_oet.execution.worker FD` (git environments) gets the same placement."""
    containment = make_containment(guard, tmp_path, mechanism)
    worker, procs = start_spawning_worker(guard, containment, interpreter=True)
    assert procfs.environ_value(worker.pid) == containment.placements()[0].marker
    os.kill(worker.pid, signal.SIGKILL)
    finish(worker)
    if mechanism == "subreaper":
        procs.pop("daemon_fork")  # the documented gap, as above
    assert_all_gone(procs)


# ---- server crash: the next start sweeps ---------------------------------------------------------
@pytest.mark.parametrize("stuck", [False, True], ids=["running-worker", "stopped-worker"])
def test_sweep_after_a_server_crash_kills_everything(
    guard: Guard, tmp_path: Path, mechanism: str, stuck: bool
) -> None:
    """kill -9 of the server. A running worker also cleans up after itself once it sees its
    pipe close; a stopped (SIGSTOP) one cannot, so then the sweep alone must kill everything."""
    token = f"test-{uuid.uuid4().hex[:12]}"
    state = tmp_path / "state"
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    driver = tmp_path / "driver.py"
    driver.write_text(CRASH_DRIVER)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    server = subprocess.Popen(
        [
            sys.executable,
            str(driver),
            token,
            str(state),
            "1" if mechanism == "cgroup" else "0",
            str(script),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()  # the handshake: every process is started
        if not line:
            server.wait(10)
            assert server.stderr is not None
            raise AssertionError(f"driver failed: {server.stderr.read().decode()}")
        procs = guard.track(json.loads(line))
        if stuck:
            procfs.kill_verified([procs["worker"]], sig=signal.SIGSTOP)
    finally:
        server.kill()
        server.wait(10)
        for stream in (server.stdin, server.stdout, server.stderr):
            assert stream is not None
            stream.close()
    # A restarted server: same instance, same state directory.
    containment = make_containment(guard, state, mechanism, token=token)
    reports = containment.sweep()
    if stuck:
        # The sweep waits until what it killed has ended: nothing may be left now.
        assert not [name for name, p in procs.items() if _alive(p)]
    assert_all_gone(procs)
    mine = [r for r in reports if r.procedure_id == 7]
    assert len(mine) == 1, reports
    assert mine[0].worker_pid == procs["worker"].pid and mine[0].accounted
    assert list((state / "workers").iterdir()) == []
    assert containment.sweep() == [] or all(not r.killed for r in containment.sweep())


def test_sweep_leaves_the_current_run_alone(guard: Guard, tmp_path: Path, mechanism: str) -> None:
    containment = make_containment(guard, tmp_path, mechanism)
    worker, procs = start_spawning_worker(guard, containment)
    assert all(not r.killed for r in containment.sweep())
    assert all(_alive(p) for p in procs.values())
    worker.kill_group()
    finish(worker)
    assert_all_gone(procs)


def test_close_kills_every_worker_of_the_run(guard: Guard, tmp_path: Path, mechanism: str) -> None:
    """Server stop: whatever the supervisor did not end, close() does."""
    containment = make_containment(guard, tmp_path, mechanism)
    worker, procs = start_spawning_worker(guard, containment)
    reports = containment.close()
    assert_all_gone(procs)
    assert any(r.worker_pid == worker.pid for r in reports)
    finish(worker)


# ---- pid reuse -----------------------------------------------------------------------------------
def _write_record(state: Path, token: str, instance: str, proc: ProcessId) -> None:
    record = {
        "version": 1,
        "instance": instance,
        "boot_id": procfs.boot_id(),
        "pid": proc.pid,
        "start_time": proc.start_time,
        "cgroup": None,
        "procedure_id": 3,
    }
    (state / "workers" / f"{token}.json").write_text(json.dumps(record))


def test_a_recorded_pid_with_another_start_time_is_never_killed(
    guard: Guard, tmp_path: Path
) -> None:
    victim = subprocess.Popen(["sleep", "1000"])
    try:
        ident = procfs.identify(victim.pid)
        assert ident is not None
        instance = f"test-{uuid.uuid4().hex[:12]}"
        make_containment(guard, tmp_path, "subreaper", token=instance)
        # The pid was a worker of a crashed run; it now belongs to an unrelated process.
        _write_record(tmp_path, "deadbeef-1", instance, ProcessId(ident.pid, ident.start_time - 1))
        reports = make_containment(guard, tmp_path, "subreaper", token=instance).sweep()
        assert victim.poll() is None, "an unrelated process holding a recorded pid was killed"
        assert [r.killed for r in reports if r.worker == "deadbeef-1"] == [()]
        assert not procfs.kill_verified([ProcessId(ident.pid, ident.start_time + 1)])[0]
        assert victim.poll() is None
        # The same record with the true start time does kill it: the check above can fail.
        _write_record(tmp_path, "deadbeef-2", instance, ident)
        reports = make_containment(guard, tmp_path, "subreaper", token=instance).sweep()
        assert victim.wait(GONE_WITHIN_S) == -signal.SIGKILL
        assert [len(r.killed) for r in reports if r.worker == "deadbeef-2"] == [1]
    finally:
        if victim.poll() is None:
            victim.kill()
        victim.wait()


def test_records_of_another_boot_are_dropped_unused(guard: Guard, tmp_path: Path) -> None:
    victim = subprocess.Popen(["sleep", "1000"])
    try:
        ident = procfs.identify(victim.pid)
        assert ident is not None
        instance = f"test-{uuid.uuid4().hex[:12]}"
        make_containment(guard, tmp_path, "subreaper", token=instance)
        _write_record(tmp_path, "deadbeef-1", instance, ident)
        path = tmp_path / "workers" / "deadbeef-1.json"
        path.write_text(path.read_text().replace(procfs.boot_id(), "another-boot"))
        make_containment(guard, tmp_path, "subreaper", token=instance).sweep()
        assert victim.poll() is None and not path.exists()
    finally:
        victim.kill()
        victim.wait()


# ---- degrading loudly ----------------------------------------------------------------------------
def test_fallback_says_what_it_cannot_guarantee(guard: Guard, tmp_path: Path) -> None:
    containment = make_containment(guard, tmp_path, "subreaper")
    assert containment.warning is not None
    assert "subreaper" in containment.warning and "escapes" in containment.warning


@pytest.mark.skipif(not CGROUPS, reason="no writable cgroup v2 here")
def test_cgroup_mode_has_no_warning(guard: Guard, tmp_path: Path) -> None:
    assert make_containment(guard, tmp_path, "cgroup").warning is None


@pytest.mark.skipif(not CGROUPS, reason="no writable cgroup v2 here")
def test_a_worker_outside_its_cgroup_degrades_loudly_and_is_still_contained(
    guard: Guard, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    containment = make_containment(guard, tmp_path, "cgroup")
    real_place = containment.place

    def place_somewhere_unwritable():  # type: ignore[no-untyped-def]
        placement = real_place()
        assert placement.cgroup is not None
        placement.cgroup.rmdir()  # the worker cannot enter it
        return placement

    monkeypatch.setattr(containment, "place", place_somewhere_unwritable)
    worker, procs = start_spawning_worker(guard, containment)
    assert containment.warning is not None and "could not enter its cgroup" in containment.warning
    worker.kill_group()  # the subreaper fallback still reaches every descendant
    assert_all_gone(procs)
    finish(worker)


def test_an_unusable_state_directory_degrades_loudly_and_still_kills(
    guard: Guard, tmp_path: Path, mechanism: str
) -> None:
    (tmp_path / "a-file").write_text("")
    containment = make_containment(guard, tmp_path / "a-file" / "state", mechanism)
    assert containment.warning is not None and "cannot record workers" in containment.warning
    worker, procs = start_spawning_worker(guard, containment)
    worker.kill_group()
    assert_all_gone(procs)
    finish(worker)


def test_invalid_instance_token_is_rejected(tmp_path: Path) -> None:
    from tango_oet.execution.containment import ContainmentError

    with pytest.raises(ContainmentError, match="instance token 'a/b'"):
        Containment.for_instance("a/b", tmp_path)
