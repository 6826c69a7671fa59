"""EngineCore: every procedure's state and history, changed only on the supervisor thread.

The supervisor hands the core each posted item (commands from client threads, workers from
the pool, reports from git threads) and each worker report; the core turns them into
transitions of the state table and emits one ServiceEvent per change through `_emit`, the
one place every summary change, output line and user event passes (the store is fed there).
Events reach subscribers after each step, before the step's command is answered, so a
client that got its answer can rely on the events of that command having been handed out.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import logging
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from tango_oet.domain.errors import (
    CapacityExceeded,
    IllegalTransition,
    InvalidRequest,
    OETError,
    ServiceUnavailable,
    UnknownProcedure,
)
from tango_oet.domain.requests import ProcedureInput, StartRequest, StopRequest
from tango_oet.domain.scripts import EmbeddedScript, FilesystemScript, GitScript
from tango_oet.domain.states import (
    PAUSABLE_STATES,
    QUEUEABLE_STATES,
    STARTABLE_STATES,
    STOPPABLE_STATES,
    ProcedureState,
    Trigger,
    is_final,
)
from tango_oet.domain.summary import ErrorInfo, ProcedureSummary, Progress, iso
from tango_oet.execution import messages as m
from tango_oet.execution.launcher import ExitInfo, Launcher, WorkerProcess
from tango_oet.execution.pool import WorkerPool
from tango_oet.execution.supervisor import Supervisor
from tango_oet.service import commands as c
from tango_oet.service.admission import Admission
from tango_oet.service.config import ServiceConfig
from tango_oet.service.events import (
    EnvironmentsChanged,
    OutputAppended,
    ProcedureAdded,
    ProcedureRemoved,
    ServiceEvent,
    ServiceStatusChanged,
    StateChanged,
    SummaryChanged,
    UserEventPublished,
)
from tango_oet.service.outbox import Outbox
from tango_oet.service.procedure import PendingCall, Procedure

log = logging.getLogger(__name__)

_ACTIVE_RUN = (ProcedureState.RUNNING, ProcedureState.PAUSED)
_WAITING_FOR_WORKER = (ProcedureState.CREATING, ProcedureState.PREP_ENV)


class LoopGone(Exception):
    """The loop ended before it could answer (the caller answers queries from the tables)."""


class EngineCore:
    """The supervisor's Handler; nothing here may be called from another thread once it runs."""

    def __init__(
        self,
        config: ServiceConfig,
        supervisor: Supervisor,
        pool: WorkerPool,
        outbox: Outbox,
        health: Callable[[], tuple[bool, str]],
        git: Any,
        git_threads: concurrent.futures.ThreadPoolExecutor,
        run_git: Callable[[int, GitScript, threading.Event], None],
        store: Any,
    ) -> None:
        self.config = config
        self._supervisor = supervisor
        self._pool = pool
        self._outbox = outbox
        self._health = health
        self._git = git
        self._git_threads = git_threads
        self._run_git = run_git
        self._store = store
        self.procedures: dict[int, Procedure] = {}
        self._launches: dict[int, tuple[int, dict[str, Any]]] = {}  # ticket -> (id, load)
        self._tickets = itertools.count(1)
        self._event_seq = 0
        self.output: collections.deque[str] = collections.deque(maxlen=config.output_lines_kept)
        self.running = 0  # procedures RUNNING or PAUSED (read by other threads: an int)
        self.closing = False

    # ---- Handler: posted items ---------------------------------------------------------------
    def handle(self, item: object) -> None:
        if isinstance(item, c.Command):
            self._answer(item)
            return
        try:
            self._report(item)
        except Exception as exc:  # one report fails its procedure, not the engine
            log.exception("handling %r failed", item)
            procedure_id = getattr(item, "procedure_id", None)
            proc = self.procedures.get(procedure_id) if procedure_id is not None else None
            if proc is not None:
                self._fail_hard(proc, ErrorInfo("EngineError", f"{type(exc).__name__}: {exc}"))
            worker = item.worker if isinstance(item, c.WorkerDelivered) else None
            if worker is not None and worker not in self._attached_workers():
                self._supervisor.discard(worker)
        self._outbox.deliver()

    def _answer(self, command: c.Command) -> None:
        if not command.future.set_running_or_notify_cancel():
            return  # the caller gave up waiting before the loop got to it: do nothing
        try:
            result = self.execute(command)
        except OETError as exc:
            self._outbox.deliver()
            command.future.set_exception(exc)
            return
        except Exception as exc:
            log.exception("command %r failed", command)
            self._outbox.deliver()
            command.future.set_exception(
                ServiceUnavailable(f"the engine failed on {type(command).__name__}: {exc!r}")
            )
            return
        self._outbox.deliver()
        command.future.set_result(result)

    def reject(self, item: object) -> None:
        """The loop ended with `item` unhandled."""
        if isinstance(item, c.Command) and item.future.set_running_or_notify_cancel():
            item.future.set_exception(LoopGone())
        elif isinstance(item, c.WorkerDelivered) and item.worker is not None:
            _discard_now(item.worker)
        elif isinstance(item, c.GitLeased):
            self._release_lease(item.item)

    def execute(self, command: c.Command) -> Any:
        """Run one command; also called directly for queries once the loop is gone."""
        match command:
            case c.Describe(procedure_id=pid):
                return self._get(pid).summary()
            case c.ListAll():
                return self.summaries()
            case c.RecentOutput():
                return list(self.output)
            case c.Flush():
                return None
            case c.Commit(admission=admission, source=source):
                return self._commit(admission, source)
            case c.Start(request=request):
                return self._start(request)
            case c.Stop(request=request, abort_id=abort_id):
                return self._stop(request, abort_id)
            case c.Pause(procedure_id=pid):
                return self._pause(pid)
            case c.Resume(procedure_id=pid):
                return self._resume(pid)
            case c.BeginShutdown():
                return self._begin_shutdown()
        raise TypeError(f"not a command: {command!r}")

    def summaries(self) -> list[ProcedureSummary]:
        return [self.procedures[i].summary() for i in sorted(self.procedures)]

    # ---- commands ----------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self.closing:
            raise ServiceUnavailable("the script execution service is shut down")

    def _get(self, procedure_id: int) -> Procedure:
        try:
            return self.procedures[procedure_id]
        except KeyError:
            raise UnknownProcedure(procedure_id) from None

    def _commit(self, admission: Admission, source: str | None = None) -> int:
        self._check_open()
        problem = self._pool.health()
        if problem is not None and "died" in problem:
            raise ServiceUnavailable(f"cannot start workers: {problem}")
        request = admission.request
        if admission.procedure_id in self.procedures:
            raise InvalidRequest("admission", f"procedure {admission.procedure_id} exists")
        limit = self.config.max_live
        if limit:
            live = sum(1 for p in self.procedures.values() if not is_final(p.state))
            if live >= limit:
                raise CapacityExceeded(
                    f"cannot prepare: {live} procedure(s) already hold a process (MaxLive={limit})"
                )
        proc = Procedure(id=admission.procedure_id, script=request.script, init=request.init)
        proc.checked_source = source
        self.procedures[proc.id] = proc
        self._emit(ProcedureAdded(proc.summary()))
        self._prune()
        self._begin_loading(proc)
        return proc.id

    def _begin_loading(self, proc: Procedure) -> None:
        script = proc.script
        if not isinstance(script, GitScript):
            self._acquire_worker(proc, None, {})
            return
        self._apply(proc, Trigger.ENV_STARTED)
        try:
            self._git_threads.submit(self._run_git, proc.id, script, proc.cancel)
        except RuntimeError as exc:  # shut down meanwhile
            self._fail(proc, ErrorInfo("ServiceUnavailable", f"cannot prepare: {exc}"))

    def _start(self, request: StartRequest) -> None:
        self._check_open()
        proc = self._get(request.procedure_id)
        action = f"start {request.function}"
        if proc.functions is not None and request.function not in proc.functions:
            raise InvalidRequest(
                "function",
                f"procedure {proc.id} has no function {request.function!r} of its own "
                f"(only public functions defined in the script can be started); "
                f"it defines {list(proc.functions)}",
            )
        call = PendingCall(request.function, request.call, request.timeout)
        if proc.state in STARTABLE_STATES:
            self._check_capacity(proc)
            self._dispatch(proc, call)
        elif request.force and proc.state in QUEUEABLE_STATES:
            proc.pending.append(call)
        else:
            raise IllegalTransition(proc.id, proc.state.name, action)

    def _stop(self, request: StopRequest, abort_id: int | None) -> None:
        self._check_open()
        proc = self._get(request.procedure_id)
        if proc.state not in STOPPABLE_STATES:
            raise IllegalTransition(proc.id, proc.state.name, "stop")
        if request.abort and (self.config.abort_script is None or abort_id is None):
            raise InvalidRequest("abort", "no abort script is configured on this server")
        proc.abort_requested = request.abort
        proc.abort_id = abort_id
        self._begin_stop(proc)

    def _pause(self, procedure_id: int) -> None:
        self._check_open()
        proc = self._get(procedure_id)
        if proc.state not in PAUSABLE_STATES:
            raise IllegalTransition(proc.id, proc.state.name, "pause")
        self._supervisor.send(proc.id, m.PauseScript)

    def _resume(self, procedure_id: int) -> None:
        self._check_open()
        proc = self._get(procedure_id)
        # RUNNING too: cancels a pause the script has not reached yet.
        if proc.state not in _ACTIVE_RUN:
            raise IllegalTransition(proc.id, proc.state.name, "resume")
        self._supervisor.send(proc.id, m.ResumeScript)

    def _begin_shutdown(self) -> None:
        self.closing = True
        # A copy: a stop that ends at once (no worker yet) prunes the history.
        for proc in list(self.procedures.values()):
            if proc.state in STOPPABLE_STATES:
                self._begin_stop(proc)

    def _check_capacity(self, proc: Procedure) -> None:
        limit = self.config.max_running
        if limit and self.running >= limit:
            raise CapacityExceeded(
                f"cannot start procedure {proc.id}: {limit} procedure(s) already running "
                f"(MaxRunning={limit})"
            )

    def _dispatch(self, proc: Procedure, call: PendingCall) -> None:
        index = proc.record_call(call.function, call.call)
        self._apply(proc, Trigger.START)
        try:
            self._supervisor.send(
                proc.id,
                m.CallFunction,
                call_id=index,
                function=call.function,
                args=call.call.args,
                kwargs=call.call.kwargs,
            )
            self._supervisor.set_call_deadline(proc.id, call.timeout)
            proc.call_timeout = (call.function, call.timeout)
        except Exception as exc:  # e.g. arguments that cannot be pickled: only this one fails
            self._fail_hard(
                proc,
                ErrorInfo(
                    type(exc).__name__, f"cannot send call {call.function} to the worker: {exc}"
                ),
            )

    def _dispatch_pending(self, proc: Procedure) -> None:
        if proc.state is ProcedureState.READY and proc.pending:
            if self.config.max_running and self.running >= self.config.max_running:
                return  # retried when another procedure finishes
            self._dispatch(proc, proc.pending.popleft())

    def _begin_stop(self, proc: Procedure) -> None:
        proc.pending.clear()
        proc.cancel.set()
        self._apply(proc, Trigger.STOP)
        if proc.worker is not None:
            self._supervisor.stop(proc.id)
            return
        # No process yet (CREATING, PREP_ENV): nothing to wait for.
        if proc.launch_ticket is not None and self._pool.cancel(proc.launch_ticket):
            self._launches.pop(proc.launch_ticket, None)
        proc.launch_ticket = None
        self._apply(proc, Trigger.PROCESS_EXITED)

    # ---- state changes and events --------------------------------------------------------------
    def _apply(self, proc: Procedure, trigger: Trigger) -> bool:
        before = proc.state
        try:
            proc.apply(trigger)
        except IllegalTransition:
            # Worker reports race with stops (e.g. a call returns while STOPPING): keep state.
            log.debug("procedure %d: ignored %s in %s", proc.id, trigger, proc.state.name)
            return False
        self.running += (proc.state in _ACTIVE_RUN) - (before in _ACTIVE_RUN)
        self._emit(StateChanged(proc.id, proc.state, proc.summary()))
        if proc.state in _ACTIVE_RUN or is_final(proc.state) or proc.state is ProcedureState.READY:
            self.publish_status()
        if is_final(proc.state):
            self._on_final(proc)
        return True

    def _emit(self, event: ServiceEvent) -> None:
        """The one place every service event passes, in order (the store records it here)."""
        if self._store is not None:
            match event:
                case (
                    ProcedureAdded(summary=s) | StateChanged(summary=s) | SummaryChanged(summary=s)
                ):
                    self._store.save(s)
                case UserEventPublished():
                    self._store.append_event(event.procedure_id, event)  # encoded by the writer
                case OutputAppended():
                    pass  # stored per procedure where the lines arrive (on_worker_message)
        self._outbox.add(event)

    def _summary_changed(self, proc: Procedure) -> None:
        self._emit(SummaryChanged(proc.id, proc.summary()))

    def publish_status(self) -> None:
        healthy, message = self._health()
        self._emit(ServiceStatusChanged(self.running, healthy, message))

    def _on_final(self, proc: Procedure) -> None:
        proc.pending.clear()
        leases, proc.leases = proc.leases, []
        for item in leases:
            self._release_lease(item)
        self._prune()
        if self.config.max_running:
            for other in list(self.procedures.values()):
                self._dispatch_pending(other)
        if proc.abort_requested and proc.state is ProcedureState.STOPPED and not self.closing:
            self._start_abort(proc)

    def _release_lease(self, item: Any) -> None:
        # Clones and environments stay leased (safe from GC) only while a procedure uses them.
        def release() -> None:
            try:
                self._git.release(item)
            except Exception:  # releasing must never break anything else
                log.exception("releasing %r failed", item)

        try:
            self._git_threads.submit(release)
        except RuntimeError:  # shutting down: the git threads are gone
            release()

    def _prune(self) -> None:
        excess = len(self.procedures) - self.config.history_length
        if excess <= 0:
            return
        finals = sorted(p.id for p in self.procedures.values() if is_final(p.state))
        for pid in finals[:excess]:
            del self.procedures[pid]
            self._emit(ProcedureRemoved(pid))

    def _start_abort(self, proc: Procedure) -> None:
        assert self.config.abort_script is not None and proc.abort_id is not None
        abort = Procedure(
            id=proc.abort_id,
            script=FilesystemScript(str(self.config.abort_script)),
            init=proc.init,
        )
        abort.pending.append(PendingCall("main", ProcedureInput()))
        self.procedures[abort.id] = abort
        proc.abort_procedure = abort.id
        self._summary_changed(proc)
        self._emit(ProcedureAdded(abort.summary()))
        self._acquire_worker(abort, None, {})

    def _fail(self, proc: Procedure, error: ErrorInfo) -> None:
        proc.error = error
        self._apply(proc, Trigger.FAILED)

    def _fail_hard(self, proc: Procedure, error: ErrorInfo) -> None:
        """Fail for a reason the script cannot tidy up after: its worker is killed."""
        if not is_final(proc.state):
            self._fail(proc, error)
        if proc.worker is not None:
            self._supervisor.kill(proc.id)

    # ---- workers ---------------------------------------------------------------------------
    def _attached_workers(self) -> set[WorkerProcess]:
        return {p.worker for p in self.procedures.values() if p.worker is not None}

    def _acquire_worker(
        self, proc: Procedure, launcher: Launcher | None, load: dict[str, Any]
    ) -> None:
        ticket = next(self._tickets)
        try:
            worker = self._pool.acquire(ticket, launcher)
        except Exception as exc:
            self._fail(proc, ErrorInfo("WorkerStartError", f"{type(exc).__name__}: {exc}"))
            return
        if worker is None:
            self._launches[ticket] = (proc.id, load)
            proc.launch_ticket = ticket
            return
        self._attach(proc, worker, load)

    def _on_delivered(self, item: c.WorkerDelivered) -> None:
        procedure_id, load = self._launches.pop(item.ticket, (None, {}))
        proc = self.procedures.get(procedure_id) if procedure_id is not None else None
        if proc is not None and proc.launch_ticket == item.ticket:
            proc.launch_ticket = None
        if item.worker is None:
            if proc is not None and not is_final(proc.state):
                error = item.error
                text = f"{type(error).__name__}: {error}" if error else "no worker"
                self._fail(proc, ErrorInfo("WorkerStartError", f"cannot start a worker: {text}"))
            return
        if proc is None or proc.state not in _WAITING_FOR_WORKER or self.closing:
            # Stopped while the worker was starting: it never belonged to anyone.
            self._supervisor.discard(item.worker)
            return
        self._attach(proc, item.worker, load)

    def _attach(self, proc: Procedure, worker: WorkerProcess, load: dict[str, Any]) -> None:
        proc.worker = worker
        proc.pid = worker.pid
        self._supervisor.watch(proc.id, worker)  # from here on, the supervisor ends it
        self._supervisor.assign(proc.id, worker)
        self._apply(proc, Trigger.WORKER_ATTACHED)
        script = proc.script
        path = script.path if isinstance(script, FilesystemScript) else load.get("path")
        # A file:// script runs as the text read from the very file that was checked (the
        # path alone could be re-pointed by a symlink between the check and the worker's open).
        source = script.source if isinstance(script, EmbeddedScript) else proc.checked_source
        sys_path = load.get("sys_path", (os.path.dirname(path),) if path else ())
        try:
            self._supervisor.send(
                proc.id,
                m.LoadScript,
                procedure_id=proc.id,
                name=script.uri,
                path=path,
                source=source,
                init_args=proc.init.args,
                init_kwargs=proc.init.kwargs,
                sys_path=tuple(sys_path),
                cwd=load.get("cwd"),
            )
        except Exception as exc:  # e.g. RecursionError pickling init args: only this one fails
            self._fail_hard(
                proc,
                ErrorInfo(
                    type(exc).__name__, f"cannot send the script to worker {worker.pid}: {exc}"
                ),
            )

    # ---- reports from the pool and the git threads -----------------------------------------
    def _report(self, item: object) -> None:
        match item:
            case c.WorkerDelivered():
                self._on_delivered(item)
            case c.PublishStatus():
                self.publish_status()
            case c.EnvironmentUsage(entries=entries, removed=removed):
                self._emit(EnvironmentsChanged(entries, removed))
            case c.GitProgress(procedure_id=pid, progress=progress):
                proc = self.procedures.get(pid)
                if proc is not None and not is_final(proc.state):
                    proc.progress = progress
                    self._summary_changed(proc)
            case c.GitLeased(procedure_id=pid):
                proc = self.procedures.get(pid)
                if proc is None or is_final(proc.state):
                    self._release_lease(item.item)
                    return
                proc.leases.append(item.item)
                if item.commit is not None:
                    proc.git_commit = item.commit
                if item.environment is not None:
                    proc.environment = item.environment
                self._summary_changed(proc)
            case c.GitReady(procedure_id=pid, launcher=launcher, load=load):
                proc = self.procedures.get(pid)
                if proc is not None and proc.state is ProcedureState.PREP_ENV:
                    proc.progress = None
                    self._acquire_worker(proc, launcher, load)
            case c.GitFailed(procedure_id=pid, error=error):
                proc = self.procedures.get(pid)
                live = proc is not None and not is_final(proc.state)
                if live and proc is not None and proc.state is not ProcedureState.STOPPING:
                    self._fail(proc, error)
            case _:
                raise TypeError(f"unexpected item {item!r}")

    # ---- Handler: the supervisor's reports ---------------------------------------------------
    def after_batch(self) -> None:
        self._outbox.deliver()

    def on_worker_message(self, procedure_id: int, msg: m.WorkerMessage) -> None:
        proc = self.procedures.get(procedure_id)
        if proc is None:
            return
        match msg:
            case m.LoadStarted():
                self._apply(proc, Trigger.LOAD_STARTED)
            case m.InitStarted():
                self._apply(proc, Trigger.INIT_STARTED)
            case m.Loaded(functions=functions):
                proc.functions = functions
                self._apply(proc, Trigger.LOADED)
                self._dispatch_pending(proc)
            case m.CallReturned(call_id=call_id, function=function, result=result):
                self._supervisor.set_call_deadline(proc.id, None)
                proc.finish_call(call_id, result)
                is_main = function == "main"
                if not self._apply(
                    proc, Trigger.MAIN_RETURNED if is_main else Trigger.CALL_RETURNED
                ):
                    self._summary_changed(proc)
                self._dispatch_pending(proc)
            case m.ScriptFailed():
                self._supervisor.set_call_deadline(proc.id, None)
                self._on_script_failed(proc, msg)
            case m.UserEvent(topic=topic, payload=payload, time=t):
                self._event_seq += 1
                stamp = iso(datetime.fromtimestamp(t, UTC))
                self._emit(UserEventPublished(proc.id, topic, payload, stamp, self._event_seq))
            case m.OutputLines(lines=lines):
                formatted = tuple(f"{proc.id} {line}" for line in lines)
                if self._store is not None:
                    self._store.append_output(proc.id, lines)
                self.output.extend(formatted)
                self._emit(OutputAppended(formatted))
            case m.ProgressReport(done=done, total=total, message=message):
                proc.progress = Progress(done, total, message)
                self._summary_changed(proc)
            case m.PauseReached():
                self._apply(proc, Trigger.PAUSE_REACHED)
            case m.ResumedRunning():
                self._apply(proc, Trigger.RESUMED)
            case m.WorkerReady():
                pass  # consumed by the handshake; a duplicate is harmless

    def _on_script_failed(self, proc: Procedure, msg: m.ScriptFailed) -> None:
        if proc.state is ProcedureState.STOPPING and msg.error_type in (
            "StopRequested",
            "ScriptTerminated",
        ):
            return  # the stop we asked for; the exit makes it STOPPED
        error = ErrorInfo(msg.error_type, msg.message, msg.traceback)
        if proc.state is ProcedureState.STOPPING:
            proc.error = error
            self._summary_changed(proc)
            return
        self._fail(proc, error)

    def on_worker_broken(self, procedure_id: int, problem: str) -> None:
        proc = self.procedures.get(procedure_id)
        if proc is not None and not is_final(proc.state):
            self._fail(proc, ErrorInfo("WorkerProtocolError", problem))

    def on_worker_exit(self, procedure_id: int, info: ExitInfo) -> None:
        proc = self.procedures.get(procedure_id)
        if proc is None:
            return
        proc.worker = None
        if is_final(proc.state):
            if proc.error is not None and proc.error.exitcode is None:
                e = proc.error
                proc.error = ErrorInfo(e.type, e.message, e.traceback, info.exitcode, info.signal)
                self._summary_changed(proc)
            return
        if proc.state is ProcedureState.STOPPING:
            if proc.timed_out is not None:
                proc.error = proc.timed_out
                self._apply(proc, Trigger.TIMED_OUT)
            else:
                self._apply(proc, Trigger.PROCESS_EXITED)
            return
        self._fail(
            proc,
            ErrorInfo(
                "WorkerDied",
                f"worker process {proc.pid} {info.describe()} while {proc.state.name}",
                exitcode=info.exitcode,
                signal=info.signal,
            ),
        )

    def on_call_timeout(self, procedure_id: int) -> None:
        """A Start's `timeout` expired: the stop ladder ends the call, the procedure FAILED."""
        proc = self.procedures.get(procedure_id)
        if proc is None or proc.state not in (ProcedureState.RUNNING, ProcedureState.PAUSED):
            return
        function, seconds = proc.call_timeout or ("?", None)
        proc.timed_out = ErrorInfo(
            "Timeout", f"call {function} did not end within its timeout of {seconds} s"
        )
        self._begin_stop(proc)

    def on_worker_lost(self, procedure_id: int, pid: int) -> None:
        proc = self.procedures.get(procedure_id)
        if proc is None or is_final(proc.state):
            return
        proc.error = ErrorInfo(
            "WorkerLost", f"worker process {pid} survived SIGKILL; still being killed"
        )
        self._apply(proc, Trigger.LOST)

    def on_loop_exit(self) -> None:
        """Every worker has been reaped: what is not final has no process, so it did stop."""
        for proc in list(self.procedures.values()):
            if not is_final(proc.state):
                proc.worker = None
                self._apply(proc, Trigger.PROCESS_EXITED)

    def on_loop_failed(self, reason: str, fates: dict[int, ExitInfo | None]) -> None:
        """The supervisor died (it killed every worker first): no procedure may look alive."""
        self.closing = True
        for proc in list(self.procedures.values()):
            if is_final(proc.state):
                continue
            attached = proc.worker is not None
            info = fates.get(proc.id)
            text = f"{reason}; procedure {proc.id} was {proc.state.name}"
            if attached and info is not None:
                proc.error = ErrorInfo(
                    "SupervisorFailed", f"{text}; its worker {proc.pid} was killed",
                    exitcode=info.exitcode, signal=info.signal,
                )  # fmt: skip
                trigger = Trigger.FAILED
            elif attached:
                # Killed but not reaped: its fate cannot be established, hence UNKNOWN.
                proc.error = ErrorInfo(
                    "SupervisorFailed",
                    f"{text}; its worker {proc.pid} was sent SIGKILL but is not reaped yet "
                    "(still being killed)",
                )
                trigger = Trigger.LOST
            else:
                proc.error = ErrorInfo("SupervisorFailed", text)
                trigger = Trigger.FAILED
            proc.worker = None
            if not self._apply(proc, trigger):
                self._apply(proc, Trigger.FAILED)
        self._emit(ServiceStatusChanged(self.running, False, reason))


def _discard_now(worker: WorkerProcess) -> None:
    try:
        worker.kill_group()
        worker.reap(timeout=5.0)
    finally:
        worker.close()
