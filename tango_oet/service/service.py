"""ScriptExecutionService: owns every procedure's state and history; the engine's only facade.

Commands (prepare, start, stop, pause, resume) validate synchronously under one lock and
return at once; process work happens on the pool's launcher threads, the supervisor thread
and the git/environment threads, all of which report back here. Every change is published to
the event pump while the lock is held, so subscribers see changes in the order they happened.
"""

from __future__ import annotations

import builtins
import collections
import concurrent.futures
import logging
import os
import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from tango_oet.domain.errors import (
    CapacityExceeded,
    IllegalTransition,
    InvalidRequest,
    OETError,
    ScriptNotAllowed,
    ServiceUnavailable,
    UnknownProcedure,
)
from tango_oet.domain.policy import check_embedded_allowed, check_file_allowed
from tango_oet.domain.requests import PrepareRequest, ProcedureInput, StartRequest, StopRequest
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
from tango_oet.domain.summary import (
    ErrorInfo,
    ProcedureSummary,
    Progress,
    iso,
    summary_from_json,
    utc_now,
)
from tango_oet.execution import messages as m
from tango_oet.execution.containment import Containment, KillReport, instance_token
from tango_oet.execution.launcher import (
    ContextLauncher,
    ExitInfo,
    InterpreterLauncher,
    Launcher,
    WorkerProcess,
)
from tango_oet.execution.pool import WorkerPool
from tango_oet.execution.supervisor import ProcessManager
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
from tango_oet.service.procedure import PendingCall, Procedure
from tango_oet.service.pump import EventPump, Subscriber
from tango_oet.store import Store

log = logging.getLogger(__name__)

_ACTIVE_RUN = (ProcedureState.RUNNING, ProcedureState.PAUSED)


class GitProvider(Protocol):
    """The part of tango_oet.environments.EnvironmentManager the service uses."""

    def check_allowed(self, repo: str) -> None: ...
    def resolve(self, script: GitScript, progress: Any, cancel: threading.Event) -> Any: ...
    def ensure_environment(self, source: Any, progress: Any, cancel: threading.Event) -> Any: ...
    def runtime_dir(self) -> Path: ...
    def release(self, item: Any) -> None: ...
    def usage(self) -> builtins.list[dict[str, Any]]: ...
    def collect_garbage(
        self, keep: int | None = None, max_age_days: float | None = None
    ) -> builtins.list[str]: ...
    def close(self) -> None: ...


class ScriptExecutionService:
    """Prepare, start, stop, pause and resume procedures; describe them; publish their events."""

    def __init__(
        self,
        config: ServiceConfig | None = None,
        *,
        launcher: Launcher | None = None,
        git: GitProvider | None = None,
    ) -> None:
        self.config = config or ServiceConfig()
        self._lock = threading.RLock()
        self._procedures: dict[int, Procedure] = {}
        self._next_id = 1
        self._event_seq = 0
        self._closed = False
        self._started = False
        self._running = False  # open() has started every engine thread
        self._failure: str | None = None
        self._output: collections.deque[str] = collections.deque(
            maxlen=self.config.output_lines_kept
        )
        self._pump = EventPump()
        self._store: Store | None = None
        self._containment: Containment | None = None
        if self.config.instance_name:
            self._store, self._containment = _durable_parts(self.config, self._store_health)
        try:
            self._supervisor = ProcessManager(self, self.config.deadlines)
            self._pool = WorkerPool(
                launcher
                or ContextLauncher(self.config.start_method, containment=self._containment),
                self.config.pool_size,
            )
            self._git = git
            self._git_threads = concurrent.futures.ThreadPoolExecutor(
                max_workers=4, thread_name_prefix="oet-git"
            )
        except BaseException:
            # The store holds a lock on its file: left open, every later Init would fail.
            if self._containment is not None:
                self._containment.close()
            if self._store is not None:
                self._store.close()
            raise

    # ---- lifecycle -----------------------------------------------------------------------
    def open(self) -> ScriptExecutionService:
        """Start the engine's threads and warm the pool; idempotent."""
        with self._lock:
            if self._started:
                return self
            self._started = True
        self._pump.start()
        swept = self._containment.sweep() if self._containment is not None else []
        self._restore(swept)
        self._supervisor.start()
        self._pool.start()
        self._running = True
        self._publish_status()
        self.refresh_environments()
        return self

    def __enter__(self) -> ScriptExecutionService:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def shutdown(self) -> None:
        """Stop every procedure and join every process; idempotent. No child survives it."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            # A copy: a stop that ends at once (no worker yet) prunes the history.
            for proc in list(self._procedures.values()):
                if proc.state in STOPPABLE_STATES:
                    self._begin_stop(proc)
        self._git_threads.shutdown(wait=True, cancel_futures=True)
        self._pool.shutdown()
        self._supervisor.shutdown()
        with self._lock:
            for proc in list(self._procedures.values()):
                if not is_final(proc.state):
                    # Not attached to a live process any more (or never was): it did stop.
                    self._apply(proc, Trigger.PROCESS_EXITED)
        if self._git is not None:
            self._git.close()
        if self._containment is not None:
            for report in self._containment.close():
                log.warning("at shutdown, containment killed %s", report)
        if self._store is not None:
            self._store.close()
        try:
            self._pump.flush(timeout=10.0)
        except TimeoutError:  # a stuck subscriber must not keep the engine from stopping
            log.error("events still undelivered at shutdown; stopping the pump anyway")
        self._pump.stop()

    def _restore(self, swept: builtins.list[KillReport]) -> None:
        """Show the stored history again; what was live when the server went away is FAILED."""
        if self._store is None:
            return
        restored = self._store.restore(self.config.history_length, self.config.output_lines_kept)
        unaccounted = {r.procedure_id for r in swept if r.survivors}
        restarted = iso(utc_now())
        with self._lock:
            self._output.extend(restored.output)
            for obj in restored.summaries:
                try:
                    proc = Procedure.restored(summary_from_json(obj))
                except (KeyError, ValueError, TypeError, AttributeError) as exc:
                    log.error("stored procedure %r is unreadable, skipped: %r", obj.get("id"), exc)
                    continue
                self._procedures[proc.id] = proc
                if not is_final(proc.state):
                    was = proc.state.name
                    lost = proc.id in unaccounted
                    proc.error = ErrorInfo(
                        "ServerRestarted",
                        f"the server went away while procedure {proc.id} was {was}; found at "
                        f"the restart at {restarted}"
                        + (
                            ", its processes survived SIGKILL and are still being killed"
                            if lost
                            else ", its processes were killed"
                        ),
                    )
                    proc.apply(Trigger.LOST if lost else Trigger.SERVER_RESTARTED)
                self._emit(ProcedureAdded(proc.summary()))

    # ---- subscriptions -------------------------------------------------------------------
    def subscribe(self, callback: Subscriber) -> int:
        return self._pump.subscribe(callback)

    def unsubscribe(self, token: int) -> None:
        self._pump.unsubscribe(token)

    def flush_events(self, timeout: float = 5.0) -> None:
        self._pump.flush(timeout)

    # ---- queries ---------------------------------------------------------------------------
    def describe(self, procedure_id: int) -> ProcedureSummary:
        with self._lock:
            return self._get(procedure_id).summary()

    def list(self) -> builtins.list[ProcedureSummary]:
        with self._lock:
            return [p.summary() for p in self._procedures.values()]

    def next_ids(self, count: int) -> builtins.list[int]:
        """The ids the next `count` procedures will get, in order (nothing is reserved)."""
        if self._store is not None:
            return self._store.peek_ids(count)
        with self._lock:
            return builtins.list(range(self._next_id, self._next_id + count))

    def recent_output(self) -> builtins.list[str]:
        with self._lock:
            return list(self._output)

    def running_count(self) -> int:
        with self._lock:
            return self._running_locked()

    def _store_health(self, _healthy: bool, _why: str) -> None:
        """The store's writer found the disk failing or working again: say so at once."""
        if self._running and not self._closed:
            self._publish_status()

    def health(self) -> tuple[bool, str]:
        """(healthy, why): false if an engine thread died."""
        if self._failure is not None:
            return False, self._failure
        if self._store is not None:
            ok, why = self._store.health()
            if not ok:
                return False, why
        if self._started and not self._closed:
            if not self._supervisor.is_alive():
                return False, "supervisor thread is not running"
            if not self._pump.is_alive():
                return False, "event pump thread is not running"
        warning = self._containment.warning if self._containment is not None else None
        if warning:
            return True, f"engine healthy; WARNING: process containment degraded: {warning}"
        return True, "engine healthy"

    def worker_pids(self) -> builtins.list[int]:
        return self._supervisor.pids()

    @property
    def pool(self) -> WorkerPool:
        return self._pool

    # ---- environments ----------------------------------------------------------------------
    def refresh_environments(self) -> None:
        """Publish EnvironmentsChanged with current disk usage (computed off the caller)."""
        self._submit_git_task(lambda: ())

    def collect_garbage(self, keep: int | None = None, max_age_days: float | None = None) -> None:
        """Remove unused clones/environments in the background; EnvironmentsChanged follows."""
        with self._lock:
            self._check_open()
        if self._git is None:
            raise ScriptNotAllowed("git scripts (and so environments) are not enabled")
        if keep is not None and keep < 0:
            raise InvalidRequest("keep", f"must be >= 0, got {keep}")
        if max_age_days is not None and max_age_days < 0:
            raise InvalidRequest("max_age_days", f"must be >= 0, got {max_age_days}")
        git = self._git
        self._submit_git_task(lambda: tuple(git.collect_garbage(keep, max_age_days)))

    def _submit_git_task(self, task: Callable[[], tuple[str, ...]]) -> None:
        git = self._git
        if git is None:
            return

        def run() -> None:
            try:
                removed = task()
                self._emit(EnvironmentsChanged(tuple(git.usage()), removed))
            except Exception:  # a thread boundary: the next refresh will try again
                log.exception("environment maintenance failed")

        try:
            self._git_threads.submit(run)
        except RuntimeError:
            pass  # shutting down

    # ---- commands --------------------------------------------------------------------------
    def prepare(self, request: PrepareRequest) -> int:
        """Validate and create a procedure; loading and init proceed in the background."""
        script = request.script
        match script:
            case FilesystemScript():
                self._check_file(script)
            case EmbeddedScript():
                check_embedded_allowed(self.config.allow_embedded)
            case GitScript():
                if self._git is None:
                    raise ScriptNotAllowed("git scripts are not enabled on this server")
                self._git.check_allowed(script.git.repo)
        with self._lock:
            self._check_open()
        procedure_id = self._allocate_id()  # may write to disk: outside the lock
        with self._lock:
            self._check_open()
            proc = Procedure(id=procedure_id, script=script, init=request.init)
            self._procedures[proc.id] = proc
            self._emit(ProcedureAdded(proc.summary()))
            self._prune_locked()
        if isinstance(script, GitScript):
            self._git_threads.submit(self._prepare_git, proc, script)
        else:
            self._acquire_worker(proc, None)
        return proc.id

    def start(self, request: StartRequest) -> None:
        """Run a function of a READY procedure (or queue it with `force`)."""
        with self._lock:
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
            call = PendingCall(request.function, request.call)
            if proc.state in STARTABLE_STATES:
                self._check_capacity(proc)
                self._dispatch(proc, call)
            elif request.force and proc.state in QUEUEABLE_STATES:
                proc.pending.append(call)
            else:
                raise IllegalTransition(proc.id, proc.state.name, action)

    def stop(self, request: StopRequest) -> None:
        """Stop a procedure in any non-final state; with `abort`, run the abort script after."""
        with self._lock:
            self._check_open()
            proc = self._get(request.procedure_id)
            if proc.state not in STOPPABLE_STATES:
                raise IllegalTransition(proc.id, proc.state.name, "stop")
            if request.abort and self.config.abort_script is None:
                raise InvalidRequest("abort", "no abort script is configured on this server")
            proc.abort_requested = request.abort
            self._begin_stop(proc)

    def pause(self, procedure_id: int) -> None:
        with self._lock:
            self._check_open()
            proc = self._get(procedure_id)
            if proc.state not in PAUSABLE_STATES:
                raise IllegalTransition(proc.id, proc.state.name, "pause")
            assert proc.worker is not None
            proc.worker.send(m.PauseScript)

    def resume(self, procedure_id: int) -> None:
        with self._lock:
            self._check_open()
            proc = self._get(procedure_id)
            # RUNNING too: cancels a pause the script has not reached yet.
            if proc.state not in _ACTIVE_RUN:
                raise IllegalTransition(proc.id, proc.state.name, "resume")
            assert proc.worker is not None
            proc.worker.send(m.ResumeScript)

    # ---- command helpers (lock held) -------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise ServiceUnavailable("the script execution service is shut down")
        if self._failure is not None:
            raise ServiceUnavailable(f"the script execution engine failed: {self._failure}")

    def _get(self, procedure_id: int) -> Procedure:
        try:
            return self._procedures[procedure_id]
        except KeyError:
            raise UnknownProcedure(procedure_id) from None

    def _check_file(self, script: FilesystemScript) -> None:
        path = Path(os.path.realpath(script.path))
        roots = [Path(os.path.realpath(r)) for r in self.config.script_roots]
        check_file_allowed(script.path, path, roots)  # empty roots: every file:// is refused
        if not path.is_file():
            raise InvalidRequest("script", f"no such file: {script.path}")

    def _running_locked(self) -> int:
        return sum(1 for p in self._procedures.values() if p.state in _ACTIVE_RUN)

    def _check_capacity(self, proc: Procedure) -> None:
        limit = self.config.max_running
        if limit and self._running_locked() >= limit:
            raise CapacityExceeded(
                f"cannot start procedure {proc.id}: {limit} procedure(s) already running "
                f"(MaxRunning={limit})"
            )

    def _dispatch(self, proc: Procedure, call: PendingCall) -> None:
        assert proc.worker is not None
        index = proc.record_call(call.function, call.call)
        self._apply(proc, Trigger.START)
        proc.worker.send(
            m.CallFunction,
            call_id=index,
            function=call.function,
            args=call.call.args,
            kwargs=call.call.kwargs,
        )

    def _dispatch_pending(self, proc: Procedure) -> None:
        if proc.state is ProcedureState.READY and proc.pending:
            call = proc.pending.popleft()
            if self.config.max_running and self._running_locked() >= self.config.max_running:
                proc.pending.appendleft(call)  # retried when another procedure finishes
                return
            self._dispatch(proc, call)

    def _begin_stop(self, proc: Procedure) -> None:
        proc.pending.clear()
        proc.cancel.set()
        self._apply(proc, Trigger.STOP)
        if proc.worker is not None:
            self._supervisor.stop(proc.id)
        else:
            # No process yet (CREATING, PREP_ENV): nothing to wait for.
            self._apply(proc, Trigger.PROCESS_EXITED)

    # ---- state changes and events (lock held) ----------------------------------------------
    def _apply(self, proc: Procedure, trigger: Trigger) -> bool:
        try:
            proc.apply(trigger)
        except IllegalTransition:
            # Worker reports race with stops (e.g. a call returns while STOPPING): keep state.
            log.debug("procedure %d: ignored %s in %s", proc.id, trigger, proc.state.name)
            return False
        self._emit(StateChanged(proc.id, proc.state, proc.summary()))
        if proc.state in _ACTIVE_RUN or is_final(proc.state) or proc.state is ProcedureState.READY:
            self._publish_status()
        if is_final(proc.state):
            self._on_final(proc)
        return True

    def _allocate_id(self) -> int:
        """A procedure id this device never gave before (across restarts, with a store)."""
        if self._store is not None:
            return self._store.allocate_id()
        with self._lock:
            allocated = self._next_id
            self._next_id += 1
            return allocated

    def _emit(self, event: ServiceEvent) -> None:
        if self._store is not None:
            # Every summary change, user event and output line passes here, in order.
            match event:
                case (
                    ProcedureAdded(summary=s) | StateChanged(summary=s) | SummaryChanged(summary=s)
                ):
                    self._store.save(s)
                case UserEventPublished():
                    self._store.append_event(event.procedure_id, event)  # encoded by the writer
                case OutputAppended():
                    pass  # stored per procedure where the lines arrive (on_worker_message)
        self._pump.publish(event)

    def _summary_changed(self, proc: Procedure) -> None:
        self._emit(SummaryChanged(proc.id, proc.summary()))

    def _publish_status(self) -> None:
        healthy, message = self.health()
        running = self.running_count()
        self._emit(ServiceStatusChanged(running, healthy, message))

    def _on_final(self, proc: Procedure) -> None:
        proc.pending.clear()
        self._release_leases(proc)
        self._prune_locked()
        if self.config.max_running:
            for other in self._procedures.values():
                self._dispatch_pending(other)
        if proc.abort_requested and proc.state is ProcedureState.STOPPED and not self._closed:
            self._start_abort(proc)

    def _release_leases(self, proc: Procedure) -> None:
        # Clones and environments stay leased (safe from GC) only while a procedure uses them.
        leases, proc.leases = proc.leases, []
        for item in leases:
            try:
                assert self._git is not None
                self._git.release(item)
            except Exception:  # releasing must never break a state change
                log.exception("releasing %r failed", item)

    def _prune_locked(self) -> None:
        excess = len(self._procedures) - self.config.history_length
        if excess <= 0:
            return
        for pid in [p.id for p in self._procedures.values() if is_final(p.state)][:excess]:
            del self._procedures[pid]
            self._emit(ProcedureRemoved(pid))

    def _start_abort(self, proc: Procedure) -> None:
        assert self.config.abort_script is not None
        abort = Procedure(
            id=self._allocate_id(),
            script=FilesystemScript(str(self.config.abort_script)),
            init=proc.init,
        )
        abort.pending.append(PendingCall("main", ProcedureInput()))
        self._procedures[abort.id] = abort
        proc.abort_procedure = abort.id
        self._summary_changed(proc)
        self._emit(ProcedureAdded(abort.summary()))
        self._acquire_worker(abort, None)

    # ---- workers ---------------------------------------------------------------------------
    def _acquire_worker(self, proc: Procedure, launcher: Launcher | None, **load: Any) -> None:
        def attach(worker: WorkerProcess | None, error: BaseException | None) -> None:
            self._attach(proc, worker, error, load)

        try:
            self._pool.acquire(attach, launcher)
        except RuntimeError as exc:
            attach(None, exc)

    def _attach(
        self,
        proc: Procedure,
        worker: WorkerProcess | None,
        error: BaseException | None,
        load: dict[str, Any],
    ) -> None:
        with self._lock:
            if worker is None:
                if not is_final(proc.state):
                    self._fail(proc, ErrorInfo("WorkerStartError", str(error)))
                return
            if proc.state not in (ProcedureState.CREATING, ProcedureState.PREP_ENV):
                # Stopped while the worker was starting: it never belonged to anyone.
                self._discard_worker(worker)
                return
            proc.worker = worker
            proc.pid = worker.pid
            worker.assign(proc.id)
            self._apply(proc, Trigger.WORKER_ATTACHED)
            self._supervisor.watch(proc.id, worker)
            script = proc.script
            path = script.path if isinstance(script, FilesystemScript) else load.get("path")
            source = script.source if isinstance(script, EmbeddedScript) else None
            sys_path = load.get("sys_path", (os.path.dirname(path),) if path else ())
            worker.send(
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

    @staticmethod
    def _discard_worker(worker: WorkerProcess) -> None:
        worker.kill_group()
        worker.reap(timeout=5.0)
        worker.close()

    def _fail(self, proc: Procedure, error: ErrorInfo) -> None:
        proc.error = error
        self._apply(proc, Trigger.FAILED)

    # ---- git and environments (git thread) -------------------------------------------------
    def _prepare_git(self, proc: Procedure, script: GitScript) -> None:
        assert self._git is not None

        def progress(stage: str, done: float, total: float | None, message: str) -> None:
            with self._lock:
                proc.progress = Progress(done, total, f"{stage}: {message}" if message else stage)
                self._summary_changed(proc)

        try:
            with self._lock:
                if not self._apply(proc, Trigger.ENV_STARTED):
                    return
            source = self._git.resolve(script, progress, proc.cancel)
            with self._lock:
                proc.leases.append(source)
                proc.git_commit = source.commit
                self._summary_changed(proc)
            launcher: Launcher | None = None
            if script.create_env:
                env = self._git.ensure_environment(source, progress, proc.cancel)
                with self._lock:
                    proc.leases.append(env)
                    proc.environment = env.env_id
                    self._summary_changed(proc)
                launcher = InterpreterLauncher(
                    env.python, env.sys_path_runtime, containment=self._containment
                )
            self.refresh_environments()
            with self._lock:
                proc.progress = None
                if proc.state is not ProcedureState.PREP_ENV:
                    return
            self._acquire_worker(
                proc,
                launcher,
                path=str(source.script_path),
                sys_path=(str(source.script_path.parent), str(source.checkout)),
                cwd=str(source.checkout),
            )
        except OETError as exc:
            with self._lock:
                if not is_final(proc.state) and proc.state is not ProcedureState.STOPPING:
                    self._fail(proc, ErrorInfo(type(exc).__name__, exc.message))
                elif is_final(proc.state):
                    self._release_leases(proc)
        except Exception as exc:  # a thread boundary: any failure must end as FAILED
            log.exception("preparing git procedure %d failed", proc.id)
            with self._lock:
                if not is_final(proc.state):
                    self._fail(proc, ErrorInfo(type(exc).__name__, str(exc)))

    # ---- SupervisorListener (supervisor thread) ----------------------------------------------
    def on_worker_message(self, procedure_id: int, msg: m.WorkerMessage) -> None:
        with self._lock:
            proc = self._procedures.get(procedure_id)
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
                    proc.finish_call(call_id, result)
                    is_main = function == "main"
                    if not self._apply(
                        proc, Trigger.MAIN_RETURNED if is_main else Trigger.CALL_RETURNED
                    ):
                        self._summary_changed(proc)
                    self._dispatch_pending(proc)
                case m.ScriptFailed():
                    self._on_script_failed(proc, msg)
                case m.UserEvent(topic=topic, payload=payload, time=t):
                    self._event_seq += 1
                    stamp = iso(datetime.fromtimestamp(t, UTC))
                    self._emit(UserEventPublished(proc.id, topic, payload, stamp, self._event_seq))
                case m.OutputLines(lines=lines):
                    formatted = tuple(f"{proc.id} {line}" for line in lines)
                    if self._store is not None:
                        self._store.append_output(proc.id, lines)
                    self._output.extend(formatted)
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

    def on_worker_exit(self, procedure_id: int, info: ExitInfo) -> None:
        with self._lock:
            proc = self._procedures.get(procedure_id)
            if proc is None:
                return
            proc.worker = None
            if is_final(proc.state):
                if proc.error is not None and proc.error.exitcode is None:
                    e = proc.error
                    proc.error = ErrorInfo(
                        e.type, e.message, e.traceback, info.exitcode, info.signal
                    )
                    self._summary_changed(proc)
                return
            if proc.state is ProcedureState.STOPPING:
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

    def on_worker_lost(self, procedure_id: int, pid: int) -> None:
        with self._lock:
            proc = self._procedures.get(procedure_id)
            if proc is None or is_final(proc.state):
                return
            proc.error = ErrorInfo(
                "WorkerLost", f"worker process {pid} survived SIGKILL; still being killed"
            )
            self._apply(proc, Trigger.LOST)

    def on_supervisor_failed(self, error: BaseException) -> None:
        """No process is watched any more: no live procedure may look alive (it was killed)."""
        self._failure = f"supervisor thread died: {error!r}"
        with self._lock:
            for proc in list(self._procedures.values()):
                if is_final(proc.state):
                    continue
                attached = proc.worker is not None
                proc.error = ErrorInfo(
                    "SupervisorFailed",
                    f"the supervisor thread died ({error!r}) while procedure {proc.id} was "
                    f"{proc.state.name}"
                    + (
                        f"; its worker {proc.pid} was sent SIGKILL but cannot be reaped"
                        if attached
                        else ""
                    ),
                )
                proc.worker = None
                # Killed but never reaped: its fate cannot be established, hence UNKNOWN.
                self._apply(proc, Trigger.LOST if attached else Trigger.FAILED)
        self._emit(ServiceStatusChanged(self.running_count(), False, self._failure))


def _durable_parts(
    config: ServiceConfig, on_health: Callable[[bool, str], None]
) -> tuple[Store, Containment]:
    """The store and the containment of a named device; both live under its data directory."""
    key = re.sub(r"[^A-Za-z0-9_.-]", "_", config.instance_name)
    store = Store(config.data_dir / "history" / f"{key}.sqlite3", on_health=on_health)
    try:
        containment = Containment.for_instance(
            instance_token(config.instance_name, str(config.data_dir.resolve())),
            config.data_dir / "containment" / key,
        )
    except BaseException:
        store.close()
        raise
    return store, containment


def make_service(config: ServiceConfig, **kwargs: Any) -> ScriptExecutionService:
    """Build a service with git support when a data directory is configured."""
    git: GitProvider | None = kwargs.pop("git", None)
    if git is None:
        from tango_oet.environments import EnvironmentManager

        git = EnvironmentManager(
            config.data_dir,
            git_allow=config.git_allow,
            find_links=config.git_find_links,
            no_index=config.git_no_index,
            keep=config.env_keep,
            max_age_days=config.env_max_age_days,
        )
    return ScriptExecutionService(config, git=git, **kwargs)


Callback = Callable[[ServiceEvent], None]
