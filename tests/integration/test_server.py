"""A real database, the real `OETScheduler` server and a client in a third process."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, Server, run_client

pytestmark = [pytest.mark.integration, pytest.mark.tango]

SCRIPTS = REPO / "resources" / "scripts"
LIFECYCLE = ["CREATING", "IDLE", "LOADING", "INITIALISING", "READY", "RUNNING", "COMPLETE"]


def is_subsequence(items: list[str], of: list[str]) -> bool:
    it = iter(of)
    return all(item in it for item in items)


def test_prepare_start_complete_with_every_state_as_an_event(
    start_oet: Callable[..., Server],
) -> None:
    server = start_oet()
    report = run_client(server, "lifecycle", str(SCRIPTS / "hello_world.py"))
    # lastTransition: subscribed before Prepare, so every state arrives, in order.
    assert report["transitions"] == LIFECYCLE
    # procedure<ID>State: subscribed once Prepare returned; what it saw is in order (after the
    # subscription's own first read) and ends COMPLETE.
    states = report["state_events"]
    assert states[-1] == "COMPLETE"
    assert is_subsequence(states[1:], LIFECYCLE)
    summary = report["summary"]
    assert summary["calls"][0]["result"] == "said hello 3 time(s) to integration"
    assert [h[0] for h in summary["history"]] == LIFECYCLE
    pid = report["id"]
    assert [line for line in report["output"] if "hello" in line] == [
        f"{pid} hello integration ({i}/3)" for i in (1, 2, 3)
    ]
    assert report["device_state"] == "ON"


def test_stop_of_a_script_that_ignores_sigterm_ends_stopped(
    start_oet: Callable[..., Server],
) -> None:
    server = start_oet(StopTermSeconds=0.3)
    report = run_client(
        server, "stop-ignoring-sigterm", str(SCRIPTS / "tests" / "dev_ignore_term.py")
    )
    assert report["transitions"][-3:] == ["RUNNING", "STOPPING", "STOPPED"]
    assert not report["worker_alive"]
    # cooperative 0.01 s + SIGTERM 0.3 s, then SIGKILL: well under the 3 s kill deadline
    assert 0.3 <= report["stop_seconds"] < 3.0


def test_a_worker_killed_with_sigkill_fails_the_procedure(
    start_oet: Callable[..., Server], tmp_path: Path
) -> None:
    server = start_oet()
    report = run_client(
        server, "sigkill", str(SCRIPTS / "tests" / "dev_wait_file.py"), str(tmp_path / "never")
    )
    assert report["transitions"][-2:] == ["RUNNING", "FAILED"]
    error = report["summary"]["error"]
    assert error["signal"] == "SIGKILL"
    assert error["type"] == "WorkerDied"
    assert str(report["worker"]) in error["message"]
