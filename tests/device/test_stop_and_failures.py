"""Stop, pause/resume and the ways a procedure can fail, as the device reports them."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import psutil
import pytest

from tests.device.conftest import StartDevice
from tests.device.harness import TEST_SCRIPTS, in_order

pytestmark = pytest.mark.tango


def _gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def test_stop_of_a_busy_script_ends_stopped(start_device: StartDevice) -> None:
    oet = start_device()
    oet.events.subscribe("State")
    pid = oet.prepare_file(TEST_SCRIPTS / "dev_busy.py")
    oet.start(pid)
    worker = oet.wait_state(pid, "RUNNING")["pid"]
    oet.stop(pid)
    summary = oet.wait_state(pid, "STOPPED")
    assert oet.transitions(pid)[-3:] == ["RUNNING", "STOPPING", "STOPPED"]
    assert summary["error"] is None
    assert _gone(worker)
    oet.events.wait("State", lambda vs: vs[-1] == "ON", "State back to ON")


def test_stop_escalates_to_sigkill_when_sigterm_is_ignored(start_device: StartDevice) -> None:
    oet = start_device(StopCooperativeSeconds=0.01, StopTermSeconds=0.3, StopKillSeconds=2.0)
    pid = oet.prepare_file(TEST_SCRIPTS / "dev_ignore_term.py")
    oet.start(pid)
    worker = oet.wait_state(pid, "RUNNING")["pid"]
    oet.stop(pid)
    oet.wait_state(pid, "STOPPED", timeout=10)
    assert oet.transitions(pid)[-2:] == ["STOPPING", "STOPPED"]
    assert _gone(worker)


def test_stop_before_the_worker_exists_ends_stopped(start_device: StartDevice) -> None:
    gate = threading.Event()
    oet = start_device(gate=gate)
    pid = oet.prepare_source("def main():\n    return 1\n")
    oet.stop(pid)
    oet.wait_state(pid, "STOPPED")
    assert oet.transitions(pid) == ["CREATING", "STOPPING", "STOPPED"]


def test_a_script_that_raises_fails_with_its_traceback(start_device: StartDevice) -> None:
    oet = start_device()
    pid = oet.prepare_file(TEST_SCRIPTS / "dev_raise.py")
    oet.start(pid, 7)
    summary = oet.wait_state(pid, "FAILED")
    error = summary["error"]
    assert error["type"] == "ValueError"
    assert "dev_raise failed on purpose with 7" in error["message"]
    assert "_inner" in error["traceback"] and "dev_raise.py" in error["traceback"]
    assert oet.proxy.read_attribute(f"procedure{pid}State").value == 11  # FAILED


def test_a_worker_killed_with_sigkill_fails_with_the_signal(
    start_device: StartDevice, tmp_path: Path
) -> None:
    oet = start_device()
    pid = oet.prepare_file(TEST_SCRIPTS / "dev_wait_file.py", str(tmp_path / "never"))
    oet.start(pid)
    worker = oet.wait_state(pid, "RUNNING")["pid"]
    os.kill(worker, signal.SIGKILL)
    summary = oet.wait_state(pid, "FAILED")
    assert summary["error"]["signal"] == "SIGKILL"
    assert summary["error"]["exitcode"] is None
    assert summary["error"]["type"] == "WorkerDied"
    assert str(worker) in summary["error"]["message"]


def test_init_failure_fails_the_procedure_before_ready(start_device: StartDevice) -> None:
    oet = start_device()
    pid = oet.prepare_source("def init():\n    raise KeyError('no config')\n")
    summary = oet.wait_state(pid, "FAILED")
    assert summary["error"]["type"] == "KeyError"
    assert "READY" not in oet.transitions(pid)


def test_pause_takes_effect_at_a_checkpoint_and_resume_continues(
    start_device: StartDevice, tmp_path: Path
) -> None:
    oet = start_device()
    gate = tmp_path / "gate"
    pid = oet.prepare_file(TEST_SCRIPTS / "dev_wait_file.py", str(gate))
    oet.start(pid)
    oet.wait_state(pid, "RUNNING")
    oet.proxy.Pause(pid)
    oet.wait_state(pid, "PAUSED")
    gate.touch()  # the script is blocked in checkpoint(): it cannot see the gate yet
    oet.proxy.Resume(pid)
    oet.wait_state(pid, "COMPLETE")
    assert in_order(oet.transitions(pid), ["RUNNING", "PAUSED", "RUNNING", "COMPLETE"])


def test_stop_with_abort_runs_the_abort_script(start_device: StartDevice, tmp_path: Path) -> None:
    marker = tmp_path / "aborted"
    abort = tmp_path / "abort.py"
    abort.write_text(
        "import pathlib\n"
        "def init(gate):\n"
        "    global _gate\n"
        "    _gate = gate\n"
        "def main():\n"
        f"    pathlib.Path({str(marker)!r}).write_text(_gate)\n"
    )
    # The abort script is the operator's (a property), not a request: it runs from outside
    # ScriptRoots.
    oet = start_device(AbortScript=str(abort))
    pid = oet.prepare_file(TEST_SCRIPTS / "dev_wait_file.py", str(tmp_path / "never"))
    oet.start(pid)
    oet.wait_state(pid, "RUNNING")
    oet.stop(pid, abort=True)
    oet.wait_state(pid, "STOPPED")
    oet.wait_state(pid + 1, "COMPLETE")
    assert oet.describe(pid)["abort_procedure"] == pid + 1
    assert marker.read_text() == str(tmp_path / "never")
