"""Device State/Status: INIT while the engine starts, ON, RUNNING, FAULT with the reason."""

from __future__ import annotations

import threading

import pytest
import tango

from tango_oet.service import ScriptExecutionService, ServiceConfig
from tests.device.conftest import StartDevice

pytestmark = pytest.mark.tango


class SlowToOpen(ScriptExecutionService):
    """An engine whose start completes only when the test opens `gate`."""

    gate = threading.Event()

    def open(self) -> ScriptExecutionService:
        def later() -> None:
            self.gate.wait(30)
            super(SlowToOpen, self).open()

        threading.Thread(target=later, daemon=True).start()
        return self


class BrokenAfterStart(ScriptExecutionService):
    """An engine that reports itself unhealthy once `broken` is set (as if a thread died)."""

    broken = threading.Event()

    def health(self) -> tuple[bool, str]:
        if self.broken.is_set():
            return False, "supervisor thread is not running"
        return super().health()


def test_state_is_init_until_the_engine_has_started(start_device: StartDevice) -> None:
    SlowToOpen.gate = threading.Event()
    oet = start_device(service_factory=lambda cfg: SlowToOpen(cfg))
    try:
        assert oet.proxy.state() == tango.DevState.INIT
        assert "Starting" in oet.proxy.status()
        oet.events.wait_value("State", "INIT")
    finally:
        SlowToOpen.gate.set()
    oet.events.wait_value("State", "ON")
    assert oet.events.values("State")[:2] == ["INIT", "ON"]
    assert oet.proxy.status().startswith("Idle")


def test_bad_property_means_fault_and_commands_say_why(start_device: StartDevice) -> None:
    oet = start_device(StartMethod="fork", HistoryLength=5)
    assert oet.proxy.state() == tango.DevState.FAULT
    assert "start_method" in oet.proxy.status()
    with pytest.raises(tango.DevFailed) as info:
        oet.proxy.Prepare('{"script": "embedded://x", "source": "x = 1"}')
    assert info.value.args[0].reason == "OET_ServiceUnavailable"
    assert "start_method" in info.value.args[0].desc
    assert oet.proxy.procedures == "[]"


def test_engine_that_cannot_be_built_means_fault(start_device: StartDevice) -> None:
    def explode(config: ServiceConfig) -> ScriptExecutionService:
        raise OSError("no space left on device")

    oet = start_device(service_factory=explode)
    assert oet.proxy.state() == tango.DevState.FAULT
    assert "no space left on device" in oet.proxy.status()


def test_engine_breaking_later_turns_the_device_to_fault(start_device: StartDevice) -> None:
    BrokenAfterStart.broken = threading.Event()
    oet = start_device(service_factory=lambda cfg: BrokenAfterStart(cfg))
    oet.events.wait_value("State", "ON")
    BrokenAfterStart.broken.set()
    # The publisher checks the engine's health whenever it has been idle for a second.
    oet.events.wait_value("State", "FAULT", timeout=10)
    assert "supervisor thread is not running" in oet.proxy.status()
    assert oet.proxy.state() == tango.DevState.FAULT


def test_default_properties_work(start_device: StartDevice) -> None:
    # Every default but the script policy, which denies by default (test_errors.py): the
    # one property this script needs is set.
    oet = start_device(
        ScriptRoots=None,
        PoolSize=None,
        StopTermSeconds=None,
        StopKillSeconds=None,
        AllowEmbedded=True,
    )
    oet.events.wait_value("State", "ON")
    pid = oet.prepare_source("def main():\n    return 'defaults'\n")
    oet.start(pid)
    assert oet.wait_state(pid, "COMPLETE")["calls"][0]["result"] == "defaults"
