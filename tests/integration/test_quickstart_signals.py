"""A real `tango-oet up` whose stdout pipe was closed (`./dev up 2>&1 | tee up.log`, then
Ctrl-C, which ends `tee` too) stops everything it started on SIGINT, SIGTERM and SIGHUP: the
database, the server, its forkserver and a running procedure's worker (issue 13)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import tango

from tango_oet.device.registration import probe
from tests.integration.conftest import REPO
from tests.integration.processes import free_port
from tests.integration.test_quickstart import devices_file

pytestmark = [pytest.mark.integration, pytest.mark.tango]

CONSOLE_SCRIPT = Path(sys.executable).with_name("tango-oet")
WAIT_FILE = REPO / "resources" / "scripts" / "tests" / "dev_wait_file.py"


def _wait_for(what: str, check: Callable[[], object], timeout: float) -> object:
    """Poll another process's state until `check` returns something true; raise with the last."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.05)  # polling processes we cannot block on
    raise AssertionError(f"{what} not within {timeout} s (last: {last!r})")


class Reaper:
    """Kills, at the end whatever happened, the processes of one `up`: those recorded, their
    descendants, and any process whose environment points at its database (children of an
    `up` that died early are reparented away from it), so a failure leaves nothing behind."""

    def __init__(self, tango_host: str, data_dir: Path) -> None:
        self.tango_host = tango_host
        self.db_file = str(data_dir / "tango_database.db")
        self.procs: list[psutil.Process] = []

    def _ours(self, p: psutil.Process) -> bool:
        try:
            env: dict[str, str] = p.environ()
        except (psutil.Error, OSError):
            return False
        return (
            env.get("TANGO_HOST") == self.tango_host
            or env.get("PYTANGO_DATABASE_NAME") == self.db_file
        )

    def kill_all(self) -> None:
        found = set(self.procs)
        for p in self.procs:
            try:
                found.update(p.children(recursive=True))
            except psutil.Error:
                pass
        found.update(p for p in psutil.process_iter() if p.pid != os.getpid() and self._ours(p))
        for p in found:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(list(found), timeout=10)


@pytest.fixture
def reaper(tmp_path: Path) -> Iterator[Reaper]:
    port = free_port()
    kept = Reaper(f"127.0.0.1:{port}", tmp_path / "oet-data")
    yield kept
    kept.kill_all()


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=str)
def test_up_with_a_closed_stdout_stops_everything_on_a_signal(
    tmp_path: Path, sig: signal.Signals, reaper: Reaper
) -> None:
    path = devices_file(tmp_path, "sig", "test/oet/sig")
    data_dir = tmp_path / "oet-data"
    env = {**os.environ, "TANGO_HOST": reaper.tango_host}
    # Unbuffered, as a user watching `| tee` wants it: every line reaches the pipe at once,
    # so the first line after the pipe closed meets EPIPE (`up` also flushes each line).
    env["PYTHONUNBUFFERED"] = "1"
    up = subprocess.Popen(
        [str(CONSOLE_SCRIPT), "up", "--devices", str(path), "--data-dir", str(data_dir)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # 2>&1
        cwd=tmp_path,
        env=env,
    )
    reaper.procs.append(psutil.Process(up.pid))
    assert up.stdout is not None
    trl = f"tango://{reaper.tango_host}/test/oet/sig"
    try:
        _wait_for("the device ready", lambda: up.poll() is not None or probe(trl, True)[0], 90)
        assert up.poll() is None, up.stdout.read().decode(errors="replace")
        # Its first line says where its log is (the lines are there: the device answers).
        log = data_dir.resolve() / "logs" / "up.log"
        assert up.stdout.readline().decode() == f"log {log} (the servers' logs are beside it)\n"
        proxy = tango.DeviceProxy(trl)
        request = {"script": f"file://{WAIT_FILE}", "init": {"args": [str(tmp_path / "never")]}}
        pid = proxy.Prepare(json.dumps(request))
        proxy.Start(json.dumps({"id": pid, "function": "main", "force": True}))

        def worker() -> int | None:
            summary = json.loads(proxy.Describe(pid))
            running = summary["state"] == "RUNNING"
            return int(summary["pid"]) if running and summary.get("pid") else None

        worker_pid = _wait_for("the procedure RUNNING in a worker", worker, 60)
        tree = _tree(up.pid)
        reaper.procs.extend(tree)
        assert worker_pid in {p.pid for p in tree}, [p.pid for p in tree]
        assert len(tree) >= 5, tree  # up, database, server, forkserver, worker
    finally:
        up.stdout.close()  # the reader of the pipe is gone (`tee` ended with Ctrl-C)

    up.send_signal(sig)
    up.wait(timeout=60)
    _, alive = psutil.wait_procs(tree, timeout=10)
    assert not alive, [(p.pid, p.cmdline()) for p in alive]
    logged = log.read_text()
    assert "stopping OETScheduler/sig" in logged and "stopped" in logged, logged
    assert up.returncode == 0, logged
