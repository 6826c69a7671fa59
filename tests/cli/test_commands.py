"""`tango-oet` commands in-process against a real device: output, --json, errors, exit codes."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tango_oet.client import ProcedureState, Scheduler, StateChange
from tango_oet.service import ScriptExecutionService, ServiceConfig
from tests.cli.conftest import Cli
from tests.client.conftest import trl
from tests.client.helpers import take_until
from tests.client.scripts import RAISES, WAIT_GATE
from tests.device.conftest import StartDevice
from tests.device.harness import SCRIPTS, TEST_SCRIPTS

pytestmark = pytest.mark.tango

HELLO = str(SCRIPTS / "hello_world.py")


def test_prepare_start_list_and_describe(cli: Cli, device: str) -> None:
    prepared = cli("prepare", "--device", device, HELLO, "--arg", "Moon")
    assert (prepared.code, prepared.out) == (0, "1\n")  # piped: just the id
    ready = cli("prepare", HELLO, "--device", device, "--json", "--wait", "20")
    assert ready.code == 0
    assert ready.json()["state"] == "READY" and ready.json()["id"] == 2

    started = cli("start", "--device", device, "1", "main", "2")
    assert (started.code, started.out) == (0, "procedure 1: main started\n")
    Scheduler(device).procedure(1).wait("COMPLETE", timeout=20)

    listed = cli("list", "--device", device)
    assert listed.code == 0
    header, first, second = listed.out.splitlines()
    assert header.split() == [
        "ID",
        "STATE",
        "SCRIPT",
        "STARTED",
        "DURATION",
        "RESULT",
        "/",
        "ERROR",
    ]
    assert first.split()[:3] == ["1", "COMPLETE", f"file://{HELLO}"]
    assert first.endswith('"said hello 2 time(s) to Moon"')
    assert second.split() == ["2", "READY", f"file://{HELLO}"]
    assert "\x1b" not in listed.out

    as_json = cli("list", "--device", device, "--json").json()
    assert [(p["id"], p["state"]) for p in as_json] == [(1, "COMPLETE"), (2, "READY")]

    described = cli("describe", "1", "--device", device)
    assert described.code == 0
    lines = described.out.splitlines()
    assert lines[0] == "procedure 1: COMPLETE"
    assert f"  script      file://{HELLO} (filesystem)" in lines
    assert '  init        init("Moon")' in lines
    assert any(line.startswith('    main(2) -> "said hello 2 time(s) to Moon"') for line in lines)
    assert [line.split()[0] for line in lines[lines.index("  history") + 1 :][:7]] == [
        "CREATING",
        "IDLE",
        "LOADING",
        "INITIALISING",
        "READY",
        "RUNNING",
        "COMPLETE",
    ]
    assert cli("describe", "1", "--device", device, "--json").json()["calls"][0]["args"] == [2]

    stopped = cli("stop", "2", "--device", device, "--wait", "20")
    assert (stopped.code, stopped.out) == (0, "procedure 2 STOPPED\n")


def test_describe_shows_the_error_and_its_traceback(cli: Cli, device: str) -> None:
    oet = Scheduler(device)
    proc = oet.prepare(TEST_SCRIPTS / "dev_raise.py")
    proc.start("main", 7, force=True)
    proc.wait(timeout=20)
    out = cli("describe", str(proc.id), "--device", device).out
    assert "  error       ValueError: dev_raise failed on purpose with 7" in out
    assert "  traceback" in out
    assert "in _inner" in out
    listed = cli("list", "--device", device).out
    assert listed.splitlines()[1].endswith("ValueError: dev_raise failed on purpose with 7")


def test_call_arguments_are_json_when_valid_else_strings(cli: Cli, device: str) -> None:
    source = "def main(*args, **kwargs):\n    return [args, kwargs]\n"
    oet = Scheduler(device)
    proc = oet.prepare("echo", source=source)
    result = cli(
        "start", "--device", device, str(proc.id), "main", "3", "[1, 2]", "Moon", '"7"',
        "--kwarg", "flag=true", "--kwarg", "name=Luna", "--force",
    )  # fmt: skip
    assert result.code == 0, result.err
    summary = proc.wait_final(timeout=20)
    assert summary.result == [[3, [1, 2], "Moon", "7"], {"flag": True, "name": "Luna"}]


def test_pause_and_resume(cli: Cli, device: str, tmp_path: Path) -> None:
    oet = Scheduler(device)
    proc = oet.prepare("gate", source=WAIT_GATE)
    proc.start("main", str(tmp_path / "gate"), force=True)
    proc.wait("RUNNING", timeout=20)
    paused = cli("pause", str(proc.id), "--device", device)
    assert (
        paused.out
        == f"procedure {proc.id}: pause requested (takes effect at its next checkpoint)\n"
    )
    proc.wait("PAUSED", timeout=20)
    assert cli("resume", str(proc.id), "--device", device, "--json").json() == {
        "id": proc.id,
        "requested": "resume",
    }
    proc.wait("RUNNING", timeout=20)
    (tmp_path / "gate").touch()
    proc.wait("COMPLETE", timeout=20)


def test_device_errors_are_one_line_with_reason_and_desc(cli: Cli, device: str) -> None:
    unknown = cli("describe", "99", "--device", device)
    assert unknown.code == 1
    assert unknown.out == ""
    # (stderr is shared with the in-process device, which may log: look for the line)
    assert "tango-oet: OET_UnknownProcedure: no procedure with id 99\n" in unknown.err

    as_json = cli("start", "99", "--device", device, "--json")
    assert as_json.code == 1
    assert as_json.json() == {
        "error": {
            "type": "UnknownProcedure",
            "reason": "OET_UnknownProcedure",
            "message": "OET_UnknownProcedure: no procedure with id 99",
        }
    }
    outside = cli("prepare", "/etc/obs.py", "--device", device)
    assert outside.code == 1
    assert "tango-oet: OET_ScriptNotAllowed: script /etc/obs.py is outside" in outside.err
    assert "Traceback" not in outside.err


def test_a_fault_device_is_an_error_of_every_command_naming_its_status(
    cli: Cli, start_device: StartDevice
) -> None:
    def broken(config: ServiceConfig) -> ScriptExecutionService:
        raise RuntimeError("no engine today")

    faulty = trl(start_device(service_factory=broken).proxy)
    status = "The script execution engine is broken: no engine today"
    expected = f"tango-oet: {faulty} is FAULT: {status}\n"
    for argv in (["list"], ["describe", "1"], ["listen"], ["listen", "1"]):
        result = cli(*argv, "--device", faulty)
        assert result.code == 1, (argv, result)
        assert expected in result.err, (argv, result.err)  # as `probe` says it
        assert "no procedures" not in result.err and result.out == "", (argv, result)
    as_json = cli("list", "--device", faulty, "--json")
    assert as_json.code == 1
    assert as_json.json() == {
        "error": {"type": "DeviceFault", "reason": None, "message": expected[11:-1]}
    }
    # The commands that ask it to do something: the device refuses, naming its Status.
    for argv in (["prepare", HELLO], ["run", HELLO], ["probe"]):
        result = cli(*argv, "--device", faulty)
        assert result.code == 1, (argv, result)
        assert status in result.err and "Traceback" not in result.err, (argv, result.err)


def test_usage_errors_exit_2(cli: Cli, device: str) -> None:
    missing = cli("start", "--device", device)
    assert missing.code == 2
    assert "the following arguments are required: ID" in missing.err
    bad_kwarg = cli("prepare", HELLO, "--kwarg", "no-equals", "--device", device)
    assert bad_kwarg.code == 2
    assert "--kwarg 'no-equals': expected NAME=VALUE" in bad_kwarg.err
    assert cli("prepare", HELLO, "--branch", "main", "--device", device).code == 2
    assert cli("prepare", "--device", device).code == 2
    assert cli("list", "--bogus").code == 2
    assert cli("frobnicate").code == 2
    assert cli("--help").code == 0


# ---- run -------------------------------------------------------------------------------------
def test_run_complete_exits_0_and_shows_output_events_and_result(cli: Cli, device: str) -> None:
    result = cli("run", "--device", device, HELLO, "2", "--arg", "Moon")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    for expected in [
        "state RUNNING",
        "hello Moon (1/2)",
        "hello Moon (2/2)",
        'event hello {"count": 2, "target": "Moon"}',
        "progress 2/2 greeting 2",
        "state COMPLETE",
    ]:
        assert expected in lines
    assert lines[-1].startswith("COMPLETE after ")
    assert lines[-1].endswith(': "said hello 2 time(s) to Moon"')
    assert "procedure 1; Ctrl-C stops it\n" in result.err


def test_run_of_another_function_ends_when_it_returns(
    cli: Cli, device: str, tmp_path: Path
) -> None:
    script = tmp_path / "calib.py"
    script.write_text("def calibrate(n):\n    return n * 2\n\ndef main():\n    pass\n")
    result = cli("run", "--device", device, "--function", "calibrate", "--embedded",
                 str(script), "21")  # fmt: skip
    assert result.code == 0, result.err
    assert result.out.splitlines()[-1].endswith(": 42")
    # run made the procedure, so run ends it: nothing is left prepared.
    assert Scheduler(device).procedure(1).wait_final(timeout=10).state.name == "STOPPED"


def test_run_failed_exits_1_with_the_error(cli: Cli, device: str, tmp_path: Path) -> None:
    script = tmp_path / "broken.py"
    script.write_text(RAISES)
    result = cli("run", "--device", device, "--embedded", str(script))
    assert result.code == 1
    assert result.out.splitlines()[-1].startswith("FAILED after ")
    assert result.out.splitlines()[-1].endswith("RuntimeError: broken on purpose")
    assert 'File "<embedded:embedded://broken>", line 3, in main' in result.err  # traceback
    assert Scheduler(device).procedure(1).summary().script_uri == "embedded://broken"


def test_run_failing_in_init_exits_1(cli: Cli, device: str, tmp_path: Path) -> None:
    script = tmp_path / "initfail.py"
    script.write_text("def init():\n    raise KeyError('no config')\n\ndef main():\n    pass\n")
    result = cli("run", "--device", device, "--json", "--embedded", str(script))
    assert result.code == 1
    last = result.json_lines()[-1]
    assert last["exit_code"] == 1
    assert last["summary"]["error"]["type"] == "KeyError"
    assert last["summary"]["calls"] == []  # main never ran


def test_run_stopped_exits_2_and_json_lines(cli: Cli, device: str, tmp_path: Path) -> None:
    script = tmp_path / "gate.py"
    script.write_text(WAIT_GATE)
    oet = Scheduler(device)
    stream = oet.events(output=False)

    def stop_when_running() -> None:
        try:
            take_until(stream, lambda e: e == StateChange(1, ProcedureState.RUNNING))
            oet.procedure(1).stop()
        except BaseException:
            (tmp_path / "x").touch()  # `run` must end even if this failed
            raise

    stopper = threading.Thread(target=stop_when_running)
    stopper.start()
    try:
        result = cli(
            "run", "--device", device, "--json", "--embedded", str(script), str(tmp_path / "x")
        )
    finally:
        stopper.join(30)
        stream.close()
    assert result.code == 2, result.err
    items = result.json_lines()
    assert {"type": "output", "id": 1, "line": f"waiting for {tmp_path / 'x'}"} in items
    states = [i["state"] for i in items if i["type"] == "state"]
    assert states[-2:] == ["STOPPING", "STOPPED"]
    assert items[-1]["type"] == "summary" and items[-1]["exit_code"] == 2
    assert items[-1]["summary"]["state"] == ProcedureState.STOPPED.name
