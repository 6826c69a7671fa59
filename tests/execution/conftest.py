"""Fixtures for engine tests: a real service with real worker processes, and event recorders."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from tango_oet.domain import (
    EmbeddedScript,
    PrepareRequest,
    ProcedureInput,
    ProcedureState,
    ProcedureSummary,
    StartRequest,
)
from tango_oet.execution.launcher import ContextLauncher, WorkerProcess
from tango_oet.execution.supervisor import StopDeadlines
from tango_oet.service import ScriptExecutionService, ServiceConfig, ServiceEvent, StateChanged
from tests.waiting import Recorder

SCRIPTS = Path(__file__).resolve().parents[2] / "resources" / "scripts"


class Engine:
    """A running service plus a recorder of everything it published."""

    def __init__(self, service: ScriptExecutionService) -> None:
        self.service = service
        self.events: Recorder[ServiceEvent] = Recorder()
        service.subscribe(self.events)

    def prepare_source(self, source: str, *args: object, **kwargs: object) -> int:
        script = EmbeddedScript(name="test", source=textwrap.dedent(source))
        return self.service.prepare(
            PrepareRequest(script=script, init=ProcedureInput(tuple(args), dict(kwargs)))
        )

    def start(
        self, pid: int, function: str = "main", *args: object, force: bool = False, **kwargs: object
    ) -> None:
        self.service.start(
            StartRequest(pid, function, ProcedureInput(tuple(args), dict(kwargs)), force)
        )

    def states(self, pid: int) -> list[ProcedureState]:
        return [
            e.state
            for e in self.events.snapshot()
            if isinstance(e, StateChanged) and e.procedure_id == pid
        ]

    def wait_state(
        self, pid: int, *states: ProcedureState, timeout: float = 15.0
    ) -> ProcedureSummary:
        def reached(events: list[ServiceEvent]) -> bool:
            return any(
                isinstance(e, StateChanged) and e.procedure_id == pid and e.state in states
                for e in events
            )

        try:
            self.events.wait_for(reached, timeout, f"procedure {pid} to reach {states}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nsummary: {self.service.describe(pid)}") from None
        return self.service.describe(pid)

    def wait_event(
        self, predicate: Callable[[ServiceEvent], bool], what: str, timeout: float = 15.0
    ) -> ServiceEvent:
        items = self.events.wait_for(lambda es: any(predicate(e) for e in es), timeout, what)
        return next(e for e in items if predicate(e))


def assert_pid_gone(pid: int | None) -> None:
    if pid is None:
        return
    try:
        proc = psutil.Process(pid)
        assert proc.status() == psutil.STATUS_ZOMBIE, f"worker {pid} still alive"
    except psutil.NoSuchProcess:
        pass


@pytest.fixture
def make_engine() -> Iterator[Callable[..., Engine]]:
    services: list[ScriptExecutionService] = []

    def make(**overrides: object) -> Engine:
        """A started engine; `launcher` and `clock` go to the service, the rest to its config."""
        parts = {k: overrides.pop(k) for k in ("launcher", "clock") if k in overrides}
        overrides.setdefault("pool_size", 1)
        overrides.setdefault("deadlines", StopDeadlines(cooperative_s=0.02, term_s=1.0, kill_s=3.0))
        service = ScriptExecutionService(ServiceConfig(**overrides), **parts)  # type: ignore[arg-type]
        services.append(service)
        engine = Engine(service)
        service.open()
        return engine

    yield make
    for service in services:
        pids = [s.pid for s in service.list()]
        service.shutdown()
        for pid in pids:
            assert_pid_gone(pid)


@pytest.fixture
def engine(make_engine: Callable[..., Engine]) -> Engine:
    return make_engine()


@pytest.fixture
def worker() -> Iterator[WorkerProcess]:
    """One bare worker from the forkserver (no service), killed and reaped after the test."""
    w = ContextLauncher("forkserver").launch()
    yield w
    w.kill_group()
    w.reap(timeout=5)
    w.close()
