"""Through a real device: a script does not see the server's secrets (WorkerEnvironment)."""

from __future__ import annotations

import pytest

from tests.device.conftest import StartDevice

pytestmark = pytest.mark.tango

READ_ENV = "import os\n\ndef main():\n    return sorted(os.environ)\n"


def test_by_default_a_script_sees_only_the_default_allow_list(
    start_device: StartDevice, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OET_TEST_SECRET", "hunter2")
    # spawn: the pool's workers start from this environment, secret included.
    oet = start_device(StartMethod="spawn")
    pid = oet.prepare_source(READ_ENV)
    oet.wait_state(pid, "READY")
    oet.start(pid)
    names = oet.wait_state(pid, "COMPLETE")["calls"][0]["result"]
    assert "OET_TEST_SECRET" not in names
    allowed = {"PATH", "HOME", "LANG", "TZ", "TANGO_HOST"}
    extra = {n for n in names if n not in allowed and not n.startswith("LC_")}
    assert extra <= {"OET_CONTAINMENT"}, extra  # the containment marker (subreaper mode)


def test_extra_values_are_set_for_every_script(
    start_device: StartDevice, monkeypatch: pytest.MonkeyPatch
) -> None:
    oet = start_device(StartMethod="spawn", WorkerEnvironment=["PATH", "SITE=north"])
    pid = oet.prepare_source("import os\n\ndef main():\n    return os.environ.get('SITE')\n")
    oet.wait_state(pid, "READY")
    oet.start(pid)
    assert oet.wait_state(pid, "COMPLETE")["calls"][0]["result"] == "north"
