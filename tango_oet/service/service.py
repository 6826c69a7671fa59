"""ScriptExecutionService: the engine's only facade; commands go into the one engine loop.

Every procedure's state is owned by the supervisor's thread (the loop, `EngineCore` runs
there). A command validates what needs no state on the caller's thread (script location,
nesting, ids), then posts a typed command into the loop and waits for its answer (with a
timeout, so a stuck engine answers ServiceUnavailable instead of stalling a Tango thread).
Nothing here holds a lock across I/O, and nothing calls back into the service: the pool and
the git threads only post into the loop.
"""

from __future__ import annotations

import builtins
import concurrent.futures
import logging
import os
import re
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from tango_oet.domain.errors import (
    InvalidRequest,
    OETError,
    ScriptNotAllowed,
    ServiceUnavailable,
)
from tango_oet.domain.policy import check_embedded_allowed, check_file_allowed
from tango_oet.domain.requests import PrepareRequest, StartRequest, StopRequest
from tango_oet.domain.scripts import EmbeddedScript, FilesystemScript, GitScript
from tango_oet.domain.states import Trigger, is_final
from tango_oet.domain.summary import (
    ErrorInfo,
    ProcedureSummary,
    Progress,
    iso,
    summary_from_json,
    utc_now,
)
from tango_oet.execution.containment import Containment, KillReport, instance_token
from tango_oet.execution.launcher import (
    ContextLauncher,
    InterpreterLauncher,
    Launcher,
    WorkerProcess,
)
from tango_oet.execution.pool import WorkerPool
from tango_oet.execution.supervisor import Supervisor
from tango_oet.service import commands as c
from tango_oet.service.admission import Admission
from tango_oet.service.config import ServiceConfig
from tango_oet.service.core import EngineCore, LoopGone
from tango_oet.service.events import ProcedureAdded, ServiceEvent
from tango_oet.service.outbox import Outbox, Subscriber
from tango_oet.service.procedure import Procedure
from tango_oet.store import Store

log = logging.getLogger(__name__)

SHUTDOWN_FLUSH_S = 10.0


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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config or ServiceConfig()
        self._lifecycle = threading.Lock()
        self._inline = threading.Lock()  # serialises answers from the tables once the loop is gone
        self._started = False
        self._closed = False
        self._running = False  # open() has started every engine thread
        self._ids_lock = threading.Lock()
        self._next_id = 1  # without a store (engine tests): ids of this run only
        self._store: Store | None = None
        self._containment: Containment | None = None
        if self.config.worker_limits.user and os.geteuid() != 0:
            log.warning(
                "WorkerUser %r is ignored: the server does not run as root, so its workers "
                "run as its own account",
                self.config.worker_limits.user,
            )
        if self.config.instance_name:
            self._store, self._containment = _durable_parts(self.config, self._store_health)
        try:
            self._outbox = Outbox()
            self._supervisor = Supervisor(self.config.deadlines, clock=clock)
            self._pool = WorkerPool(
                launcher
                or ContextLauncher(
                    self.config.start_method,
                    containment=self._containment,
                    environment=self.config.worker_environment,
                    limits=self.config.worker_limits,
                ),
                self.config.pool_size,
                clock=clock,
            )
            self._git = git
            self._git_threads = concurrent.futures.ThreadPoolExecutor(
                max_workers=4, thread_name_prefix="oet-git"
            )
            self._core = EngineCore(
                self.config,
                self._supervisor,
                self._pool,
                self._outbox,
                self.health,
                git,
                self._git_threads,
                self._run_git,
                self._store,
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
        with self._lifecycle:
            if self._started:
                return self
            self._started = True
        swept = self._containment.sweep() if self._containment is not None else []
        self._restore(swept)  # the loop is not running yet: the tables are ours for now
        self._supervisor.start(self._core)
        self._pool.start(self._deliver_worker)
        self._running = True
        self._supervisor.post(c.PublishStatus())
        self.refresh_environments()
        return self

    def __enter__(self) -> ScriptExecutionService:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def shutdown(self) -> None:
        """Stop every procedure and join every process; idempotent. No child survives it."""
        with self._lifecycle:
            if self._closed:
                return
            self._closed = True
            started = self._started
        if started:
            try:
                self._call(c.BeginShutdown())
            except ServiceUnavailable as exc:
                log.error("shutting down an engine that does not answer: %s", exc)
            self._git_threads.shutdown(wait=True, cancel_futures=True)
            self._pool.shutdown()
            if not self._supervisor.request_exit():
                # Stuck (e.g. in a subscriber): no process may outlive the server anyway.
                log.error("the supervisor did not finish in time; killing its workers")
                self._supervisor.emergency_kill()
        else:
            self._git_threads.shutdown(wait=True, cancel_futures=True)
        if self._git is not None:
            self._git.close()
        if self._containment is not None:
            for report in self._containment.close():
                log.warning("at shutdown, containment killed %s", report)
        if self._store is not None:
            self._store.close()

    def _restore(self, swept: builtins.list[KillReport]) -> None:
        """Show the stored history again; what was live when the server went away is FAILED."""
        if self._store is None:
            return
        restored = self._store.restore(self.config.history_length, self.config.output_lines_kept)
        unaccounted = {r.procedure_id for r in swept if r.survivors}
        restarted = iso(utc_now())
        core = self._core
        core.output.extend(restored.output)
        for obj in restored.summaries:
            try:
                proc = Procedure.restored(summary_from_json(obj))
            except (KeyError, ValueError, TypeError, AttributeError) as exc:
                log.error("stored procedure %r is unreadable, skipped: %r", obj.get("id"), exc)
                continue
            core.procedures[proc.id] = proc
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
            core._emit(ProcedureAdded(proc.summary()))

    # ---- subscriptions -------------------------------------------------------------------
    def subscribe(self, callback: Subscriber) -> int:
        """Call `callback(event)` for every event, in order, on the engine loop: only enqueue."""
        return self._outbox.subscribe(callback)

    def unsubscribe(self, token: int) -> None:
        self._outbox.unsubscribe(token)

    def flush_events(self, timeout: float = 5.0) -> None:
        """Return once every event emitted so far has been delivered to the subscribers."""
        if self._supervisor.on_loop_thread():
            return  # a subscriber asking: everything before its event was delivered
        try:
            self._call(c.Flush(), timeout)
        except ServiceUnavailable as exc:
            raise TimeoutError(f"events not confirmed delivered: {exc}") from None

    # ---- queries ---------------------------------------------------------------------------
    def describe(self, procedure_id: int) -> ProcedureSummary:
        result: ProcedureSummary = self._call(c.Describe(procedure_id))
        return result

    def list(self) -> builtins.list[ProcedureSummary]:
        result: builtins.list[ProcedureSummary] = self._call(c.ListAll())
        return result

    def recent_output(self) -> builtins.list[str]:
        result: builtins.list[str] = self._call(c.RecentOutput())
        return result

    def next_ids(self, count: int) -> builtins.list[int]:
        """The ids the next `count` procedures will get, in order (nothing is reserved)."""
        if self._store is not None:
            return self._store.peek_ids(count)
        with self._ids_lock:
            return builtins.list(range(self._next_id, self._next_id + count))

    def running_count(self) -> int:
        return self._core.running

    def _store_health(self, _healthy: bool, _why: str) -> None:
        """The store's writer found the disk failing or working again: say so at once.

        Called on the store's writer thread: it only posts into the loop.
        """
        if self._running and not self._closed:
            self._supervisor.post(c.PublishStatus())

    def health(self) -> tuple[bool, str]:
        """(healthy, why): false if an engine thread died or is stuck, or the store failed."""
        problem = self._supervisor.health()
        if problem is not None:
            return False, problem
        if self._store is not None:
            ok, why = self._store.health()
            if not ok:
                return False, why
        if self._started and not self._closed:
            problem = self._pool.health()
            if problem is not None:
                return False, problem
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
        self._check_accepting()
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
                self._supervisor.post(c.EnvironmentUsage(tuple(git.usage()), removed))
            except Exception:  # a thread boundary: the next refresh will try again
                log.exception("environment maintenance failed")

        try:
            self._git_threads.submit(run)
        except RuntimeError:
            pass  # shutting down

    # ---- commands --------------------------------------------------------------------------
    def admit(self, request: PrepareRequest) -> Admission:
        """Validate a Prepare and give it its id; nothing is created (commit or abandon it)."""
        self._check_accepting()
        self._check_script(request)
        request.init.check("init")
        return Admission(self._allocate_id(), request, self)

    def commit(self, admission: Admission) -> int:
        """Create the admitted procedure (ProcedureAdded) and start loading it.

        Raises ServiceUnavailable (nothing created) if the engine stopped or broke since.
        """
        if admission.owner is not self:
            raise InvalidRequest("admission", "was admitted by another engine")
        if not admission.spend():
            raise InvalidRequest("admission", "was already committed or abandoned")
        self._check_accepting()
        source = None
        if isinstance(admission.request.script, FilesystemScript):
            source = self._read_checked(admission.request.script)  # it may have changed since
        result: int = self._call(c.Commit(admission, source))
        return result

    def abandon(self, admission: Admission) -> None:
        """Drop an admission; its id is never used. A no-op once committed or abandoned."""
        admission.spend()

    def prepare(self, request: PrepareRequest) -> int:
        """Validate and create a procedure; loading and init proceed in the background."""
        return self.commit(self.admit(request))

    def start(self, request: StartRequest) -> None:
        """Run a function of a READY procedure (or queue it with `force`)."""
        request.call.check("")
        self._call(c.Start(request))

    def stop(self, request: StopRequest) -> None:
        """Stop a procedure in any non-final state; with `abort`, run the abort script after."""
        abort_id = None
        if request.abort:
            if self.config.abort_script is None:
                raise InvalidRequest("abort", "no abort script is configured on this server")
            self._check_accepting()
            abort_id = self._allocate_id()  # here: an id may cost a disk write
        self._call(c.Stop(request, abort_id))

    def pause(self, procedure_id: int) -> None:
        self._call(c.Pause(procedure_id))

    def resume(self, procedure_id: int) -> None:
        self._call(c.Resume(procedure_id))

    # ---- the way into the loop ---------------------------------------------------------------
    def _call(self, command: c.Command, timeout: float | None = None) -> Any:
        """Post `command` into the loop and wait for its answer (or its typed error)."""
        limit = self.config.command_timeout_s if timeout is None else timeout
        if not self._started or not self._supervisor.post(command):
            return self._without_loop(command)
        try:
            return command.future.result(limit)
        except LoopGone:
            return self._without_loop(command)
        except concurrent.futures.TimeoutError:
            if command.future.cancel():  # never handled: nothing was done
                _, why = self.health()
                raise ServiceUnavailable(
                    f"the engine did not answer {type(command).__name__} within {limit} s ({why})"
                ) from None
            # Being handled right now: handling never blocks, so the answer is imminent.
            return command.future.result(limit)

    def _without_loop(self, command: c.Command) -> Any:
        """Queries are answered from the tables (nothing changes them any more)."""
        if isinstance(command, c.QUERIES):
            with self._inline:
                if isinstance(command, c.Flush):
                    self._outbox.deliver()
                return self._core.execute(command)
        if self._closed:
            raise ServiceUnavailable("the script execution service is shut down")
        _, why = self.health()
        if not self._started:
            why = "the engine is not started"
        raise ServiceUnavailable(f"the script execution engine is not running: {why}")

    def _check_accepting(self) -> None:
        if self._closed:
            raise ServiceUnavailable("the script execution service is shut down")
        failure = self._supervisor.health() if self._started else None
        if failure is not None and not self._supervisor.is_alive():
            raise ServiceUnavailable(f"the script execution engine failed: {failure}")

    def _check_script(self, request: PrepareRequest) -> None:
        script = request.script
        match script:
            case FilesystemScript():
                self._check_file(script)
                self._check_size(script.path, os.path.getsize(os.path.realpath(script.path)))
            case EmbeddedScript():
                check_embedded_allowed(self.config.allow_embedded)
                self._check_size(script.name, len(script.source.encode("utf-8", "replace")))
            case GitScript():
                if self._git is None:
                    raise ScriptNotAllowed("git scripts are not enabled on this server")
                self._git.check_allowed(script.git.repo)

    def _check_size(self, name: str, size: int) -> None:
        limit = self.config.max_script_bytes
        if limit and size > limit:
            raise InvalidRequest(
                "script", f"{name} has {size} bytes, more than MaxScriptBytes={limit}"
            )

    def _read_checked(self, script: FilesystemScript) -> str:
        """The text of the file `script` names, checked on the open file itself.

        The file is opened first; the location checked against ScriptRoots is where that open
        descriptor really points (symlinks resolved by the kernel), and the text comes from it.
        """
        try:
            fd = os.open(script.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:
            raise InvalidRequest("script", f"cannot open {script.path}: {exc.strerror}") from None
        try:
            real = Path(os.readlink(f"/proc/self/fd/{fd}"))
            roots = [Path(os.path.realpath(r)) for r in self.config.script_roots]
            check_file_allowed(script.path, real, roots)
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise InvalidRequest("script", f"not a regular file: {script.path}")
            self._check_size(script.path, st.st_size)
            limit = self.config.max_script_bytes
            with os.fdopen(os.dup(fd), "rb") as f:
                data = f.read(limit + 1) if limit else f.read()
            self._check_size(script.path, len(data))  # it may have grown since the fstat
        finally:
            os.close(fd)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidRequest("script", f"{script.path} is not UTF-8 text: {exc}") from None

    def _check_file(self, script: FilesystemScript) -> None:
        path = Path(os.path.realpath(script.path))
        roots = [Path(os.path.realpath(r)) for r in self.config.script_roots]
        check_file_allowed(script.path, path, roots)  # empty roots: every file:// is refused
        if not path.is_file():
            raise InvalidRequest("script", f"no such file: {script.path}")

    def _allocate_id(self) -> int:
        """A procedure id this device never gave before (across restarts, with a store)."""
        if self._store is not None:
            return self._store.allocate_id()
        with self._ids_lock:
            allocated = self._next_id
            self._next_id += 1
            return allocated

    def _deliver_worker(
        self, ticket: int, worker: WorkerProcess | None, error: BaseException | None
    ) -> bool:
        """The pool's delivery: into the loop (False if it is gone: the pool discards)."""
        return self._supervisor.post(c.WorkerDelivered(ticket, worker, error))

    # ---- git and environments (git thread; results are posted into the loop) --------------
    def _run_git(self, procedure_id: int, script: GitScript, cancel: threading.Event) -> None:
        git = self._git
        assert git is not None
        post = self._supervisor.post

        def progress(stage: str, done: float, total: float | None, message: str) -> None:
            text = f"{stage}: {message}" if message else stage
            post(c.GitProgress(procedure_id, Progress(done, total, text)))

        def lease(item: Any, **fields: Any) -> bool:
            if post(c.GitLeased(procedure_id, item, **fields)):
                return True
            git.release(item)  # the loop is gone: nobody else will
            return False

        try:
            source = git.resolve(script, progress, cancel)
            if not lease(source, commit=source.commit):
                return
            launcher: Launcher | None = None
            if script.create_env:
                env = git.ensure_environment(source, progress, cancel)
                if not lease(env, environment=env.env_id):
                    return
                launcher = InterpreterLauncher(
                    env.python,
                    env.sys_path_runtime,
                    containment=self._containment,
                    environment=self.config.worker_environment,
                    limits=self.config.worker_limits,
                )
            self.refresh_environments()
            load = {
                "path": str(source.script_path),
                "sys_path": (str(source.script_path.parent), str(source.checkout)),
                "cwd": str(source.checkout),
            }
            post(c.GitReady(procedure_id, launcher, load))
        except OETError as exc:
            post(c.GitFailed(procedure_id, ErrorInfo(type(exc).__name__, exc.message)))
        except Exception as exc:  # a thread boundary: any failure must end as FAILED
            log.exception("preparing git procedure %d failed", procedure_id)
            post(c.GitFailed(procedure_id, ErrorInfo(type(exc).__name__, str(exc))))


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
