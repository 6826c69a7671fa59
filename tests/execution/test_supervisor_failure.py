"""If the supervisor thread dies, no procedure pretends to be alive and the engine says so."""

from __future__ import annotations

import psutil
import pytest

from tango_oet.domain import ProcedureState as S
from tango_oet.execution.supervisor import Supervisor
from tests.execution.conftest import Engine, assert_pid_gone

WAIT = """
from tango_oet.scripting import checkpoint, publish
def main():
    publish("started")
    while True:
        checkpoint()
"""


def test_a_dead_supervisor_ends_every_live_procedure_and_reports_unhealthy(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = engine.prepare_source(WAIT)
    engine.wait_state(running, S.READY)
    engine.start(running, "main")
    engine.wait_state(running, S.RUNNING)
    worker = engine.service.describe(running).pid

    def broken(self: Supervisor) -> None:
        raise RuntimeError("injected fault in the supervisor loop")

    monkeypatch.setattr(Supervisor, "_advance_ladders", broken)
    # The loop comes round within its heartbeat and dies.

    summary = engine.wait_state(running, S.UNKNOWN, S.FAILED)
    assert summary.error is not None
    assert summary.error.type == "SupervisorFailed"
    assert "injected fault" in summary.error.message
    healthy, why = engine.service.health()
    assert not healthy
    assert "supervisor" in why
    assert worker is not None
    try:
        psutil.wait_procs([psutil.Process(worker)], timeout=5.0)  # SIGKILLed: ends at once
    except psutil.NoSuchProcess:
        pass  # already gone
    assert_pid_gone(worker)
