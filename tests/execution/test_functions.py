"""Only public functions defined in the script itself can be started (INTERFACE "Safe by default").

A name the script imported (`from os import system`), a private name, a class or a callable
object is refused before anything runs: by the service at Start (OET_InvalidRequest, the
procedure stays READY), and by the worker itself for a call that reaches it anyway (a forced call
queued before loading, or a message sent straight to a worker).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tango_oet.domain import InvalidRequest
from tango_oet.domain import ProcedureState as S
from tango_oet.execution import messages as m
from tango_oet.execution.launcher import WorkerProcess
from tango_oet.service import UserEventPublished
from tests.execution.conftest import Engine
from tests.execution.test_worker_protocol import receive_until

#: A script whose namespace holds every kind of name that must not be startable.
SCRIPT = """
import functools
import os
import os.path
from os import system
from os.path import join as joined

class Thing:
    def __init__(self, command=None):
        if command:
            os.system(command)

class _Callable:
    def __call__(self, command):
        os.system(command)

runner = _Callable()
partial_system = functools.partial(os.system)

def _helper(command):
    os.system(command)

def helper():
    return "helper ran"

def main():
    return "main ran"
"""

#: What each refused name would do if it ran: create this file.
REFUSED = ["system", "joined", "Thing", "runner", "partial_system", "_helper", "os", "functools"]
DEFINED = ["helper", "main"]


def _marker_command(marker: Path) -> str:
    return f"touch {marker}"


@pytest.mark.parametrize("force", [False, True])
def test_start_refuses_every_name_the_script_did_not_define(
    engine: Engine, tmp_path: Path, force: bool
) -> None:
    marker = tmp_path / "ran"
    pid = engine.prepare_source(SCRIPT)
    engine.wait_state(pid, S.READY)
    for name in REFUSED:
        with pytest.raises(InvalidRequest) as info:
            engine.start(pid, name, _marker_command(marker), force=force)
        assert info.value.field == "function"
        assert repr(name) in info.value.message
        # The message lists what can be called, and only that.
        assert str(DEFINED) in info.value.message
        summary = engine.service.describe(pid)
        assert summary.state is S.READY and summary.calls == ()
    assert not marker.exists()
    assert engine.states(pid)[-1] is S.READY
    # The functions the script defines still run.
    engine.start(pid, "helper")
    engine.wait_state(pid, S.RUNNING)
    engine.start(pid, "main", force=True)
    summary = engine.wait_state(pid, S.COMPLETE)
    assert [c.result for c in summary.calls] == ["helper ran", "main ran"]


def test_a_forced_call_queued_before_loading_never_runs_an_imported_name(
    engine: Engine, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    marker = tmp_path / "ran"
    os.mkfifo(gate)
    pid = engine.prepare_source(f"""
        from os import system
        from tango_oet.scripting import publish
        def init():
            publish("in-init")
            open({str(gate)!r}).read()
        def main():
            return 1
    """)
    engine.wait_event(
        lambda e: isinstance(e, UserEventPublished) and e.topic == "in-init", "init running"
    )
    # Not loaded yet: the names are unknown, so the call is queued ...
    engine.start(pid, "system", _marker_command(marker), force=True)
    with open(gate, "w") as f:
        f.write("go")
    # ... and the worker refuses it when its turn comes: nothing runs.
    summary = engine.wait_state(pid, S.FAILED)
    assert not marker.exists()
    assert summary.error is not None
    assert summary.error.type == "AttributeError"
    assert "'system'" in summary.error.message
    assert "defined in the script" in summary.error.message


def test_the_worker_lists_and_calls_only_the_functions_the_script_defines(
    worker: WorkerProcess, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    worker.handshake()
    worker.send(m.LoadScript, procedure_id=1, name="embedded://t", path=None, source=SCRIPT)
    loaded = receive_until(worker, m.Loaded)[-1]
    assert isinstance(loaded, m.Loaded)
    assert loaded.functions == tuple(DEFINED)
    # A call straight to the worker (no service in between) is refused there, before it runs.
    worker.send(m.CallFunction, call_id=0, function="system", args=(_marker_command(marker),))
    failed = receive_until(worker, m.ScriptFailed)[-1]
    assert isinstance(failed, m.ScriptFailed)
    assert failed.error_type == "AttributeError"
    assert "'system'" in failed.message and str(DEFINED) in failed.message
    info = worker.reap(timeout=10)
    assert info is not None
    assert not marker.exists()
