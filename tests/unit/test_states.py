"""The transition table is the one source of the lifecycle; everything else derives from it."""

from __future__ import annotations

import pytest

from tango_oet.domain import (
    FINAL_STATES,
    STOPPABLE_STATES,
    TRANSITIONS,
    IllegalTransition,
    next_state,
)
from tango_oet.domain import ProcedureState as S
from tango_oet.domain import Trigger as T
from tango_oet.domain.states import QUEUEABLE_STATES, STARTABLE_STATES, to_mermaid


def test_labels_are_the_interface_labels_in_order() -> None:
    assert [s.name for s in S] == [
        "CREATING",
        "IDLE",
        "PREP_ENV",
        "LOADING",
        "INITIALISING",
        "READY",
        "RUNNING",
        "PAUSED",
        "STOPPING",
        "COMPLETE",
        "STOPPED",
        "FAILED",
        "UNKNOWN",
    ]
    assert [s.value for s in S] == list(range(13))


def test_final_states_are_derived() -> None:
    assert FINAL_STATES == {S.COMPLETE, S.STOPPED, S.FAILED, S.UNKNOWN}


def test_every_non_final_state_can_be_stopped_or_is_stopping() -> None:
    assert STOPPABLE_STATES == set(S) - FINAL_STATES - {S.STOPPING}
    assert STARTABLE_STATES == {S.READY}
    assert S.READY not in QUEUEABLE_STATES and S.STOPPING not in QUEUEABLE_STATES


def test_every_state_is_reachable_from_creating() -> None:
    seen, frontier = {S.CREATING}, [S.CREATING]
    while frontier:
        src = frontier.pop()
        for (s, _), dst in TRANSITIONS.items():
            if s is src and dst not in seen:
                seen.add(dst)
                frontier.append(dst)
    assert seen == set(S)


def test_every_non_final_state_can_fail_or_end() -> None:
    for state in set(S) - FINAL_STATES:
        assert next_state(state, T.LOST) is S.UNKNOWN
        assert next_state(state, T.PROCESS_EXITED) in FINAL_STATES


def test_illegal_transition_is_typed_and_named() -> None:
    with pytest.raises(IllegalTransition) as err:
        next_state(S.COMPLETE, T.START, procedure_id=7)
    assert err.value.reason == "OET_IllegalTransition"
    assert str(err.value) == "procedure 7 is COMPLETE: cannot start"


@pytest.mark.parametrize("final", sorted(FINAL_STATES))
def test_final_states_have_no_way_out(final: S) -> None:
    for trigger in T:
        with pytest.raises(IllegalTransition):
            next_state(final, trigger)


def test_stop_races_resolve_sensibly() -> None:
    assert next_state(S.STOPPING, T.MAIN_RETURNED) is S.COMPLETE
    assert next_state(S.STOPPING, T.FAILED) is S.STOPPED
    assert next_state(S.STOPPING, T.PROCESS_EXITED) is S.STOPPED
    assert next_state(S.RUNNING, T.PROCESS_EXITED) is S.FAILED


def test_diagram_mentions_every_transition() -> None:
    diagram = to_mermaid()
    for (src, trig), dst in TRANSITIONS.items():
        assert f"{src.name} --> {dst.name}" in diagram
        assert trig.value in diagram
