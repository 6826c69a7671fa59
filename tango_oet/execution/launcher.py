"""Starting worker processes: from a preloaded forkserver (or spawn), or under another interpreter.

Never `fork`: the server process runs omniORB threads, and a forked copy of it is unsafe.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Protocol

from tango_oet.execution import worker as worker_module
from tango_oet.execution.containment import Containment, Placement
from tango_oet.execution.environment import worker_environment
from tango_oet.execution.limits import WorkerLimits
from tango_oet.execution.messages import (
    ParentMessage,
    WorkerMessage,
    WorkerReady,
    decode_worker,
)

HANDSHAKE_TIMEOUT_S = 30.0


class WorkerStartError(Exception):
    """A worker process could not be started or did not say it was ready."""


@dataclass(frozen=True)
class ExitInfo:
    """How a reaped process ended: an exit code, or the signal that killed it."""

    exitcode: int | None
    signal: str | None

    @classmethod
    def from_returncode(cls, code: int | None) -> ExitInfo:
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"SIG{-code}"
            return cls(exitcode=None, signal=name)
        return cls(exitcode=code, signal=None)

    def describe(self) -> str:
        return f"killed by {self.signal}" if self.signal else f"exited with code {self.exitcode}"


class _ProcessHandle(Protocol):
    pid: int

    def sentinel(self) -> int: ...
    def reap(self, timeout: float | None) -> int | None: ...
    def close(self) -> None: ...


class _MPHandle:
    def __init__(self, process: BaseProcess) -> None:
        self._process = process
        assert process.pid is not None
        self.pid = process.pid

    def sentinel(self) -> int:
        return self._process.sentinel

    def reap(self, timeout: float | None) -> int | None:
        self._process.join(timeout)
        return self._process.exitcode

    def close(self) -> None:
        if self._process.exitcode is not None:
            self._process.close()


class _PopenHandle:
    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self.pid = popen.pid
        # A pidfd becomes readable when the process exits: a sentinel like multiprocessing's.
        self._pidfd = os.pidfd_open(popen.pid)

    def sentinel(self) -> int:
        return self._pidfd

    def reap(self, timeout: float | None) -> int | None:
        try:
            return self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> None:
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1


@dataclass(eq=False)
class WorkerProcess:
    """A live worker: its pipe, its exit sentinel, and what the supervisor needs to end it."""

    pid: int
    python: str
    conn: Connection
    _handle: _ProcessHandle
    _send_lock: threading.Lock = field(default_factory=threading.Lock)
    _seq: int = 0
    exit_info: ExitInfo | None = None
    last_received_seq: int = 0  # kept by the reader (handshake, then the supervisor)
    placement: Placement | None = None  # where containment finds everything it started

    @property
    def sentinel(self) -> int:
        return self._handle.sentinel()

    def send(self, make: Callable[..., ParentMessage], **fields: Any) -> bool:
        """Send `make(seq=<next>, **fields)`; False if the worker is gone (its sentinel tells).

        Blocking: only for a worker nobody else drives (protocol tests, tools). Once the
        engine's loop watches a worker, it writes through its own non-blocking `wire.WorkerPipe`.
        """
        with self._send_lock:
            self._seq += 1
            try:
                self.conn.send(make(seq=self._seq, **fields))
                return True
            except (OSError, ValueError):
                return False

    def signal(self, sig: signal.Signals) -> None:
        if self.exit_info is not None:
            return
        if self.placement is not None:
            # The forkserver reaps its children itself: the pid may be free (or reused) before
            # our reap says so. The recorded start time makes sure it is still our worker.
            self.placement.signal(sig)
            return
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def assign(self, procedure_id: int) -> None:
        """The worker now runs `procedure_id` (so a sweep after a crash can name it)."""
        if self.placement is not None:
            self.placement.assign(procedure_id)

    def kill_group(self) -> None:
        """SIGKILL the worker and everything its script started (its cgroup, or its tree).

        Does not wait; `close()` (after the reap) kills and waits for any leftovers.
        """
        if self.placement is not None:
            self.placement.kill()  # verified identities only: no pid (or group) alone
            return
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            self.signal(signal.SIGKILL)

    def reap(self, timeout: float | None = 0) -> ExitInfo | None:
        if self.exit_info is None:
            code = self._handle.reap(timeout)
            if code is not None:
                self.exit_info = ExitInfo.from_returncode(code)
        return self.exit_info

    def close(self) -> None:
        """Release the worker: its pipe, its pidfd, and (containment) whatever it left running."""
        try:
            self.conn.close()
        except OSError:
            pass
        self._handle.close()
        if self.placement is not None:
            self.placement.release()

    def handshake(self, timeout: float = HANDSHAKE_TIMEOUT_S) -> WorkerReady:
        """Wait for the worker's first message, which must be WorkerReady."""
        if not self.conn.poll(timeout):
            raise WorkerStartError(f"worker {self.pid} did not report ready within {timeout} s")
        try:
            msg: WorkerMessage = decode_worker(self.conn.recv_bytes())
        except (EOFError, OSError) as exc:
            raise WorkerStartError(f"worker {self.pid} died during start-up: {exc!r}") from exc
        if not isinstance(msg, WorkerReady):
            raise WorkerStartError(f"worker {self.pid} sent {msg!r} instead of WorkerReady")
        self.last_received_seq = msg.seq
        if self.placement is not None:
            self.placement.verify()
        return msg


class Launcher(Protocol):
    """Starts one worker process (not yet handshaken)."""

    def launch(self) -> WorkerProcess: ...

    @property
    def key(self) -> str: ...


class ContextLauncher:
    """Workers from this interpreter's forkserver (preloaded with the worker module) or spawn."""

    def __init__(
        self,
        method: str = "forkserver",
        containment: Containment | None = None,
        environment: tuple[str, ...] | None = None,
        limits: WorkerLimits | None = None,
    ) -> None:
        if method not in ("forkserver", "spawn"):
            raise ValueError(f"start method must be forkserver or spawn, got {method!r}")
        self._ctx: Any = multiprocessing.get_context(method)
        if method == "forkserver":
            # Preload so each worker starts with the worker module already imported (~ms, not
            # the ~300 ms of re-importing __main__ and tango).
            self._ctx.set_forkserver_preload(["tango_oet.execution.worker"])
        self.method = method
        self._containment = containment
        self._environment = environment  # WorkerEnvironment; None: the server's, unfiltered
        self._limits = limits

    @property
    def key(self) -> str:
        return f"{self.method}:{sys.executable}"

    def launch(self) -> WorkerProcess:
        placement = self._containment.place() if self._containment is not None else None
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        args = (
            child_conn,
            placement.worker_args() if placement is not None else None,
            self._environment,
            self._limits,
        )
        process = self._ctx.Process(target=worker_module.worker_main, args=args, name="oet-worker")
        try:
            process.start()
        except BaseException:
            parent_conn.close()
            if placement is not None:
                placement.release()
            raise
        finally:
            child_conn.close()
        if placement is not None:
            placement.bind(process.pid)
        return WorkerProcess(
            pid=process.pid,
            python=sys.executable,
            conn=parent_conn,
            _handle=_MPHandle(process),
            placement=placement,
        )


class InterpreterLauncher:
    """Workers under another Python (an environment's own): `python -m ...worker FD`."""

    def __init__(
        self,
        python: Path,
        pythonpath: Path,
        env: Mapping[str, str] | None = None,
        containment: Containment | None = None,
        environment: tuple[str, ...] | None = None,
        limits: WorkerLimits | None = None,
    ):
        self.python = python
        self.pythonpath = pythonpath
        self._env = dict(env or {})
        self._containment = containment
        self._environment = environment  # WorkerEnvironment; None: the server's, unfiltered
        self._limits = limits

    @property
    def key(self) -> str:
        return f"interpreter:{self.python}"

    def launch(self) -> WorkerProcess:
        ours, theirs = socket.socketpair()
        source = (
            os.environ
            if self._environment is None
            else worker_environment(os.environ, self._environment)
        )
        env = {k: v for k, v in source.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        env.update(self._env)
        env["PYTHONPATH"] = str(self.pythonpath)
        env["PYTHONNOUSERSITE"] = "1"
        # `python -m` would put the server's working directory first on sys.path.
        env["PYTHONSAFEPATH"] = "1"
        if self._limits is not None and self._limits.any:
            lim = self._limits
            env[worker_module.LIMITS_ENV] = (
                f"{lim.memory_mb},{lim.cpu_seconds},{lim.max_result_bytes},{lim.user}"
            )
        placement = self._containment.place() if self._containment is not None else None
        if placement is not None:
            env.update(placement.environment())
        try:
            popen = subprocess.Popen(
                [str(self.python), "-m", "tango_oet.execution.worker", str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
            )
        except OSError as exc:
            ours.close()
            if placement is not None:
                placement.release()
            raise WorkerStartError(f"cannot start {self.python}: {exc}") from exc
        finally:
            theirs.close()
        if placement is not None:
            placement.bind(popen.pid)
        return WorkerProcess(
            pid=popen.pid,
            python=str(self.python),
            conn=Connection(ours.detach()),
            _handle=_PopenHandle(popen),
            placement=placement,
        )
