"""The client against a real OETScheduler: prepare, start, wait, summaries, events, errors."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tango_oet.client import (
    Event,
    IllegalTransition,
    OutputLine,
    ProcedureState,
    ProgressUpdate,
    Scheduler,
    StateChange,
    UnexpectedFinalState,
    UserEvent,
    WaitTimeout,
)
from tests.client.conftest import StartClient
from tests.client.helpers import drain, take_until
from tests.client.scripts import ADD, GATED, RAISES, WAIT_GATE
from tests.device.harness import SCRIPTS, TEST_SCRIPTS

pytestmark = pytest.mark.tango

S = ProcedureState
LIFECYCLE = [S.CREATING, S.IDLE, S.LOADING, S.INITIALISING, S.READY, S.RUNNING, S.COMPLETE]


def test_prepare_start_wait_and_summary(start_client: StartClient) -> None:
    oet = start_client()
    proc = oet.prepare(SCRIPTS / "hello_world.py", init_args=["Moon"])
    assert proc.wait("READY", timeout=20) is S.READY
    proc.start("main", 2)
    summary = proc.wait_final(timeout=20)

    assert summary.id == proc.id
    assert summary.state is S.COMPLETE
    assert summary.script_uri == f"file://{SCRIPTS / 'hello_world.py'}"
    assert summary.init_args == ["Moon"]
    assert summary.result == "said hello 2 time(s) to Moon"
    assert [c.function for c in summary.calls] == ["main"]
    assert summary.calls[0].args == [2]
    assert [s for s, _ in summary.history] == LIFECYCLE
    assert summary.progress is not None and str(summary.progress) == "2/2 greeting 2"
    assert summary.started is not None and summary.ended is not None
    assert summary.duration() is not None and summary.ended >= summary.started
    assert proc.state is S.COMPLETE
    assert [(s.id, s.state) for s in oet.procedures()] == [(proc.id, S.COMPLETE)]
    assert oet.procedure(proc.id) == proc
    assert repr(proc) == f"<Procedure {proc.id} COMPLETE on {oet.name}>"
    assert repr(oet) == f"<Scheduler {oet.name} ON, 1 procedure(s)>"


def test_embedded_script_with_keyword_arguments_and_force(start_client: StartClient) -> None:
    oet = start_client()
    proc = oet.prepare("adder", source=ADD)
    proc.start("main", 2, force=True, b=3, scale=10)  # queued until READY
    assert proc.wait_final(timeout=20).result == 50
    assert proc.summary().script_uri == "embedded://adder"


def test_wait_timeout_says_what_it_waited_for_and_the_last_state(
    start_client: StartClient, tmp_path: Path
) -> None:
    oet = start_client()
    proc = oet.prepare("gate", source=WAIT_GATE)
    proc.start("main", str(tmp_path / "never"), force=True)
    proc.wait("RUNNING", timeout=20)

    with pytest.raises(WaitTimeout) as caught:
        proc.wait("COMPLETE", timeout=0.3)
    assert caught.value.last_state is S.RUNNING
    assert caught.value.wanted == (S.COMPLETE,)
    assert str(caught.value) == (
        f"procedure {proc.id} did not reach COMPLETE within 0.3 s; last observed state: RUNNING"
    )
    assert isinstance(caught.value, TimeoutError)

    proc.stop()
    assert proc.wait_final(timeout=20).state is S.STOPPED


def test_waiting_for_a_state_it_ended_without_raises_unexpected_final_state(
    start_client: StartClient,
) -> None:
    oet = start_client()
    proc = oet.prepare(TEST_SCRIPTS / "dev_raise.py")
    proc.start(force=True)
    with pytest.raises(UnexpectedFinalState) as caught:
        proc.wait("COMPLETE", timeout=20)
    assert caught.value.state is S.FAILED
    assert str(caught.value) == f"procedure {proc.id} ended FAILED, not COMPLETE"

    # Already final: the answer is immediate, whatever the timeout.
    with pytest.raises(UnexpectedFinalState):
        proc.wait("READY", "RUNNING", timeout=0)
    assert proc.wait(timeout=0) is S.FAILED
    summary = proc.wait_final(timeout=0)
    assert summary.error is not None
    assert summary.error.type == "ValueError"
    assert "dev_raise failed on purpose with 42" in summary.error.message
    assert "_inner" in summary.error.traceback


def test_iter_events_yields_states_user_events_progress_and_output_in_order(
    start_client: StartClient, tmp_path: Path
) -> None:
    oet = start_client()
    proc = oet.prepare("gated", source=GATED, init_args=[str(tmp_path)])
    seen: list[Event] = []
    with proc.iter_events() as stream:
        proc.start(force=True)
        take_until(stream, lambda e: isinstance(e, OutputLine), seen=seen)
        (tmp_path / "1").touch()
        take_until(stream, lambda e: isinstance(e, UserEvent), seen=seen)
        (tmp_path / "2").touch()
        take_until(stream, lambda e: isinstance(e, ProgressUpdate), seen=seen)
        (tmp_path / "3").touch()
        seen += drain(stream)
    assert stream.finished

    states = [e.state for e in seen if isinstance(e, StateChange)]
    assert states == LIFECYCLE[LIFECYCLE.index(states[0]) :]  # from the state at subscription
    others = [e for e in seen if not isinstance(e, StateChange)]
    assert [str(e) for e in others] == [
        f"[{proc.id}] first line",
        f"[{proc.id}] event step " + '{"n": 1}',
        f"[{proc.id}] progress 1/2 half way",
        f"[{proc.id}] last line",
    ]
    running = next(i for i, e in enumerate(seen) if e == StateChange(proc.id, S.RUNNING))
    assert running < seen.index(others[0])
    event = others[1]
    assert isinstance(event, UserEvent) and event.payload == {"n": 1} and event.time is not None
    # The device pushes a batch's output after its state changes, so "last line" and COMPLETE
    # may arrive in either order; both arrive before the stream ends.
    assert isinstance(seen[-1], (OutputLine, StateChange))


def test_iter_events_of_an_ended_procedure_replays_its_history_and_ends(
    start_client: StartClient,
) -> None:
    oet = start_client()
    proc = oet.prepare("raises", source=RAISES)
    proc.start(force=True)
    proc.wait(timeout=20)
    history = proc.summary().history
    with proc.iter_events(linger=0.05) as stream:
        items = drain(stream)
    assert items == [StateChange(proc.id, state) for state, _ in history]
    assert [e.time for e in items if isinstance(e, StateChange)] == [t for _, t in history]
    assert items[-1] == StateChange(proc.id, S.FAILED)


def test_scheduler_events_follow_all_procedures_until_closed_from_another_thread(
    start_client: StartClient, tmp_path: Path
) -> None:
    oet = start_client()
    stream = oet.events()
    first = oet.prepare("adder", source=ADD)
    second = oet.prepare("adder", source=ADD)
    first.start("main", 1, force=True)
    second.start("main", 2, force=True)
    completed: set[int] = set()

    def both_complete(e: Event) -> bool:
        if isinstance(e, StateChange) and e.state is S.COMPLETE:
            completed.add(e.procedure_id)
        return completed == {first.id, second.id}

    seen = take_until(stream, both_complete)
    for pid in (first.id, second.id):
        states = [e.state for e in seen if isinstance(e, StateChange) and e.procedure_id == pid]
        # in lifecycle order, without gaps except INITIALISING (the script has no init)
        assert states == [s for s in LIFECYCLE if s is not S.INITIALISING]

    # close() from another thread ends a blocked iteration.
    closer = threading.Thread(target=stream.close)
    items: list[object] = []
    ended = threading.Event()

    def consume() -> None:
        items.extend(stream)
        ended.set()

    consumer = threading.Thread(target=consume)
    consumer.start()
    closer.start()
    closer.join(10)
    assert ended.wait(10), "iteration did not end after close()"
    consumer.join(10)
    assert stream.finished
    assert "closed" in repr(stream)


def test_pause_resume_and_illegal_transitions(start_client: StartClient, tmp_path: Path) -> None:
    oet = start_client()
    gate = tmp_path / "gate"
    proc = oet.prepare("gate", source=WAIT_GATE)
    proc.wait("READY", timeout=20)
    with pytest.raises(IllegalTransition) as caught:
        proc.pause()
    assert caught.value.reason == "OET_IllegalTransition"
    assert f"procedure {proc.id} is READY: cannot pause" in caught.value.desc

    proc.start("main", str(gate))
    proc.wait("RUNNING", timeout=20)
    proc.pause()
    proc.wait("PAUSED", timeout=20)
    proc.resume()
    proc.wait("RUNNING", timeout=20)
    gate.touch()
    assert proc.wait_final(timeout=20).result == "released"


def test_a_scheduler_can_wrap_an_existing_proxy(start_client: StartClient) -> None:
    oet = start_client()
    again = Scheduler(oet.proxy)
    assert again.state() == "ON"
    assert "Idle" in again.status()


def test_a_stream_of_one_procedure_starts_with_what_it_already_printed(
    start_client: StartClient,
) -> None:
    oet = start_client()
    other = oet.prepare("loud", source="def init():\n    print('not mine')\n\ndef main(): pass\n")
    proc = oet.prepare("early", source="def init():\n    print('from init')\n\ndef main(): pass\n")
    other.wait("READY", timeout=20)
    proc.wait("READY", timeout=20)
    with proc.iter_events(until_final=False) as stream:
        first = take_until(stream, lambda e: isinstance(e, OutputLine))
    assert first == [
        *(StateChange(proc.id, s) for s in [S.CREATING, S.IDLE, S.LOADING, S.INITIALISING]),
        StateChange(proc.id, S.READY),
        OutputLine(proc.id, "from init"),
    ]


def test_a_stream_focused_after_prepare_misses_nothing(start_client: StartClient) -> None:
    oet = start_client()
    source = "def init():\n    print('init ran')\n\ndef main():\n    print('main ran')\n"
    with oet.events() as stream:
        noise = oet.prepare("noise", source=source)
        proc = oet.prepare("early", source=source)
        stream.focus(proc.id)
        proc.start(force=True)
        noise.start(force=True)
        items = drain(stream)
    assert [e for e in items if isinstance(e, StateChange)] == [
        StateChange(proc.id, s) for s in LIFECYCLE
    ]
    assert [e for e in items if isinstance(e, OutputLine)] == [
        OutputLine(proc.id, "init ran"),
        OutputLine(proc.id, "main ran"),
    ]
    with pytest.raises(ValueError, match="already follows procedure"):
        stream.focus(noise.id)
