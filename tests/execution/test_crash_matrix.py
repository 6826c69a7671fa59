"""Every way a script can go wrong maps to one final state and a precise error."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import psutil
import pytest

from tango_oet.domain import ProcedureState as S
from tango_oet.service import OutputAppended, UserEventPublished
from tests.execution.conftest import Engine, assert_pid_gone

STARTED = """
from tango_oet.scripting import publish
"""
IGNORES_SIGTERM = (
    STARTED
    + """
import signal
def init():
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
def main():
    publish("started")
    while True:
        try:
            pass
        except BaseException:  # not even an exception raised in it stops this loop
            pass
"""
)


def wait_started(engine: Engine, pid: int) -> None:
    engine.wait_event(
        lambda e: (
            isinstance(e, UserEventPublished) and e.procedure_id == pid and e.topic == "started"
        ),
        f"procedure {pid} to publish 'started'",
    )


def test_exception_in_init(engine: Engine) -> None:
    pid = engine.prepare_source(
        """
        def init(x):
            raise ValueError(f"bad init value {x}")
        def main():
            pass
    """,
        42,
    )
    summary = engine.wait_state(pid, S.FAILED)
    assert engine.states(pid) == [S.IDLE, S.LOADING, S.INITIALISING, S.FAILED]
    assert summary.error is not None
    assert summary.error.type == "ValueError"
    assert summary.error.message == "bad init value 42"
    assert "in init" in summary.error.traceback


def test_exception_in_main(engine: Engine) -> None:
    pid = engine.prepare_source("""
        def main():
            raise RuntimeError("telescope fell over")
    """)
    engine.wait_state(pid, S.READY)
    engine.start(pid)
    summary = engine.wait_state(pid, S.FAILED)
    assert summary.error is not None
    assert (summary.error.type, summary.error.message) == ("RuntimeError", "telescope fell over")
    assert "in main" in summary.error.traceback
    assert engine.states(pid)[-2:] == [S.RUNNING, S.FAILED]


def test_syntax_error(engine: Engine) -> None:
    pid = engine.prepare_source("def main(:\n    pass\n")
    summary = engine.wait_state(pid, S.FAILED)
    assert summary.error is not None and summary.error.type == "SyntaxError"
    assert engine.states(pid) == [S.IDLE, S.LOADING, S.FAILED]


def test_missing_function_forced_before_load_fails_the_procedure(engine: Engine) -> None:
    pid = engine.prepare_source("def main():\n    pass\n")
    engine.start(pid, "nope", force=True)
    summary = engine.wait_state(pid, S.FAILED)
    assert summary.error is not None and summary.error.type == "AttributeError"
    assert "'nope'" in summary.error.message


@pytest.mark.parametrize(
    ("body", "exitcode", "signame"),
    [
        ("import os\n    os._exit(3)", 3, None),
        ("import faulthandler\n    faulthandler._sigsegv()", None, "SIGSEGV"),
        ("import os, signal\n    os.kill(os.getpid(), signal.SIGKILL)", None, "SIGKILL"),
    ],
    ids=["os._exit(3)", "segfault", "self-SIGKILL"],
)
def test_worker_death_is_failed_with_exit_code_or_signal(
    engine: Engine, body: str, exitcode: int | None, signame: str | None
) -> None:
    pid = engine.prepare_source(f"def main():\n    {body}\n")
    engine.wait_state(pid, S.READY)
    engine.start(pid)
    summary = engine.wait_state(pid, S.FAILED)
    assert summary.error is not None
    assert summary.error.type == "WorkerDied"
    assert (summary.error.exitcode, summary.error.signal) == (exitcode, signame)
    assert "while RUNNING" in summary.error.message


def test_sigkill_from_outside(engine: Engine) -> None:
    pid = engine.prepare_source(
        STARTED
        + """
def main():
    publish("started")
    while True:
        pass
"""
    )
    engine.wait_state(pid, S.READY)
    engine.start(pid)
    wait_started(engine, pid)
    worker = engine.service.describe(pid).pid
    assert worker is not None
    os.kill(worker, signal.SIGKILL)
    summary = engine.wait_state(pid, S.FAILED)
    assert summary.error is not None and summary.error.signal == "SIGKILL"
    assert_pid_gone(worker)


def test_sigkill_while_idle_in_ready(engine: Engine) -> None:
    pid = engine.prepare_source("def main():\n    pass\n")
    summary = engine.wait_state(pid, S.READY)
    assert summary.pid is not None
    os.kill(summary.pid, signal.SIGKILL)
    summary = engine.wait_state(pid, S.FAILED)
    assert summary.error is not None and "while READY" in summary.error.message


def test_busy_loop_without_checkpoint_is_stopped_and_finally_runs(engine: Engine) -> None:
    pid = engine.prepare_source(
        STARTED
        + """
def main():
    try:
        publish("started")
        while True:
            pass
    finally:
        print("cleanup ran")
"""
    )
    engine.wait_state(pid, S.READY)
    engine.start(pid)
    wait_started(engine, pid)
    engine.service.stop(_stop(pid))
    summary = engine.wait_state(pid, S.STOPPED)
    assert summary.error is None
    assert engine.states(pid)[-2:] == [S.STOPPING, S.STOPPED]
    engine.service.flush_events()
    assert f"{pid} cleanup ran" in _output(engine)


def test_blocking_sleep_is_stopped(engine: Engine) -> None:
    pid = engine.prepare_source(
        STARTED
        + """
import time
def main():
    publish("started")
    time.sleep(1000)
"""
    )
    engine.wait_state(pid, S.READY)
    engine.start(pid)
    wait_started(engine, pid)
    engine.service.stop(_stop(pid))
    engine.wait_state(pid, S.STOPPED)


def test_script_ignoring_sigterm_is_killed(make_engine) -> None:  # type: ignore[no-untyped-def]
    from tango_oet.execution.supervisor import StopDeadlines

    engine: Engine = make_engine(deadlines=StopDeadlines(0.01, 0.2, 3.0))
    pid = engine.prepare_source(IGNORES_SIGTERM)
    engine.wait_state(pid, S.READY)
    engine.start(pid)
    wait_started(engine, pid)
    worker = engine.service.describe(pid).pid
    engine.service.stop(_stop(pid))
    summary = engine.wait_state(pid, S.STOPPED)
    assert summary.state is S.STOPPED
    assert_pid_gone(worker)


def test_prints_100k_lines_none_lost_in_order(engine: Engine) -> None:
    pid = engine.prepare_source("""
def main(n):
    for i in range(n):
        print(f"line {i}")
""")
    engine.wait_state(pid, S.READY)
    engine.start(pid, "main", 100_000)
    engine.wait_state(pid, S.COMPLETE, timeout=60)
    engine.service.flush_events()
    lines = [ln for ln in _output(engine) if ln.startswith(f"{pid} line ")]
    assert lines == [f"{pid} line {i}" for i in range(100_000)]


def test_publish_from_a_thread(engine: Engine) -> None:
    pid = engine.prepare_source("""
import threading
from tango_oet.scripting import publish
def main():
    t = threading.Thread(target=publish, args=("from-thread",), kwargs={"n": 7},
                         name="helper")
    t.start()
    t.join()
""")
    engine.wait_state(pid, S.READY)
    engine.start(pid)
    engine.wait_state(pid, S.COMPLETE)
    engine.service.flush_events()
    events = [e for e in engine.events.snapshot() if isinstance(e, UserEventPublished)]
    assert [(e.procedure_id, e.topic, e.payload) for e in events] == [
        (pid, "from-thread", {"n": 7})
    ]


def test_grandchild_processes_die_with_the_worker(engine: Engine) -> None:
    pid = engine.prepare_source("""
import subprocess
def main():
    return subprocess.Popen(["sleep", "1000"]).pid
""")
    engine.wait_state(pid, S.READY)
    engine.start(pid)
    summary = engine.wait_state(pid, S.COMPLETE)
    grandchild = summary.calls[0].result
    assert isinstance(grandchild, int)
    _wait_gone(grandchild)


def _wait_gone(pid: int) -> None:
    import psutil

    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    try:
        proc.wait(timeout=5)
    except psutil.TimeoutExpired:
        raise AssertionError(f"process {pid} still alive: {proc.status()}") from None


def _stop(pid: int):  # type: ignore[no-untyped-def]
    from tango_oet.domain import StopRequest

    return StopRequest(pid)


def _output(engine: Engine) -> list[str]:
    return [ln for e in engine.events.snapshot() if isinstance(e, OutputAppended) for ln in e.lines]


def test_a_process_surviving_sigkill_is_unknown_and_still_killed_later(
    make_engine: Callable[..., Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The supervisor's kills are made ineffective (as for a process stuck in the kernel):
    the procedure becomes UNKNOWN after StopKillSeconds, yet the supervisor keeps trying, and
    once a kill works the process is reaped: it is never forgotten while alive."""
    from tango_oet.execution.launcher import WorkerProcess
    from tango_oet.execution.supervisor import StopDeadlines

    engine: Engine = make_engine(deadlines=StopDeadlines(0.01, 0.05, 0.2))
    pid = engine.prepare_source(IGNORES_SIGTERM)
    engine.wait_state(pid, S.READY)
    engine.start(pid)
    wait_started(engine, pid)
    worker = engine.service.describe(pid).pid
    assert worker is not None
    real_kill = WorkerProcess.kill_group
    monkeypatch.setattr(WorkerProcess, "kill_group", lambda self: None)
    engine.service.stop(_stop(pid))
    summary = engine.wait_state(pid, S.UNKNOWN)
    assert summary.error is not None and summary.error.type == "WorkerLost"
    assert psutil.pid_exists(worker) and worker in engine.service.worker_pids()
    monkeypatch.setattr(WorkerProcess, "kill_group", real_kill)  # the next re-kill works
    _wait_gone(worker)
    engine.events.wait_for(
        lambda _: worker not in engine.service.worker_pids(), 10, "the lost worker reaped"
    )
    final = engine.service.describe(pid)
    assert final.state is S.UNKNOWN  # final: it stays UNKNOWN, now with how it ended
    assert final.error is not None and final.error.signal == "SIGKILL"


def test_output_of_subprocesses_and_raw_file_descriptors_is_captured(engine: Engine) -> None:
    pid = engine.prepare_source("""
import os, subprocess
def main():
    print("python print")
    subprocess.run(["echo", "from a child process"], check=True)
    os.write(2, b"raw stderr\\nno newline at the end")
    return "done"
""")
    engine.wait_state(pid, S.READY)
    engine.start(pid)
    engine.wait_state(pid, S.COMPLETE)
    engine.service.flush_events()
    lines = _output(engine)
    for line in ("python print", "from a child process", "raw stderr", "no newline at the end"):
        assert f"{pid} {line}" in lines
    # Lines written before main returned are delivered before its COMPLETE.
    events = engine.events.snapshot()
    complete = next(i for i, e in enumerate(events) if getattr(e, "state", None) is S.COMPLETE)
    before = [ln for e in events[:complete] if isinstance(e, OutputAppended) for ln in e.lines]
    for line in ("from a child process", "raw stderr", "no newline at the end"):
        assert f"{pid} {line}" in before
