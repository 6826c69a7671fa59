"""The procedure lifecycle: states, triggers and the one transition table all else derives from."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType

from tango_oet.domain.errors import IllegalTransition


class ProcedureState(enum.IntEnum):
    """Lifecycle state of a procedure; values are the DevEnum indices of INTERFACE.md."""

    CREATING = 0
    IDLE = 1
    PREP_ENV = 2
    LOADING = 3
    INITIALISING = 4
    READY = 5
    RUNNING = 6
    PAUSED = 7
    STOPPING = 8
    COMPLETE = 9
    STOPPED = 10
    FAILED = 11
    UNKNOWN = 12

    def __str__(self) -> str:  # an IntEnum prints its number on 3.11; people want the label
        return self.name


class Trigger(enum.Enum):
    """What happened to a procedure: a command accepted, a worker report or a process fact."""

    ENV_STARTED = "env_started"  # git clone / environment build began
    WORKER_ATTACHED = "worker_attached"  # a live worker process now belongs to the procedure
    LOAD_STARTED = "load_started"
    INIT_STARTED = "init_started"
    LOADED = "loaded"  # module loaded and init (if any) returned
    START = "start"  # a function call was dispatched
    CALL_RETURNED = "call_returned"  # a non-main function returned
    MAIN_RETURNED = "main_returned"
    PAUSE_REACHED = "pause_reached"  # the script blocked in checkpoint() after a Pause
    RESUMED = "resumed"
    STOP = "stop"  # a Stop was accepted
    PROCESS_EXITED = "process_exited"  # the worker process was reaped
    FAILED = "failed"  # the script raised, or the worker died unexpectedly
    LOST = "lost"  # the process could not be reaped after SIGKILL
    SERVER_RESTARTED = "server_restarted"  # found not final in the store by a new server
    TIMED_OUT = "timed_out"  # a call's timeout expired and the stop it caused has ended


S = ProcedureState
T = Trigger

_PREPARING = (S.CREATING, S.IDLE, S.PREP_ENV, S.LOADING, S.INITIALISING)
_ACTIVE = (*_PREPARING, S.READY, S.RUNNING, S.PAUSED)

_table: dict[tuple[ProcedureState, Trigger], ProcedureState] = {
    (S.CREATING, T.ENV_STARTED): S.PREP_ENV,
    (S.CREATING, T.WORKER_ATTACHED): S.IDLE,
    (S.PREP_ENV, T.WORKER_ATTACHED): S.IDLE,
    (S.IDLE, T.LOAD_STARTED): S.LOADING,
    (S.LOADING, T.INIT_STARTED): S.INITIALISING,
    (S.LOADING, T.LOADED): S.READY,
    (S.INITIALISING, T.LOADED): S.READY,
    (S.READY, T.START): S.RUNNING,
    (S.RUNNING, T.CALL_RETURNED): S.READY,
    (S.RUNNING, T.MAIN_RETURNED): S.COMPLETE,
    (S.RUNNING, T.PAUSE_REACHED): S.PAUSED,
    (S.PAUSED, T.RESUMED): S.RUNNING,
    # A stop races with the script: main may still return, anything else ends as STOPPED.
    (S.STOPPING, T.MAIN_RETURNED): S.COMPLETE,
    (S.STOPPING, T.PROCESS_EXITED): S.STOPPED,
    (S.STOPPING, T.FAILED): S.STOPPED,
    (S.STOPPING, T.LOST): S.UNKNOWN,
    (S.STOPPING, T.TIMED_OUT): S.FAILED,  # the stop a Start's `timeout` caused has ended
}
for _state in _ACTIVE:
    _table[(_state, T.STOP)] = S.STOPPING
    _table[(_state, T.FAILED)] = S.FAILED
    _table[(_state, T.LOST)] = S.UNKNOWN
    # A worker that exits while its procedure is active died without saying why.
    _table[(_state, T.PROCESS_EXITED)] = S.FAILED
for _state in (*_ACTIVE, S.STOPPING):
    # The server went away while the procedure was live; its process was swept at start.
    _table[(_state, T.SERVER_RESTARTED)] = S.FAILED

TRANSITIONS: Mapping[tuple[ProcedureState, Trigger], ProcedureState] = MappingProxyType(_table)

FINAL_STATES: frozenset[ProcedureState] = frozenset(
    s for s in ProcedureState if not any(src is s for src, _ in TRANSITIONS)
)
STOPPABLE_STATES: frozenset[ProcedureState] = frozenset(
    src for (src, trig) in TRANSITIONS if trig is T.STOP
)
STARTABLE_STATES: frozenset[ProcedureState] = frozenset(
    src for (src, trig) in TRANSITIONS if trig is T.START
)
PAUSABLE_STATES: frozenset[ProcedureState] = frozenset(
    src for (src, trig) in TRANSITIONS if trig is T.PAUSE_REACHED
)
RESUMABLE_STATES: frozenset[ProcedureState] = frozenset(
    src for (src, trig) in TRANSITIONS if trig is T.RESUMED
)
#: States from which a forced Start is queued until the procedure becomes READY.
QUEUEABLE_STATES: frozenset[ProcedureState] = frozenset(
    s
    for s in ProcedureState
    if s not in FINAL_STATES and s is not S.STOPPING and s not in STARTABLE_STATES
)


def next_state(state: ProcedureState, trigger: Trigger, procedure_id: int = 0) -> ProcedureState:
    """Return the state after `trigger`, or raise IllegalTransition naming both."""
    try:
        return TRANSITIONS[(state, trigger)]
    except KeyError:
        raise IllegalTransition(procedure_id, state.name, trigger.value) from None


def is_final(state: ProcedureState) -> bool:
    """True for states a procedure never leaves."""
    return state in FINAL_STATES


def to_mermaid() -> str:
    """Render the transition table as a Mermaid state diagram (used by docs/architecture.md)."""
    lines = ["stateDiagram-v2", "    [*] --> CREATING"]
    grouped: dict[tuple[ProcedureState, ProcedureState], list[str]] = {}
    for (src, trig), dst in TRANSITIONS.items():
        grouped.setdefault((src, dst), []).append(trig.value)
    for (src, dst), trigs in grouped.items():
        lines.append(f"    {src.name} --> {dst.name}: {', '.join(trigs)}")
    lines.extend(f"    {s.name} --> [*]" for s in sorted(FINAL_STATES))
    return "\n".join(lines) + "\n"
