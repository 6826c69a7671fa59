"""Issue 8: one loop owns the engine, so a failure of one launch or one send stays with its
procedure, a stuck worker pipe blocks nobody else, and a dead or stuck pool thread shows in
health()."""

from __future__ import annotations

import multiprocessing.forkserver as forkserver
import os
import pickle
import signal
import threading
import time
from collections.abc import Callable, Iterator

import psutil
import pytest

from tango_oet.domain import ProcedureState as S
from tango_oet.domain import ServiceUnavailable
from tango_oet.execution.launcher import ContextLauncher, WorkerProcess
from tango_oet.service import SummaryChanged
from tests.execution.conftest import Engine

TRIVIAL = "def main(*args, **kwargs):\n    return 'done'\n"
WAIT = "def main(big=None):\n    return len(big or '')\n"


def assert_runs(engine: Engine) -> None:
    """A new procedure goes READY and COMPLETE: the engine serves everybody else."""
    pid = engine.prepare_source(TRIVIAL)
    engine.wait_state(pid, S.READY)
    engine.start(pid)
    assert engine.wait_state(pid, S.COMPLETE).calls[0].result == "done"


def assert_healthy(engine: Engine) -> None:
    healthy, why = engine.service.health()
    assert healthy, why


# ---- a launch that fails ------------------------------------------------------------------------
@pytest.fixture
def stopped_forkserver() -> Iterator[int]:
    """The forkserver running and SIGSTOPped, so a launch's request reaches it unanswered."""
    ContextLauncher("forkserver")  # sets the preload the engine's launcher uses
    forkserver.ensure_running()
    server: int = forkserver._forkserver._forkserver_pid  # type: ignore[attr-defined]
    os.kill(server, signal.SIGSTOP)
    yield server
    if forkserver._forkserver._forkserver_pid == server:  # type: ignore[attr-defined]
        # Not replaced, so not reaped yet: the pid is still this server (or its zombie).
        os.kill(server, signal.SIGKILL)


def test_a_launch_failing_with_eoferror_of_a_killed_forkserver_fails_only_that_procedure(
    make_engine: Callable[..., Engine], stopped_forkserver: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The forkserver dies after taking a launch request: the launch gets EOFError."""
    real = forkserver.read_signed
    calls: list[int] = []

    def killed_meanwhile(fd: int) -> int:
        # The launch has sent its request and waits for the pid: kill the (stopped, so not
        # yet answering) forkserver now, and wait until it is dead (without reaping it).
        if not calls:
            calls.append(fd)
            os.kill(stopped_forkserver, signal.SIGKILL)
            os.waitid(os.P_PID, stopped_forkserver, os.WEXITED | os.WNOWAIT)
        value: int = real(fd)
        return value

    monkeypatch.setattr(forkserver, "read_signed", killed_meanwhile)
    engine = make_engine(pool_size=0)
    victim = engine.prepare_source(TRIVIAL)
    summary = engine.wait_state(victim, S.FAILED)
    assert calls, "the launch never reached the forkserver"
    assert summary.error is not None and summary.error.type == "WorkerStartError"
    assert "EOFError" in summary.error.message, summary.error
    assert_healthy(engine)  # one failed launch is the procedure's, not the engine's
    assert_runs(engine)  # the next launch starts a new forkserver


class FailingOnce:
    """A launcher whose first launch raises `error` (BaseException: nothing is spared)."""

    def __init__(self, error: BaseException) -> None:
        self._inner = ContextLauncher("forkserver")
        self._error: BaseException | None = error

    @property
    def key(self) -> str:
        return self._inner.key

    def launch(self) -> WorkerProcess:
        error, self._error = self._error, None
        if error is not None:
            raise error
        return self._inner.launch()


@pytest.mark.parametrize("error", [EOFError("unexpected EOF"), RecursionError("too deep")])
def test_any_exception_of_a_launch_fails_only_that_procedure(
    make_engine: Callable[..., Engine], error: BaseException
) -> None:
    engine = make_engine(pool_size=0, launcher=FailingOnce(error))
    victim = engine.prepare_source(TRIVIAL)
    summary = engine.wait_state(victim, S.FAILED)
    assert summary.error is not None and type(error).__name__ in summary.error.message
    assert_healthy(engine)
    assert_runs(engine)


# ---- a send that fails --------------------------------------------------------------------------
def deeply_nested() -> frozenset[object]:
    # Not lists or dicts, so the request's nesting check lets it through; pickling recurses.
    value: frozenset[object] = frozenset()
    for _ in range(200_000):
        value = frozenset([value])
    return value


def caught(value: object) -> BaseException:
    """What pickling `value` raises."""
    try:
        pickle.dumps(value)
    except BaseException as exc:
        return exc
    raise AssertionError(f"{value!r} pickles")


def killed(engine: Engine, pid: int) -> None:
    """The failed procedure's worker was killed, not left waiting for what never comes."""
    engine.wait_event(
        lambda e: (
            isinstance(e, SummaryChanged)
            and e.procedure_id == pid
            and e.summary.error is not None
            and e.summary.error.signal == "SIGKILL"
        ),
        f"procedure {pid}'s worker killed",
    )


UNSENDABLE = {
    "nested too deeply": deeply_nested,
    "not picklable": threading.Lock,
}


@pytest.mark.parametrize("make_value", UNSENDABLE.values(), ids=UNSENDABLE.keys())
def test_a_prepare_whose_arguments_cannot_be_sent_fails_only_that_procedure(
    engine: Engine, make_value: Callable[[], object]
) -> None:
    bystander = engine.prepare_source(TRIVIAL)
    engine.wait_state(bystander, S.READY)
    victim = engine.prepare_source(TRIVIAL, make_value())
    summary = engine.wait_state(victim, S.FAILED)
    assert summary.error is not None
    assert "cannot send the script" in summary.error.message, summary.error
    assert summary.error.type == type(caught(make_value())).__name__
    killed(engine, victim)
    engine.start(bystander)
    assert engine.wait_state(bystander, S.COMPLETE).calls[0].result == "done"
    assert_healthy(engine)
    assert_runs(engine)


@pytest.mark.parametrize("make_value", UNSENDABLE.values(), ids=UNSENDABLE.keys())
def test_a_start_whose_arguments_cannot_be_sent_fails_only_that_procedure(
    engine: Engine, make_value: Callable[[], object]
) -> None:
    victim = engine.prepare_source(TRIVIAL)
    engine.wait_state(victim, S.READY)
    engine.start(victim, "main", make_value())
    summary = engine.wait_state(victim, S.FAILED)
    assert summary.error is not None
    assert "cannot send call main" in summary.error.message, summary.error
    assert summary.error.type == type(caught(make_value())).__name__
    killed(engine, victim)
    assert_healthy(engine)
    assert_runs(engine)


# ---- no lock across pipe I/O --------------------------------------------------------------------
def test_a_worker_that_stops_reading_blocks_no_other_procedures_command(engine: Engine) -> None:
    """A call far bigger than a socket buffer, to a worker that reads nothing: the engine
    keeps it and answers everybody else (before issue 8, the send held the engine's lock)."""
    frozen = engine.prepare_source(WAIT)
    summary = engine.wait_state(frozen, S.READY)
    assert summary.pid is not None
    os.kill(summary.pid, signal.SIGSTOP)
    try:
        big = "x" * (32 << 20)
        starter = threading.Thread(target=engine.start, args=(frozen, "main", big), daemon=True)
        starter.start()
        starter.join(10)
        assert not starter.is_alive(), "Start of the frozen procedure did not return"
        others = threading.Thread(target=assert_runs, args=(engine,), daemon=True)
        others.start()
        others.join(30)
        assert not others.is_alive(), "another procedure waited for the frozen worker's pipe"
        assert engine.service.describe(frozen).state is S.RUNNING
        assert psutil.Process(summary.pid).status() == psutil.STATUS_STOPPED  # still unread
    finally:
        try:
            os.kill(summary.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    # Once it reads again, it gets the whole call.
    assert engine.wait_state(frozen, S.COMPLETE).calls[0].result == 32 << 20


# ---- pool threads in health ---------------------------------------------------------------------
def test_a_dead_pool_thread_shows_in_health_and_fails_the_launch_it_held(
    make_engine: Callable[..., Engine],
) -> None:
    # SystemExit is not an Exception: it ends the launcher thread that meets it.
    engine = make_engine(pool_size=0, launcher=FailingOnce(SystemExit("a library exited")))
    victim = engine.prepare_source(TRIVIAL)
    summary = engine.wait_state(victim, S.FAILED)
    assert summary.error is not None and "died" in summary.error.message, summary.error
    healthy, why = engine.service.health()
    assert not healthy and "worker pool thread" in why and "died" in why, why
    with pytest.raises(ServiceUnavailable, match="died"):
        engine.prepare_source(TRIVIAL)


class Gated:
    """A launcher whose launches wait for `gate` (`entered` is set once one waits)."""

    def __init__(self) -> None:
        self._inner = ContextLauncher("forkserver")
        self.gate = threading.Event()
        self.entered = threading.Event()

    @property
    def key(self) -> str:
        return self._inner.key

    def launch(self) -> WorkerProcess:
        self.entered.set()
        if not self.gate.wait(60):
            raise RuntimeError("test gate never opened")
        return self._inner.launch()


class Clock:
    """time.monotonic, moved forward by the test."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


def test_a_stuck_pool_thread_shows_in_health(make_engine: Callable[..., Engine]) -> None:
    launcher, clock = Gated(), Clock()
    engine = make_engine(pool_size=0, launcher=launcher, clock=clock)
    pid = engine.prepare_source(TRIVIAL)
    assert launcher.entered.wait(10), "the launch never began"
    assert_healthy(engine)
    clock.offset += 120.0  # the launch has now taken two minutes
    engine.service.list()  # the loop has come round since (its own heartbeat is not stale)
    healthy, why = engine.service.health()
    assert not healthy and "stuck starting a worker" in why, why
    launcher.gate.set()
    engine.wait_state(pid, S.READY)
    assert_healthy(engine)
