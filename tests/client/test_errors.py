"""DevFailed reasons become typed exceptions: from synthetic stacks and from the real device."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import tango

from tango_oet import client
from tango_oet.client import (
    OET_ERRORS,
    CapacityExceeded,
    CommunicationTimeout,
    DeviceError,
    DeviceNotFound,
    DeviceNotRunning,
    EnvironmentFailed,
    IllegalTransition,
    InvalidRequest,
    NoDatabase,
    Scheduler,
    ScriptNotAllowed,
    ServiceUnavailable,
    UnknownProcedure,
)
from tango_oet.domain import errors as domain
from tango_oet.service import ScriptExecutionService, ServiceConfig, make_service
from tests.client.conftest import StartClient
from tests.client.scripts import WAIT_GATE


def devfailed(*stack: tuple[str, str]) -> tango.DevFailed:
    errors = []
    for reason, desc in stack:
        error = tango.DevError()
        error.reason, error.desc, error.origin = reason, desc, "test"
        error.severity = tango.ErrSeverity.ERR
        errors.append(error)
    return tango.DevFailed(*errors)


def test_every_domain_reason_has_a_client_exception() -> None:
    domain_reasons = {cls.reason for cls in domain.OETError.__subclasses__()}
    assert set(OET_ERRORS) == domain_reasons
    for reason, cls in OET_ERRORS.items():
        exc = DeviceError.from_devfailed(devfailed((reason, "what\n went wrong")))
        assert type(exc) is cls
        assert (exc.reason, exc.desc) == (reason, "what went wrong")
        assert str(exc) == f"{reason}: what went wrong"
        assert cls.__name__ in client.__all__


@pytest.mark.parametrize(
    ("stack", "kind", "message"),
    [
        (
            [
                ("API_CorbaException", "TRANSIENT CORBA system exception: TRANSIENT_ConnectFailed"),
                (
                    "API_CantConnectToDatabase",
                    "Failed to connect to database on host h with port 7",
                ),
            ],
            NoDatabase,
            "no Tango database at h:7 — start one with `tango-oet up`",
        ),
        (
            [("API_TangoHostNotSet", "Unable to get the TANGO_HOST")],
            NoDatabase,
            "TANGO_HOST is not set — set it, or start a database with `tango-oet up`",
        ),
        (
            [("DB_DeviceNotDefined", "device a/b/c not defined in the database !")],
            DeviceNotFound,
            "device a/b/c is not defined in the Tango database (device a/b/c not defined in"
            " the database !)",
        ),
        (
            [("API_DeviceNotExported", "Device a/b/c is not exported")],
            DeviceNotRunning,
            "device a/b/c is not running or does not answer (Device a/b/c is not exported)",
        ),
        (
            [("API_CorbaException", "TRANSIENT CORBA system exception: TRANSIENT_CallTimedout")],
            CommunicationTimeout,
            "device a/b/c did not answer in time (TRANSIENT CORBA system exception:"
            " TRANSIENT_CallTimedout)",
        ),
        (
            [("API_Weird", "first"), ("OET_UnknownProcedure", "no procedure with id 3")],
            UnknownProcedure,
            "OET_UnknownProcedure: no procedure with id 3",
        ),
        ([("API_Weird", "something odd")], DeviceError, "API_Weird: something odd"),
    ],
)
def test_connection_and_other_reasons(
    stack: list[tuple[str, str]], kind: type[DeviceError], message: str
) -> None:
    exc = DeviceError.from_devfailed(devfailed(*stack), device="a/b/c")
    assert type(exc) is kind
    assert exc.message() == message == str(exc)
    assert [e.reason for e in exc.stack] == [r for r, _ in stack]


# ---- the same, raised by the real device -------------------------------------------------
@pytest.mark.tango
def test_the_device_raises_each_reason_as_its_exception(
    start_client: StartClient, tmp_path: Path
) -> None:
    oet = start_client(MaxRunning=1)
    with pytest.raises(UnknownProcedure, match="no procedure with id 99"):
        oet.procedure(99)
    with pytest.raises(InvalidRequest, match=r"init\.kwargs\.1x"):
        oet.prepare("x", source="def main(): pass", init_kwargs={"1x": 1})
    with pytest.raises(ScriptNotAllowed, match="outside ScriptRoots"):
        oet.prepare(tmp_path / "elsewhere.py")

    first = oet.prepare("gate", source=WAIT_GATE)
    second = oet.prepare("gate", source=WAIT_GATE)
    with pytest.raises(InvalidRequest, match="private functions"):
        first.start("_hidden")
    with pytest.raises(IllegalTransition, match="cannot resume"):
        first.wait("READY", timeout=20)
        first.resume()
    first.start("main", str(tmp_path / "gate"))
    second.wait("READY", timeout=20)
    with pytest.raises(CapacityExceeded, match="MaxRunning=1") as caught:
        second.start("main", str(tmp_path / "gate"))
    assert caught.value.reason == "OET_CapacityExceeded"
    assert caught.value.origin == "OETScheduler.Start"
    (tmp_path / "gate").touch()
    first.wait_final(timeout=20)
    second.stop()


@pytest.mark.tango
def test_a_broken_engine_raises_service_unavailable(start_client: StartClient) -> None:
    def broken(config: ServiceConfig) -> ScriptExecutionService:
        raise RuntimeError("no engine today")

    oet = start_client(service_factory=broken)
    assert oet.state() == "FAULT"
    with pytest.raises(ServiceUnavailable, match="no engine today"):
        oet.prepare("x", source="def main(): pass")


class _GitCacheBroken:
    """A git provider whose every use fails the way a broken clone cache does."""

    def check_allowed(self, repo: str) -> None:
        raise domain.EnvironmentFailed(f"cannot use the clone cache for {repo}")

    def resolve(self, *args: Any) -> Any:
        raise AssertionError("not reached")

    ensure_environment = resolve

    def runtime_dir(self) -> Path:
        raise AssertionError("not reached")

    def release(self, item: Any) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.mark.tango
def test_environment_failures_raise_environment_failed(start_client: StartClient) -> None:
    def factory(config: ServiceConfig) -> ScriptExecutionService:
        return make_service(config, git=_GitCacheBroken())

    oet = start_client(service_factory=factory)
    with pytest.raises(EnvironmentFailed, match="clone cache for file:///repo"):
        oet.prepare("obs.py", git={"repo": "file:///repo"})


@pytest.mark.tango
def test_an_unreachable_device_raises_device_not_running(free_port: int) -> None:
    trl = f"tango://127.0.0.1:{free_port}/oet/scheduler/1#dbase=no"
    with pytest.raises(DeviceNotRunning) as caught:
        Scheduler(trl, timeout_ms=1000).state()
    assert caught.value.device == trl
    assert trl in str(caught.value)


def test_translated_keeps_non_tango_errors() -> None:
    with pytest.raises(ValueError), client.errors.translated("x"):
        raise ValueError("not a DevFailed")
