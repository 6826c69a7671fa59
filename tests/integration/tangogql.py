"""TangoGQL (the GraphQL gateway Taranta dashboards talk to) for integration tests.

tangogql 2.3.0 pins versions that conflict with ours, so it lives in its own virtual environment
(`.tools/tangogql-venv`, built once and reused). The server runs as `uvicorn tangogql.main:app`
in its own process group; GraphQL queries and mutations go over HTTP from this process, and
subscriptions over the websocket `/socket` (legacy `graphql-ws` protocol) from a small client run
by the tangogql environment's Python, which has `websockets` (so our environment needs none).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

TANGOGQL_VERSION = "2.3.0"
START_TIMEOUT_S = 60.0
PIP_TIMEOUT_S = 900.0

#: pip output meaning the package index could not be reached (not a broken package).
_UNREACHABLE = (
    "(from versions: none)",
    "NewConnectionError",
    "Max retries exceeded",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "Connection refused",
    "ProxyError",
    "Could not fetch URL",
)

_IMPORT_CHECK = (
    "import importlib.metadata as m, tangogql.main, uvicorn, websockets.sync.client; "
    "print(m.version('tangogql'))"
)


class TangoGQLUnavailable(RuntimeError):
    """tangogql could not be installed because the package index is unreachable."""


def _venv_works(python: Path) -> bool:
    if not python.exists():
        return False
    done = subprocess.run(
        [str(python), "-c", _IMPORT_CHECK],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=_clean_env(),
    )
    return done.returncode == 0 and done.stdout.strip() == TANGOGQL_VERSION


def _clean_env(**extra: str) -> dict[str, str]:
    """Our environment without what would make another venv's Python see our packages."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "TANGO_HOST", "PYTHONSAFEPATH")
    }
    env.update(extra)
    return env


def ensure_venv(venv: Path) -> Path:
    """The Python of a virtual environment with tangogql installed; built on first use.

    Reused when it exists and imports; otherwise (re)created with `python -m venv` and
    `pip install tangogql==VERSION`. A file lock serialises concurrent test processes.
    Raises TangoGQLUnavailable (with pip's error) if the package index is unreachable.
    """
    python = venv / "bin" / "python"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with (venv.parent / f"{venv.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _venv_works(python):
            return python
        shutil.rmtree(venv, ignore_errors=True)
        steps = [
            [sys.executable, "-m", "venv", str(venv)],
            [str(python), "-m", "pip", "install", "-q", f"tangogql=={TANGOGQL_VERSION}"],
        ]
        for step in steps:
            done = subprocess.run(
                step,
                capture_output=True,
                text=True,
                timeout=PIP_TIMEOUT_S,
                check=False,
                env=_clean_env(),
            )
            if done.returncode != 0:
                shutil.rmtree(venv, ignore_errors=True)  # never leave a half-built one
                output = f"{' '.join(step)} exited {done.returncode}:\n{done.stdout}{done.stderr}"
                if any(marker in output for marker in _UNREACHABLE):
                    raise TangoGQLUnavailable(output)
                raise RuntimeError(output)
        if not _venv_works(python):
            shutil.rmtree(venv, ignore_errors=True)
            raise RuntimeError(f"tangogql {TANGOGQL_VERSION} installed in {venv} does not import")
        return python


# ---- the server ------------------------------------------------------------------------------


@dataclass
class TangoGQL:
    """A running tangogql server (uvicorn) in its own process group."""

    python: Path
    popen: subprocess.Popen[bytes]
    log: Path
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/db"

    @property
    def socket_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/socket"

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def post(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """The whole GraphQL response ({"data": …, "errors": …})."""
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(
            self.url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            answer: dict[str, Any] = json.loads(response.read())
        return answer

    def query(self, query: str, **variables: Any) -> dict[str, Any]:
        """`data` of a query or mutation; GraphQL errors raise AssertionError."""
        answer = self.post(query, variables)
        if answer.get("errors"):
            messages = "\n".join(str(e.get("message")) for e in answer["errors"])
            raise AssertionError(f"GraphQL errors:\n{messages}")
        data: dict[str, Any] = answer["data"]
        return data

    def execute(self, device: str, command: str, argin: Any = None) -> dict[str, Any]:
        """The `executeCommand` mutation: {"ok", "message", "output"}."""
        data = self.query(
            "mutation($device: String!, $command: String!, $argin: ScalarTypes) {"
            " executeCommand(device: $device, command: $command, argin: $argin)"
            " { ok message output } }",
            device=device,
            command=command,
            argin=argin,
        )
        result: dict[str, Any] = data["executeCommand"]
        return result

    def answers(self) -> bool:
        try:
            return self.post("{ __typename }").get("data") == {"__typename": "Query"}
        except (OSError, ValueError):
            return False

    def stop(self, timeout: float = 10.0) -> list[str]:
        """SIGTERM to the whole process group, SIGKILL after `timeout`; returns survivors."""
        return _stop_group(self.popen, timeout)


def _group_members(pgid: int) -> list[psutil.Process]:
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid:
                members.append(proc)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
    return members


def _stop_group(popen: subprocess.Popen[bytes], timeout: float) -> list[str]:
    pgid = popen.pid  # start_new_session: the leader's pid is the group id
    members = _group_members(pgid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    try:
        popen.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    _gone, alive = psutil.wait_procs(members, timeout=timeout)
    if alive or popen.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        popen.wait()
    survivors = []
    for proc in _group_members(pgid):
        with contextlib.suppress(psutil.NoSuchProcess):
            survivors.append(f"{proc.pid} {' '.join(proc.cmdline())}")
            proc.kill()
    return survivors


def start_tangogql(python: Path, tango_host: str, cwd: Path) -> TangoGQL:
    """`uvicorn tangogql.main:app` on a port the OS picks, for the database at `tango_host`.

    Waits (polling, with a deadline) until it answers a GraphQL query; raises with its log if it
    exits or does not answer in time.
    """
    cwd.mkdir(parents=True, exist_ok=True)
    log = cwd / "tangogql.log"
    env = _clean_env(
        TANGO_HOST=tango_host,
        TANGOGQL_NO_AUTH="true",
        TANGOGQL_LOGGING_CONFIG="",
    )
    command = [str(python), "-m", "uvicorn", "tangogql.main:app"]
    command += ["--host", "127.0.0.1", "--port", "0"]
    with log.open("ab") as handle:
        popen = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = TangoGQL(python, popen, log)
    pattern = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if server.port == 0:
                match = pattern.search(server.tail(200))
                if match:
                    server.port = int(match.group(1))
            if server.port and server.answers():
                return server
            if popen.poll() is not None:
                raise RuntimeError(f"tangogql exited ({popen.returncode}):\n{server.tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"tangogql not answering in {START_TIMEOUT_S} s:\n{server.tail()}"
                )
            time.sleep(0.05)  # polling another process's start-up: nothing to block on
    except BaseException:
        server.stop()
        raise


# ---- subscriptions ---------------------------------------------------------------------------

#: Run by the tangogql environment's Python: prints every frame but keep-alives as one JSON
#: line; exits when its stdin closes (so it never outlives the test process).
WS_CLIENT = r"""
import json, os, sys, threading
from websockets.sync.client import connect

url, query = sys.argv[1], sys.argv[2]
threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
with connect(url, subprotocols=["graphql-ws"], open_timeout=30) as ws:
    ws.send(json.dumps({"type": "connection_init", "payload": {}}))
    for message in ws:
        frame = json.loads(message)
        if frame.get("type") == "connection_ack":
            start = {"id": "1", "type": "start", "payload": {"query": query}}
            ws.send(json.dumps(start))
        if frame.get("type") != "ka":
            print(json.dumps(frame), flush=True)
"""


@dataclass
class Subscription:
    """A GraphQL subscription over `/socket`, run by a client process; collects its frames."""

    popen: subprocess.Popen[bytes]
    log: Path
    frames: list[dict[str, Any]] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _reader: threading.Thread | None = None

    def _read(self, stream: IO[bytes]) -> None:
        for line in stream:
            text = line.decode(errors="replace").strip()
            if not text:
                continue
            try:
                frame = json.loads(text)
            except ValueError:
                frame = {"type": "unparsable", "text": text}
            with self._cond:
                self.frames.append(frame)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()  # the client ended: waiters need not wait any longer

    def data(self) -> list[dict[str, Any]]:
        """The `attributes` payloads of the data frames so far."""
        with self._cond:
            frames = list(self.frames)
        found = []
        for frame in frames:
            if frame.get("type") == "data":
                attribute = ((frame.get("payload") or {}).get("data") or {}).get("attributes")
                if attribute is not None:
                    found.append(attribute)
        return found

    def wait_for(
        self, what: str, done: Callable[[list[dict[str, Any]]], bool], timeout: float
    ) -> list[dict[str, Any]]:
        """Block until `done(data frames)` holds; raises with every frame seen otherwise."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                data = self.data()
                if done(data):
                    return data
                remaining = deadline - time.monotonic()
                ended = self._reader is not None and not self._reader.is_alive()
                if remaining <= 0 or ended:
                    why = "the client ended" if ended else f"not within {timeout} s"
                    frames = "\n".join(json.dumps(f) for f in self.frames)
                    raise AssertionError(
                        f"subscription: {what}: {why}; frames:\n{frames}\n"
                        f"client log:\n{self.log.read_text(errors='replace')}"
                    )
                self._cond.wait(remaining)

    def close(self, timeout: float = 10.0) -> None:
        if self.popen.stdin is not None:
            with contextlib.suppress(OSError):
                self.popen.stdin.close()  # the client exits on EOF
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        if self._reader is not None:
            self._reader.join(timeout)
        if self.popen.stdout is not None:
            self.popen.stdout.close()


@contextlib.contextmanager
def subscribe(server: TangoGQL, query: str, log: Path) -> Iterator[Subscription]:
    """Run a subscription for the duration of the `with` block; waits for connection_ack."""
    with log.open("ab") as handle:
        popen = subprocess.Popen(
            [str(server.python), "-c", WS_CLIENT, server.socket_url, query],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=handle,
            env=_clean_env(),
        )
    sub = Subscription(popen, log)
    assert popen.stdout is not None
    sub._reader = threading.Thread(target=sub._read, args=(popen.stdout,), daemon=True)
    sub._reader.start()
    try:
        sub.wait_for(
            "connection_ack",
            lambda _data: any(f.get("type") == "connection_ack" for f in sub.frames),
            START_TIMEOUT_S,
        )
        yield sub
    finally:
        sub.close()
