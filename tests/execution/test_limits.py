"""Limits end in a clear final state and error (INTERFACE v2 "Safe by default"): a worker's
memory and CPU time, procedures holding a process (MaxLive) and script size (MaxScriptBytes)."""

from __future__ import annotations

import os
import pwd
from collections.abc import Callable

import pytest

from tango_oet.domain import CapacityExceeded, InvalidRequest, ProcedureSummary, StartRequest
from tango_oet.domain import ProcedureState as S
from tango_oet.execution.launcher import ContextLauncher
from tango_oet.execution.limits import WorkerLimits
from tango_oet.service import StateChanged
from tests.execution.conftest import Engine

HOG = "def main():\n    blob = bytearray(2 << 30)\n    return len(blob)\n"
SPIN = "def main():\n    while True:\n        pass\n"
QUICK = "def main():\n    return 1\n"


def _run(engine: Engine, source: str, *final: S) -> ProcedureSummary:
    """Prepare `source`, call main once READY, and return the summary in one of `final`."""
    pid = engine.prepare_source(source)
    engine.wait_state(pid, S.READY)
    engine.start(pid)
    return engine.wait_state(pid, *final, timeout=30)


def _engine(make_engine: Callable[..., Engine], limits: WorkerLimits, **config: object) -> Engine:
    return make_engine(
        launcher=ContextLauncher("forkserver", limits=limits), allow_embedded=True, **config
    )


def test_an_allocation_beyond_worker_memory_fails_the_call_with_memory_error(
    make_engine: Callable[..., Engine],
) -> None:
    engine = _engine(make_engine, WorkerLimits(memory_mb=512))
    summary = _run(engine, HOG, S.FAILED)
    assert summary.error is not None and summary.error.type == "MemoryError"


def test_cpu_time_beyond_the_limit_fails_the_call_saying_so(
    make_engine: Callable[..., Engine],
) -> None:
    engine = _engine(make_engine, WorkerLimits(cpu_seconds=1))
    summary = _run(engine, SPIN, S.FAILED, S.UNKNOWN)
    assert summary.error is not None and summary.error.type == "CpuTimeExceeded", summary.error
    assert "WorkerCpuSeconds" in summary.error.message


def test_max_live_refuses_a_prepare_beyond_it_and_creates_nothing(
    make_engine: Callable[..., Engine],
) -> None:
    engine = make_engine(max_live=1, allow_embedded=True)
    first = engine.prepare_source(QUICK)
    engine.wait_state(first, S.READY)  # READY holds its worker: live
    with pytest.raises(CapacityExceeded, match="MaxLive=1"):
        engine.prepare_source(QUICK)
    assert [s.id for s in engine.service.list()] == [first]
    engine.start(first)
    engine.wait_state(first, S.COMPLETE)
    second = engine.prepare_source(QUICK)  # a final procedure holds nothing
    assert engine.wait_state(second, S.READY).id == second


def test_a_script_larger_than_max_script_bytes_is_refused_naming_the_limit(
    make_engine: Callable[..., Engine],
) -> None:
    engine = make_engine(max_script_bytes=100, allow_embedded=True)
    with pytest.raises(InvalidRequest, match="MaxScriptBytes=100"):
        engine.prepare_source(QUICK + "# " + "x" * 200 + "\n")
    assert engine.service.list() == []
    pid = engine.prepare_source(QUICK)
    assert engine.wait_state(pid, S.READY).id == pid


@pytest.mark.parametrize(
    "source",
    [
        "def main():\n    return 'x' * 5000\n",
        "from tango_oet.scripting import publish\n\n"
        "def main():\n    try:\n        publish('big', blob='x' * 5000)\n"
        "    except Exception:\n        return 'swallowed'\n",
    ],
    ids=["result", "event payload"],
)
def test_a_result_or_event_larger_than_max_result_bytes_fails_the_call(
    make_engine: Callable[..., Engine], source: str
) -> None:
    engine = _engine(make_engine, WorkerLimits(max_result_bytes=1000))
    summary = _run(engine, source, S.FAILED)
    assert summary.error is not None and summary.error.type == "ResultTooLarge", summary.error
    assert "MaxResultBytes=1000" in summary.error.message
    small = _run(engine, "def main():\n    return 'x' * 500\n", S.COMPLETE)
    assert small.calls[-1].result == "x" * 500


@pytest.mark.skipif(os.geteuid() != 0, reason="only a root server can run workers as another user")
def test_worker_user_runs_scripts_as_that_account(make_engine: Callable[..., Engine]) -> None:
    nobody = pwd.getpwnam("nobody")
    engine = _engine(make_engine, WorkerLimits(user="nobody"))
    summary = _run(
        engine, "import os\n\ndef main():\n    return [os.getuid(), os.getgid()]\n", S.COMPLETE
    )
    assert summary.calls[-1].result == [nobody.pw_uid, nobody.pw_gid]


def test_an_unknown_worker_user_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match="WorkerUser 'no-such-user-here': no such account"):
        WorkerLimits(user="no-such-user-here")


def test_a_call_past_its_timeout_is_stopped_and_the_procedure_fails_with_timeout(
    make_engine: Callable[..., Engine],
) -> None:
    engine = make_engine(allow_embedded=True)
    pid = engine.prepare_source("import time\n\ndef main():\n    time.sleep(60)\n")
    engine.wait_state(pid, S.READY)
    engine.service.start(StartRequest(pid, timeout=0.3))
    summary = engine.wait_state(pid, S.FAILED, timeout=30)
    assert summary.error is not None and summary.error.type == "Timeout", summary.error
    assert "main did not end within its timeout of 0.3 s" in summary.error.message
    assert [s for s, _ in summary.history][-3:] == [S.RUNNING, S.STOPPING, S.FAILED]


def test_a_call_within_its_timeout_is_not_touched(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine(allow_embedded=True)
    pid = engine.prepare_source("def again():\n    return 1\n\ndef main():\n    return 2\n")
    engine.wait_state(pid, S.READY)
    engine.service.start(StartRequest(pid, "again", timeout=0.2))
    engine.wait_event(
        lambda e: (
            isinstance(e, StateChanged)
            and e.summary.id == pid
            and e.summary.state is S.READY
            and len(e.summary.calls) == 1
        ),
        "again returned, READY again",
    )
    engine.service.start(StartRequest(pid))  # the first call's deadline does not apply here
    summary = engine.wait_state(pid, S.COMPLETE, timeout=10)
    assert summary.calls[-1].result == 2 and summary.error is None
