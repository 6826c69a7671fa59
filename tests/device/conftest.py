"""Fixtures for device tests: a real OETScheduler in `DeviceTestContext(process=False)`.

One mode for all device tests (see docs/device.md, "Tests"): the device server runs in a thread
of the pytest process, so the engine's forkserver is a child of pytest and must never be
inherited by a forked `process=True` server (tango-recipes Pitfall 8). Each context costs ~50 ms
instead of ~1.1 s.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psutil
import pytest
from tango.test_context import DeviceTestContext

from tango_oet.device.oetscheduler import OETScheduler
from tango_oet.service import ScriptExecutionService, ServiceConfig, make_service
from tests.device.harness import SCRIPTS, GatedLauncher, Scheduler

StartDevice = Callable[..., Scheduler]

_HELPERS = ("forkserver", "resource_tracker")


def base_properties(tmp_path: Path) -> dict[str, Any]:
    # The script policy is deny by default: allow what the tests run, explicitly (git is
    # allowed by the tests that use it).
    return {
        "DataDirectory": str(tmp_path / "data"),
        "ScriptRoots": [str(SCRIPTS)],
        "AllowEmbedded": True,
        "PoolSize": 1,
        "StopTermSeconds": 2.0,
        "StopKillSeconds": 5.0,
    }


@pytest.fixture
def start_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StartDevice]:
    """Start an OETScheduler with `base_properties` overridden by keyword arguments.

    `gate=threading.Event()` makes every worker launch wait for the gate (PoolSize 0), so a
    procedure stays CREATING until the test opens it. `service_factory` replaces the engine.
    """
    stack = ExitStack()

    def start(
        gate: threading.Event | None = None,
        service_factory: Callable[[ServiceConfig], ScriptExecutionService] | None = None,
        **properties: Any,
    ) -> Scheduler:
        # None removes a property, so the device's default applies (FileDatabase, which the
        # test context uses, cannot hold an empty list).
        merged = {**base_properties(tmp_path), **properties}
        props = {k: v for k, v in merged.items() if v is not None}
        if gate is not None:
            props["PoolSize"] = 0
            launcher_gate = gate

            def gated(config: ServiceConfig) -> ScriptExecutionService:
                return make_service(
                    config, launcher=GatedLauncher(config.start_method, launcher_gate)
                )

            service_factory = gated
        if service_factory is not None:
            factory = service_factory
            monkeypatch.setattr(OETScheduler, "create_service", lambda self, cfg: factory(cfg))
        context = DeviceTestContext(
            OETScheduler, process=False, host="127.0.0.1", properties=props, timeout=30
        )
        proxy = stack.enter_context(context)
        if gate is not None:
            stack.callback(gate.set)  # before the context exits: a waiting launch must end
        scheduler = Scheduler(proxy)
        stack.callback(scheduler.close)
        return scheduler

    try:
        yield start
    finally:
        stack.close()


@pytest.fixture(autouse=True)
def no_worker_left() -> Iterator[None]:
    """After each test (the device deleted), no worker process of it may be alive."""
    yield
    me = psutil.Process()
    # The forkserver and resource tracker (direct children) live as long as pytest; workers
    # are forked BY the forkserver, so they share its command line: only its children count.
    children = [
        p
        for p in me.children(recursive=True)
        if not (_ppid(p) == me.pid and any(h in " ".join(_cmdline(p)) for h in _HELPERS))
    ]
    _gone, alive = psutil.wait_procs(children, timeout=5)
    if alive:
        for p in alive:
            p.kill()
        pytest.fail(f"worker processes left behind: {[(p.pid, _cmdline(p)) for p in alive]}")


def _ppid(p: psutil.Process) -> int:
    try:
        return int(p.ppid())
    except psutil.NoSuchProcess:
        return -1


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return list(p.cmdline())
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return []
