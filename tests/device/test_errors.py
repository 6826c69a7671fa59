"""Every command's error path: a stable DevFailed reason, a desc naming the field, no change."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tango

from tests.device.conftest import StartDevice
from tests.device.harness import SCRIPTS, TEST_SCRIPTS, Scheduler, procedure_attributes

pytestmark = pytest.mark.tango

INVALID = "OET_InvalidRequest"
UNKNOWN = "OET_UnknownProcedure"
ILLEGAL = "OET_IllegalTransition"
NOT_ALLOWED = "OET_ScriptNotAllowed"


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("errors")


@pytest.fixture
def oet(start_device: StartDevice) -> Iterator[Scheduler]:
    """A device with one COMPLETE procedure (id 1) and one READY procedure (id 2)."""
    scheduler = start_device()
    done = scheduler.prepare_source("def main():\n    return 1\n")
    scheduler.start(done)
    scheduler.wait_state(done, "COMPLETE")
    ready = scheduler.prepare_source("def main():\n    return 2\n\ndef other():\n    return 3\n")
    scheduler.wait_state(ready, "READY")
    assert (done, ready) == (1, 2)
    yield scheduler


def _fails(call: Any, *args: Any) -> tango.DevError:
    with pytest.raises(tango.DevFailed) as info:
        call(*args)
    error: tango.DevError = info.value.args[0]
    return error


def _snapshot(oet: Scheduler) -> tuple[str, str, list[str]]:
    attrs = procedure_attributes(oet.proxy, upto=2)
    return oet.proxy.procedures, oet.proxy.List(), attrs


PREPARE_CASES = [
    ("{not json", INVALID, "request"),
    ("[]", INVALID, "request"),
    ("{}", INVALID, "script"),
    ('{"script": 5}', INVALID, "script"),
    ('{"script": "ftp://x.py"}', INVALID, "script"),
    ('{"script": "embedded://x"}', INVALID, "source"),
    ('{"script": "embedded://x", "source": "x=1", "colour": 1}', INVALID, "colour"),
    ('{"script": "embedded://x", "source": "x=1", "init": {"args": 1}}', INVALID, "init.args"),
    ('{"script": "embedded://x", "source": "x=1", "init": {"kwargs": []}}', INVALID, "init.kwargs"),
    ('{"script": "embedded://x", "source": "x=1", "init": {"x": 1}}', INVALID, "init.x"),
    ('{"script": "file://relative/x.py"}', INVALID, "script"),
    ('{"script": "file:///etc/passwd.py"}', NOT_ALLOWED, "/etc/passwd.py"),
    (json.dumps({"script": f"file://{SCRIPTS}/no_such_script.py"}), INVALID, "no such file"),
    ('{"script": "git://x.py"}', INVALID, "git"),
]


@pytest.mark.parametrize(("argin", "reason", "named"), PREPARE_CASES)
def test_prepare_rejects(oet: Scheduler, argin: str, reason: str, named: str) -> None:
    before = _snapshot(oet)
    error = _fails(oet.proxy.Prepare, argin)
    assert (error.reason, error.origin) == (reason, "OETScheduler.Prepare")
    assert named in error.desc
    assert _snapshot(oet) == before


START_CASES = [
    ("nope", INVALID, "request"),
    ("{}", INVALID, "id"),
    ('{"id": "2"}', INVALID, "id"),
    ('{"id": 0}', INVALID, "id"),
    ('{"id": true}', INVALID, "id"),
    ('{"id": 99}', UNKNOWN, "99"),
    ('{"id": 2, "speed": 1}', INVALID, "speed"),
    ('{"id": 2, "function": "no such"}', INVALID, "function"),
    ('{"id": 2, "function": "_private"}', INVALID, "function"),
    ('{"id": 2, "function": "missing"}', INVALID, "function"),
    ('{"id": 2, "args": {}}', INVALID, "args"),
    ('{"id": 2, "kwargs": {"1x": 1}}', INVALID, "kwargs"),
    ('{"id": 2, "force": "yes"}', INVALID, "force"),
    ('{"id": 1}', ILLEGAL, "COMPLETE"),
]


@pytest.mark.parametrize(("argin", "reason", "named"), START_CASES)
def test_start_rejects(oet: Scheduler, argin: str, reason: str, named: str) -> None:
    before = _snapshot(oet)
    error = _fails(oet.proxy.Start, argin)
    assert (error.reason, error.origin) == (reason, "OETScheduler.Start")
    assert named in error.desc
    assert _snapshot(oet) == before


STOP_CASES = [
    ("", INVALID, "request"),
    ('{"id": 2, "abort": 1}', INVALID, "abort"),
    ('{"id": 2, "now": true}', INVALID, "now"),
    ('{"id": -3}', INVALID, "id"),
    ('{"id": 77}', UNKNOWN, "77"),
    ('{"id": 1}', ILLEGAL, "COMPLETE"),
    ('{"id": 2, "abort": true}', INVALID, "abort"),  # no AbortScript configured
]


@pytest.mark.parametrize(("argin", "reason", "named"), STOP_CASES)
def test_stop_rejects(oet: Scheduler, argin: str, reason: str, named: str) -> None:
    before = _snapshot(oet)
    error = _fails(oet.proxy.Stop, argin)
    assert (error.reason, error.origin) == (reason, "OETScheduler.Stop")
    assert named in error.desc
    assert _snapshot(oet) == before


ID_CASES = [
    ("Pause", 0, INVALID, "id"),
    ("Pause", 5, UNKNOWN, "5"),
    ("Pause", 2, ILLEGAL, "READY"),
    ("Pause", 1, ILLEGAL, "COMPLETE"),
    ("Resume", -1, INVALID, "id"),
    ("Resume", 2, ILLEGAL, "READY"),
    ("Resume", 1, ILLEGAL, "COMPLETE"),
    ("Describe", 0, INVALID, "id"),
    ("Describe", 3, UNKNOWN, "3"),
]


@pytest.mark.parametrize(("command", "argin", "reason", "named"), ID_CASES)
def test_id_commands_reject(
    oet: Scheduler, command: str, argin: int, reason: str, named: str
) -> None:
    before = _snapshot(oet)
    error = _fails(oet.proxy.command_inout, command, argin)
    assert (error.reason, error.origin) == (reason, f"OETScheduler.{command}")
    assert named in error.desc
    assert _snapshot(oet) == before


def test_a_rejected_command_pushes_nothing(oet: Scheduler) -> None:
    oet.events.subscribe("procedures")
    seen = len(oet.events.recorder.snapshot())
    for argin in ('{"id": 1}', '{"id": 99}', "{"):
        _fails(oet.proxy.Start, argin)
    _fails(oet.proxy.Prepare, '{"script": "file:///etc/x.py"}')
    # A later accepted command is the barrier: its events come after anything the rejected
    # ones could have caused.
    oet.start(2)
    oet.wait_state(2, "COMPLETE")
    after = oet.events.recorder.snapshot()[seen:]
    assert all(e.attr in ("lasttransition", "procedures", "state") for e in after)
    assert [json.loads(e.value)["id"] for e in after if e.attr == "lasttransition"] == [2, 2]


def test_with_default_properties_every_script_is_refused_naming_the_property(
    start_device: StartDevice, tmp_path: Path
) -> None:
    # Deny by default (INTERFACE.md, "Safe by default"): no ScriptRoots, no GitAllowList,
    # AllowEmbedded false. Each refusal names the property that would allow it.
    oet = start_device(ScriptRoots=None, AllowEmbedded=None)
    repo = tmp_path / "repo"
    repo.mkdir()
    requests = [
        ({"script": f"file://{TEST_SCRIPTS / 'dev_chatty.py'}"}, "ScriptRoots is empty"),
        ({"script": "git://obs.py", "git": {"repo": f"file://{repo}"}}, "GitAllowList is empty"),
        ({"script": "embedded://x", "source": "def main():\n    pass\n"}, "AllowEmbedded"),
    ]
    for request, named in requests:
        error = _fails(oet.proxy.Prepare, json.dumps(request))
        assert (error.reason, error.origin) == (NOT_ALLOWED, "OETScheduler.Prepare")
        assert named in error.desc, error.desc
    # The refusals left nothing behind.
    assert oet.procedures() == []
    assert oet.proxy.List() == "[]"


def test_embedded_scripts_can_be_disabled(start_device: StartDevice) -> None:
    oet = start_device(AllowEmbedded=False)
    error = _fails(oet.proxy.Prepare, '{"script": "embedded://x", "source": "x = 1"}')
    assert error.reason == NOT_ALLOWED
    assert "AllowEmbedded is false" in error.desc
    pid = oet.prepare_file(TEST_SCRIPTS / "dev_chatty.py")
    assert pid == 1


def test_a_script_outside_the_roots_is_refused_naming_them(start_device: StartDevice) -> None:
    oet = start_device()
    error = _fails(oet.proxy.Prepare, '{"script": "file:///etc/passwd.py"}')
    assert error.reason == NOT_ALLOWED
    assert f"/etc/passwd.py is outside ScriptRoots ({SCRIPTS})" in error.desc


def test_every_configured_root_is_allowed(start_device: StartDevice, tmp_path: Path) -> None:
    script = tmp_path / "anywhere.py"
    script.write_text("def main():\n    return 'anywhere'\n")
    oet = start_device(ScriptRoots=[str(SCRIPTS), str(tmp_path)])
    pid = oet.prepare_file(script)
    oet.start(pid)
    assert oet.wait_state(pid, "COMPLETE")["calls"][0]["result"] == "anywhere"
