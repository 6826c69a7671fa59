"""Procedure lifecycle through the real engine: calls, queues, pause, stop at every stage."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tango_oet.domain import (
    CapacityExceeded,
    FilesystemScript,
    IllegalTransition,
    InvalidRequest,
    PrepareRequest,
    ProcedureInput,
    ScriptNotAllowed,
    StopRequest,
    UnknownProcedure,
)
from tango_oet.domain import ProcedureState as S
from tango_oet.service import ProcedureRemoved, StateChanged, SummaryChanged, UserEventPublished
from tests.execution.conftest import SCRIPTS, Engine, assert_pid_gone

LOOP = """
from tango_oet.scripting import checkpoint, publish, stop_requested
def main():
    try:
        publish("started")
        while True:
            checkpoint()
    finally:
        print("finally")
"""


def started(engine: Engine, pid: int, n: int = 1) -> None:
    engine.wait_event(
        lambda e: (
            isinstance(e, UserEventPublished)
            and e.procedure_id == pid
            and e.topic == "started"
            and e.seq >= n
        ),
        f"procedure {pid} started",
    )


def test_hello_world_file_script(make_engine) -> None:  # type: ignore[no-untyped-def]
    engine: Engine = make_engine(script_roots=(SCRIPTS,))  # no roots: no file:// at all
    path = SCRIPTS / "hello_world.py"
    pid = engine.service.prepare(
        PrepareRequest(FilesystemScript(str(path)), ProcedureInput(("Vega",)))
    )
    engine.wait_state(pid, S.READY)
    engine.start(pid, "main", 2)
    summary = engine.wait_state(pid, S.COMPLETE)
    assert engine.states(pid) == [S.IDLE, S.LOADING, S.INITIALISING, S.READY, S.RUNNING, S.COMPLETE]
    assert summary.history[0][0] is S.CREATING
    assert summary.calls[0].result == "said hello 2 time(s) to Vega"
    assert summary.progress is not None and summary.progress.done == 2
    js = summary.to_json()
    assert js["script"] == {
        "kind": "filesystem",
        "uri": f"file://{path}",
        "git": None,
        "environment": None,
    }
    assert js["init"] == {"args": ["Vega"], "kwargs": {}}


def test_other_functions_return_to_ready_and_can_be_called_again(engine: Engine) -> None:
    pid = engine.prepare_source("""
        count = 0
        def bump(by=1):
            global count
            count += by
            return count
        def main():
            return count
    """)
    engine.wait_state(pid, S.READY)
    for i in range(1, 4):
        engine.start(pid, "bump", by=10)
        engine.events.wait_for(_ready_times(engine, pid, i + 1), 10, f"call {i} done")
    engine.start(pid, "main")
    summary = engine.wait_state(pid, S.COMPLETE)
    assert [c.result for c in summary.calls] == [10, 20, 30, 30]
    assert [c.function for c in summary.calls] == ["bump", "bump", "bump", "main"]


def _ready_times(engine: Engine, pid: int, n: int) -> Callable[[object], bool]:
    return lambda _: engine.states(pid).count(S.READY) == n


def test_unknown_function_after_load_is_rejected_synchronously(engine: Engine) -> None:
    pid = engine.prepare_source("def main():\n    pass\n")
    engine.wait_state(pid, S.READY)
    with pytest.raises(InvalidRequest, match="no function 'nope'") as err:
        engine.start(pid, "nope")
    assert err.value.field == "function"
    assert engine.service.describe(pid).state is S.READY


def test_forced_start_is_queued_until_ready(engine: Engine, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    pid = engine.prepare_source(f"""
        from tango_oet.scripting import publish
        def init():
            publish("in-init")
            open({str(gate)!r}).read()
        def main(x):
            return x * 2
    """)
    engine.wait_event(
        lambda e: isinstance(e, UserEventPublished) and e.topic == "in-init", "init running"
    )
    with pytest.raises(IllegalTransition):
        engine.start(pid, "main", 21)
    engine.start(pid, "main", 21, force=True)
    _open_gate(gate)
    summary = engine.wait_state(pid, S.COMPLETE)
    assert summary.calls[0].result == 42


def _open_gate(fifo: Path) -> None:
    # A FIFO is an OS-level barrier: the script's read() returns when we write and close.
    fd = os.open(fifo, os.O_WRONLY)
    os.write(fd, b"go")
    os.close(fd)


def test_cooperative_stop_runs_finally(engine: Engine) -> None:
    pid = engine.prepare_source(LOOP)
    engine.wait_state(pid, S.READY)
    engine.start(pid)
    started(engine, pid)
    engine.service.stop(StopRequest(pid))
    summary = engine.wait_state(pid, S.STOPPED)
    assert summary.error is None
    engine.service.flush_events()
    from tests.execution.test_crash_matrix import _output

    assert f"{pid} finally" in _output(engine)


def test_pause_and_resume(engine: Engine) -> None:
    pid = engine.prepare_source(LOOP)
    engine.wait_state(pid, S.READY)
    with pytest.raises(IllegalTransition, match="cannot pause"):
        engine.service.pause(pid)
    engine.start(pid)
    started(engine, pid)
    engine.service.pause(pid)
    engine.wait_state(pid, S.PAUSED)
    engine.service.resume(pid)
    engine.events.wait_for(
        lambda es: engine.states(pid)[-1] is S.RUNNING and S.PAUSED in engine.states(pid),
        10,
        "resumed",
    )
    engine.service.pause(pid)
    engine.events.wait_for(lambda es: engine.states(pid).count(S.PAUSED) == 2, 10, "paused")
    engine.service.stop(StopRequest(pid))  # a paused script stops at once
    engine.wait_state(pid, S.STOPPED)
    assert engine.states(pid)[-4:] == [S.RUNNING, S.PAUSED, S.STOPPING, S.STOPPED]


def test_stop_while_creating_before_any_worker(make_engine) -> None:  # type: ignore[no-untyped-def]
    engine: Engine = make_engine(pool_size=0)
    pid = engine.prepare_source("def main():\n    pass\n")
    engine.service.stop(StopRequest(pid))
    summary = engine.wait_state(pid, S.STOPPED)
    assert summary.pid is None
    assert engine.states(pid) == [S.STOPPING, S.STOPPED]


def test_stop_while_initialising(engine: Engine) -> None:
    pid = engine.prepare_source("""
        from tango_oet.scripting import publish
        def init():
            publish("started")
            while True:
                pass
    """)
    started(engine, pid)
    worker = engine.service.describe(pid).pid
    engine.service.stop(StopRequest(pid))
    engine.wait_state(pid, S.STOPPED)
    assert engine.states(pid)[-3:] == [S.INITIALISING, S.STOPPING, S.STOPPED]
    assert_pid_gone(worker)


def test_stop_in_ready(engine: Engine) -> None:
    pid = engine.prepare_source("def main():\n    pass\n")
    engine.wait_state(pid, S.READY)
    engine.service.stop(StopRequest(pid))
    engine.wait_state(pid, S.STOPPED)
    with pytest.raises(IllegalTransition, match="is STOPPED: cannot stop"):
        engine.service.stop(StopRequest(pid))
    with pytest.raises(IllegalTransition, match="cannot start main"):
        engine.start(pid)


def test_unknown_procedure(engine: Engine) -> None:
    for call in (
        lambda: engine.service.describe(99),
        lambda: engine.service.pause(99),
        lambda: engine.service.stop(StopRequest(99)),
        lambda: engine.start(99),
    ):
        with pytest.raises(UnknownProcedure, match="no procedure with id 99"):
            call()


def test_max_running_rejects_clearly(make_engine) -> None:  # type: ignore[no-untyped-def]
    engine: Engine = make_engine(max_running=1, pool_size=2)
    first = engine.prepare_source(LOOP)
    second = engine.prepare_source(LOOP)
    engine.wait_state(first, S.READY)
    engine.wait_state(second, S.READY)
    engine.start(first)
    with pytest.raises(CapacityExceeded, match="MaxRunning=1"):
        engine.start(second)
    assert engine.service.describe(second).state is S.READY
    engine.service.stop(StopRequest(first))
    engine.wait_state(first, S.STOPPED)
    engine.start(second)
    engine.wait_state(second, S.RUNNING)


def test_many_procedures_run_at_once(make_engine) -> None:  # type: ignore[no-untyped-def]
    engine: Engine = make_engine(pool_size=2)
    pids = [engine.prepare_source(LOOP) for _ in range(6)]
    for pid in pids:
        engine.wait_state(pid, S.READY)
        engine.start(pid)
    for pid in pids:
        started(engine, pid)
    assert engine.service.running_count() == 6
    for pid in pids:
        engine.service.stop(StopRequest(pid))
    for pid in pids:
        engine.wait_state(pid, S.STOPPED)


def test_history_pruning_never_drops_active(make_engine) -> None:  # type: ignore[no-untyped-def]
    engine: Engine = make_engine(history_length=2)
    active = engine.prepare_source(LOOP)
    engine.wait_state(active, S.READY)
    done = []
    for _ in range(3):
        pid = engine.prepare_source("def main():\n    return 1\n")
        engine.wait_state(pid, S.READY)
        engine.start(pid)
        engine.wait_state(pid, S.COMPLETE)
        done.append(pid)
    ids = [s.id for s in engine.service.list()]
    assert active in ids and ids == [active, done[-1]]
    engine.service.flush_events()
    removed = [e.procedure_id for e in engine.events.snapshot() if isinstance(e, ProcedureRemoved)]
    assert removed == done[:-1]


def test_results_that_are_not_json_become_repr(engine: Engine) -> None:
    pid = engine.prepare_source("""
        class Thing:
            def __repr__(self):
                return "<Thing 7>"
        def main():
            return {"ok": [1, 2.5, None], "thing": Thing(), "nan": float("nan")}
    """)
    engine.wait_state(pid, S.READY)
    engine.start(pid)
    result = engine.wait_state(pid, S.COMPLETE).calls[0].result
    assert isinstance(result, str) and "<Thing 7>" in result


def test_missing_file_and_roots(make_engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    engine: Engine = make_engine(script_roots=(SCRIPTS,))
    with pytest.raises(InvalidRequest, match="no such file") as err:
        engine.service.prepare(PrepareRequest(FilesystemScript(str(SCRIPTS / "nope.py"))))
    assert err.value.field == "script"
    outside = tmp_path / "x.py"
    outside.write_text("def main(): pass\n")
    with pytest.raises(ScriptNotAllowed, match="outside ScriptRoots"):
        engine.service.prepare(PrepareRequest(FilesystemScript(str(outside))))
    assert engine.service.list() == []


def test_without_roots_every_file_is_refused(make_engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # Deny by default: no ScriptRoots, no file:// script, existing or not (the refusal comes
    # before the file is looked at, so it tells nothing about the filesystem).
    engine: Engine = make_engine()
    for path in (SCRIPTS / "hello_world.py", tmp_path / "nope.py"):
        with pytest.raises(ScriptNotAllowed, match="ScriptRoots is empty") as err:
            engine.service.prepare(PrepareRequest(FilesystemScript(str(path))))
        assert err.value.rule == "ScriptRoots"
    assert engine.service.list() == []


def test_symlink_escaping_a_root_is_refused(make_engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "outside.py").write_text("def main(): pass\n")
    (root / "evil.py").symlink_to(tmp_path / "outside.py")
    (root / "good.py").write_text("def main(): pass\n")
    engine: Engine = make_engine(script_roots=(root,))
    with pytest.raises(ScriptNotAllowed):
        engine.service.prepare(PrepareRequest(FilesystemScript(str(root / "evil.py"))))
    pid = engine.service.prepare(PrepareRequest(FilesystemScript(str(root / "good.py"))))
    engine.wait_state(pid, S.READY)


def test_embedded_scripts_can_be_disabled(make_engine) -> None:  # type: ignore[no-untyped-def]
    engine: Engine = make_engine(allow_embedded=False)
    with pytest.raises(ScriptNotAllowed, match="AllowEmbedded is false") as err:
        engine.prepare_source("def main(): pass")
    assert err.value.rule == "AllowEmbedded"


def test_shutdown_stops_everything(make_engine) -> None:  # type: ignore[no-untyped-def]
    engine: Engine = make_engine(pool_size=2)
    pids = [engine.prepare_source(LOOP) for _ in range(3)]
    for pid in pids:
        engine.wait_state(pid, S.READY)
    engine.start(pids[0])
    started(engine, pids[0])
    workers = [engine.service.describe(p).pid for p in pids]
    engine.service.shutdown()
    assert {s.state for s in engine.service.list()} == {S.STOPPED}
    for w in workers:
        assert_pid_gone(w)
    assert engine.service.worker_pids() == []


def test_stop_with_abort_runs_the_abort_script_with_the_init_arguments(
    make_engine: Callable[..., Engine], tmp_path: Path
) -> None:
    abort = tmp_path / "abort.py"
    abort.write_text("args = None\ndef init(*a, **k):\n    global args\n    args = [a, k]\n"
                     "def main():\n    return args\n")  # fmt: skip
    engine: Engine = make_engine(abort_script=abort, pool_size=2)
    pid = engine.prepare_source(LOOP.replace("def main():", "def init(sub, mode=None):\n"
                                             "    pass\ndef main():"), 3, mode="fast")  # fmt: skip
    engine.wait_state(pid, S.READY)
    engine.start(pid)
    started(engine, pid)
    engine.service.stop(StopRequest(pid, abort=True))
    stopped = engine.wait_state(pid, S.STOPPED)
    # From the events, not describe(): subscribers are called on the engine loop, so a
    # predicate (run under the recorder's lock) must not wait for that loop.
    engine.wait_event(
        lambda e: (
            isinstance(e, SummaryChanged | StateChanged)
            and e.procedure_id == pid
            and e.summary.abort_procedure is not None
        ),
        "abort prepared",
    )
    aborter = engine.service.describe(pid).abort_procedure
    assert aborter is not None and stopped.state is S.STOPPED
    summary = engine.wait_state(aborter, S.COMPLETE)
    assert summary.calls[0].result == [[3], {"mode": "fast"}]


def test_abort_without_an_abort_script_is_rejected_and_changes_nothing(engine: Engine) -> None:
    pid = engine.prepare_source("def main():\n    pass\n")
    engine.wait_state(pid, S.READY)
    with pytest.raises(InvalidRequest, match="no abort script") as err:
        engine.service.stop(StopRequest(pid, abort=True))
    assert err.value.field == "abort"
    assert engine.service.describe(pid).state is S.READY


def test_spawn_start_method_runs_procedures_too(make_engine: Callable[..., Engine]) -> None:
    engine: Engine = make_engine(start_method="spawn")
    pid = engine.prepare_source("import sys\ndef main():\n    return 'spawned'\n")
    engine.wait_state(pid, S.READY, timeout=60)
    engine.start(pid)
    assert engine.wait_state(pid, S.COMPLETE).calls[0].result == "spawned"
