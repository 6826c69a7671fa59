"""The installed `tango-oet` console script as a real child process: entry point, piped output
without ANSI codes, Ctrl-C (SIGINT) during `run` and `listen`, a probe's exit code."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tango_oet.client import ProcedureState, Scheduler
from tests.cli.conftest import Child
from tests.client.scripts import WAIT_GATE
from tests.device.harness import SCRIPTS

pytestmark = pytest.mark.tango

StartChild = Callable[..., Child]
ANSI = "\x1b["
# Colour must not depend on the environment the tests run in.
COLOUR = {"FORCE_COLOR": "", "NO_COLOR": "", "TERM": "xterm-256color"}


def test_run_through_the_console_script_has_plain_piped_output(
    child: StartChild, device: str
) -> None:
    hello = str(SCRIPTS / "hello_world.py")
    result = child("run", "--device", device, hello, "2", "--arg", "Moon", env=COLOUR).finish()
    assert result.code == 0, result.err
    assert "hello Moon (2/2)\n" in result.out
    assert "state COMPLETE\n" in result.out
    assert ANSI not in result.out and ANSI not in result.err

    listed = child("list", "--device", device, env=COLOUR).finish()
    assert listed.code == 0
    assert listed.out.splitlines()[1].split()[:2] == ["1", "COMPLETE"]
    assert ANSI not in listed.out


def test_ctrl_c_during_run_stops_the_procedure_and_exits_130(
    child: StartChild, device: str, tmp_path: Path
) -> None:
    script = tmp_path / "gate.py"
    script.write_text(WAIT_GATE)
    running = child("run", "--device", device, "--embedded", str(script), str(tmp_path / "never"))
    running.wait_out("state RUNNING")
    running.process.send_signal(signal.SIGINT)
    result = running.finish()
    assert result.code == 130, result.err
    assert "interrupted: stopping procedure 1" in result.err
    assert "procedure 1 STOPPED" in result.err
    assert Scheduler(device).procedure(1).state is ProcedureState.STOPPED


def test_listen_prints_events_of_all_procedures_until_ctrl_c(
    child: StartChild, device: str
) -> None:
    listening = child("listen", "--device", device, "--json")
    listening.wait_err("listening to all procedures")  # subscribed before this note
    oet = Scheduler(device)
    proc = oet.prepare("p", source="def main():\n    print('hi')\n    return 1\n")
    proc.start(force=True)
    listening.wait_out('"state": "COMPLETE"')
    listening.wait_out('"line": "hi"')
    listening.process.send_signal(signal.SIGINT)
    result = listening.finish()
    assert result.code == 0
    assert '{"type": "state", "id": 1, "state": "CREATING"' in result.out


def test_probe_exit_codes_for_kubernetes(child: StartChild, device: str, free_port: int) -> None:
    assert child("probe", "--device", device, "--ready").finish().code == 0
    nowhere = f"tango://127.0.0.1:{free_port}/oet/scheduler/1#dbase=no"
    gone = child("probe", "--device", nowhere).finish()
    assert gone.code == 1
    assert gone.out == ""
    assert len(gone.err.splitlines()) == 1


def test_help_and_usage_error_exit_codes(child: StartChild) -> None:
    assert child("--help").finish().code == 0
    bad = child("start").finish()
    assert bad.code == 2
    assert "the following arguments are required: ID" in bad.err
