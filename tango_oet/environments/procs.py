"""Run external commands (git, uv, pip) so that cancel or a timeout kills them and all children."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tango_oet.domain.errors import EnvironmentError_
from tango_oet.domain.urls import redact_text

OUTPUT_TAIL_CHARS = 4000
_POLL_MIN_S = 0.001
_POLL_MAX_S = 0.05

# Variables that would make a child use the server's Python packages instead of its own.
_LEAKY_VARS = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "CONDA_PREFIX")


@dataclass(frozen=True)
class Completed:
    """The outcome of a command that ran to its end."""

    returncode: int
    output: str  # stdout and stderr interleaved, credentials redacted

    def tail(self, chars: int = OUTPUT_TAIL_CHARS) -> str:
        text = self.output.strip()
        return text if len(text) <= chars else "…" + text[-chars:]


class Cancelled(EnvironmentError_):
    """The caller set its cancel event; the command was killed."""

    def __init__(self, message: str = "cancelled") -> None:
        super().__init__(message)


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The server's environment without what would leak its Python into a child's."""
    env = {k: v for k, v in os.environ.items() if k not in _LEAKY_VARS}
    env.update(extra or {})
    return env


def run(
    cmd: Sequence[str | Path],
    *,
    cancel: threading.Event,
    timeout: float,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    secrets: Sequence[str] = (),
) -> Completed:
    """Run `cmd` to completion in its own process group; raise Cancelled or a timeout error.

    Output goes to an unlinked temporary file rather than a pipe, so a chatty child can never
    block on a full pipe while we are not reading, and no reader thread is needed. It is
    redacted before anyone sees it: URL credentials (git, pip and uv echo URLs, some with a
    `user:token@` from a project's dependencies) and the given `secrets` become `***`.
    """
    argv = [str(c) for c in cmd]
    with tempfile.TemporaryFile() as out:
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=dict(env) if env is not None else clean_env(),
                start_new_session=True,
            )
        except OSError as exc:
            raise EnvironmentError_(f"cannot run {argv[0]}: {exc}") from exc
        try:
            outcome = _wait_unreaped(proc.pid, cancel, time.monotonic() + timeout)
        finally:
            # The leader is not reaped yet, so its pid (= the group id) cannot have been reused:
            # killing the group here is safe, and it sweeps helpers the command left behind.
            _kill_group(proc.pid)
            proc.wait()
        out.seek(0)
        output = redact_text(out.read().decode("utf-8", errors="replace"), secrets)
    if outcome == "cancelled":
        raise Cancelled()
    if outcome == "timeout":
        tail = Completed(-1, output).tail()
        raise EnvironmentError_(f"{_name(argv)} timed out after {timeout:.0f} s\n{tail}")
    return Completed(proc.returncode, output)


def _wait_unreaped(pid: int, cancel: threading.Event, deadline: float) -> str:
    """Wait until `pid` exits (leaving it a zombie), `cancel` is set or `deadline` passes."""
    interval = _POLL_MIN_S
    while True:
        # WNOWAIT keeps the zombie so the group id stays reserved until we have killed the group.
        try:
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # reaped behind our back: it has exited either way
            return "exited"
        if info is not None and info.si_pid == pid:
            return "exited"
        if cancel.is_set():
            return "cancelled"
        if time.monotonic() >= deadline:
            return "timeout"
        # Short commands finish within the first polls; long builds settle at 50 ms.
        cancel.wait(interval)
        interval = min(interval * 2, _POLL_MAX_S)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _name(argv: Sequence[str]) -> str:
    head = Path(argv[0]).name
    return f"{head} {argv[1]}" if len(argv) > 1 and not argv[1].startswith("-") else head
