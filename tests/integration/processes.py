"""Real processes for integration tests: Tango databases and OETScheduler servers.

Each is started by PID and stopped by PID (SIGTERM, then SIGKILL after a deadline), and its
output goes to a log file that failures quote.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil
import tango

CPP_DATABASEDS = Path("/usr/lib/tango/DataBaseds")
START_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(what: str, ready: Callable[[], bool], process: Managed, timeout: float) -> None:
    """Poll another process's start-up (nothing to block on) until ready or it died."""
    deadline = time.monotonic() + timeout
    while not ready():
        if process.popen.poll() is not None:
            raise RuntimeError(
                f"{process.name} exited ({process.popen.returncode}) before {what}:\n"
                f"{process.tail()}"
            )
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {timeout} s:\n{process.tail()}")
        time.sleep(0.02)


@dataclass
class Managed:
    """A started process, its log, and how to stop it and everything it started."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def descendants(self) -> list[psutil.Process]:
        try:
            return list(psutil.Process(self.pid).children(recursive=True))
        except psutil.NoSuchProcess:
            return []

    def stop(self, timeout: float = 20.0) -> list[str]:
        """SIGTERM, SIGKILL after `timeout`; returns processes of its tree left alive."""
        tree = self.descendants()
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        _gone, alive = psutil.wait_procs(tree, timeout=10)
        leftovers = []
        for p in alive:
            try:
                leftovers.append(f"{p.pid} {' '.join(p.cmdline())}")
                p.kill()
            except psutil.NoSuchProcess:
                pass
        return leftovers


def spawn(name: str, command: list[str], env: dict[str, str], log: Path) -> Managed:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as handle:
        popen = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT, env=env
        )
    return Managed(name, popen, log)


def db_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            pass
        tango.Database(host, port).get_info()
    except (OSError, tango.DevFailed):
        return False
    return True


@dataclass
class TangoDatabase:
    kind: str  # "pytango-db" or "mariadb"
    host: str
    port: int
    process: Managed

    @property
    def tango_host(self) -> str:
        return f"{self.host}:{self.port}"

    def database(self) -> tango.Database:
        return tango.Database(self.host, self.port)


def _clean_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("TANGO_HOST", None)
    return env


def start_pytango_db(tmp: Path) -> TangoDatabase:
    """pytango-db's PyDatabaseds (sqlite in memory) on a port the OS picks."""
    env = {**_clean_env(), "PYTANGO_DATABASE_NAME": ":memory:"}
    exe = Path(sys.executable).with_name("PyDatabaseds")
    command = [str(exe), "--host", "127.0.0.1", "--port", "0", "--print-host-port", "2"]
    managed = spawn("PyDatabaseds", command, env, tmp / "databaseds.log")
    pattern = re.compile(r"Database DS listening on:.*, port=(\d+)\.")
    found: list[int] = []

    def port_printed() -> bool:
        match = pattern.search(managed.tail(200))
        if match:
            found.append(int(match.group(1)))
        return bool(found)

    wait_until("PyDatabaseds printing its port", port_printed, managed, START_TIMEOUT_S)
    port = found[0]
    wait_until(
        "PyDatabaseds answering", lambda: db_answers("127.0.0.1", port), managed, START_TIMEOUT_S
    )
    return TangoDatabase("pytango-db", "127.0.0.1", port, managed)


def start_cpp_databaseds(tmp: Path) -> TangoDatabase:
    """Debian's C++ DataBaseds on MariaDB (.ci/setup-mariadb-tango-db.sh) on a free port."""
    port = free_port()
    env = {
        **_clean_env(),
        "MYSQL_USER": os.environ.get("TANGO_MYSQL_USER", "tango"),
        "MYSQL_PASSWORD": os.environ.get("TANGO_MYSQL_PASSWORD", "tango"),
        "MYSQL_HOST": "localhost",
        "MYSQL_DATABASE": os.environ.get("TANGO_MYSQL_DATABASE", "tango"),
        "TANGO_HOST": f"127.0.0.1:{port}",
    }
    command = [str(CPP_DATABASEDS), "2", "-ORBendPoint", f"giop:tcp:127.0.0.1:{port}"]
    managed = spawn("DataBaseds", command, env, tmp / "databaseds-cpp.log")
    wait_until(
        "DataBaseds answering", lambda: db_answers("127.0.0.1", port), managed, START_TIMEOUT_S
    )
    return TangoDatabase("mariadb", "127.0.0.1", port, managed)


def start_server(db: TangoDatabase, instance: str, devices: list[str], tmp: Path) -> Managed:
    """`OETScheduler <instance>` (the console script) registered in `db`; waits for devices."""
    env = {**_clean_env(), "TANGO_HOST": db.tango_host}
    exe = Path(sys.executable).with_name("OETScheduler")
    command = [str(exe), instance, "-ORBendPoint", "giop:tcp:127.0.0.1:0"]
    managed = spawn(f"OETScheduler/{instance}", command, env, tmp / f"server-{instance}.log")

    def answering() -> bool:
        try:
            for name in devices:
                proxy = tango.DeviceProxy(f"tango://{db.tango_host}/{name}")
                proxy.set_timeout_millis(1000)
                if proxy.state() not in (tango.DevState.ON, tango.DevState.RUNNING):
                    return False
        except tango.DevFailed:
            return False
        return True

    wait_until(f"{devices} ON", answering, managed, START_TIMEOUT_S)
    return managed
