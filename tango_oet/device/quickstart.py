"""`tango-oet up`: a Tango database (if none answers), the devices registered, the servers up.

    up(["devices/oet-scheduler.json"], Path(".oet-data"))

1. If no Tango database answers at TANGO_HOST (default 127.0.0.1:10000), start pytango-db's
   `PyDatabaseds` there, on a sqlite file in the data directory, and wait until it answers.
2. Register the devices of the dsconfig JSON files (idempotent); set DataDirectory if it is
   not set, and the script policy explicitly (the device allows nothing by default): ScriptRoots
   is the project's example scripts if it is not set, plus every `--scripts DIR`; `--allow-git
   PATTERN` adds to GitAllowList and `--allow-embedded` sets AllowEmbedded. It prints what each
   device allows.
3. Start `OETScheduler <instance>` for every server instance, wait until each device answers,
   and write a copy of the Taranta dashboard whose defaults work here (<data-dir>/
   oet-scheduler.wj: the example script's real path, the next procedure ids).
4. On Ctrl-C, SIGTERM or SIGHUP (the terminal closing) stop what it started, by PID: the
   servers (which stop their procedures), then the database, then whatever of their process
   trees is still alive (forkserver, workers). Nothing it started outlives it, whatever its
   stdout is connected to: every line also goes to its own log (<data-dir>/logs/up.log), and a
   closed stdout (e.g. `| tee` ended by the same Ctrl-C) is dropped instead of killing `up`
   half-way through the clean-up.
"""

from __future__ import annotations

import argparse
import copy
import errno
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any

import tango

from tango_oet.device.registration import ensure_property, iter_devices, load_definition, register
from tango_oet.domain.urls import GitUrlError, check_pattern
from tango_oet.execution import procfs

DEFAULT_TANGO_HOST = "127.0.0.1:10000"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0  # a server stops its procedures (stop ladder) before it exits
LEFTOVER_GRACE_S = 2.0  # for a stopped server's forkserver to end by itself
LOCAL_HOSTS = {"127.0.0.1", "localhost", "0.0.0.0", "::1"}

Printer = Callable[[str], None]
#: Signals that end `up` (SIGHUP: the terminal it runs in was closed).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(RuntimeError):
    """A stop signal arrived while `up` was still starting things."""


class UpOutput:
    """`up`'s printer: each line to stdout (flushed, so `| tee` shows it at once) and to a log.

    A stream that went away (EPIPE: the reader of the pipe ended, e.g. `tee` killed by the
    same Ctrl-C; EIO: the terminal closed) is pointed at /dev/null, and the lines go on to
    the log only: `up` must live on to stop what it started. The log is appended to.
    """

    def __init__(self, log: Path, out: IO[str] | None = None, err: IO[str] | None = None) -> None:
        self.log = log
        self._out = out if out is not None else sys.stdout
        self._err = err if err is not None else sys.stderr
        self._gone: set[int] = set()  # id() of the streams that went away
        self._log: IO[str] | None = None
        try:
            log.parent.mkdir(parents=True, exist_ok=True)
            self._log = log.open("a", encoding="utf-8")
        except OSError:
            self._log = None  # an unwritable log must not stop the quick start

    def __call__(self, line: str) -> None:
        self._to_log(line)
        self._to(self._out, line)

    def error(self, line: str) -> None:
        """A failure: to stderr (and the log)."""
        self._to_log(line)
        self._to(self._err, line)

    def _to_log(self, line: str) -> None:
        if self._log is None:
            return
        try:
            self._log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {line}\n")
            self._log.flush()
        except OSError:
            pass  # a full disk must not stop the clean-up either

    def _to(self, stream: IO[str], line: str) -> None:
        if id(stream) in self._gone:
            return
        try:
            stream.write(line + "\n")
            stream.flush()
        except ValueError:  # the stream object was closed
            self._gone.add(id(stream))
        except OSError as exc:  # BrokenPipeError is the EPIPE one
            if exc.errno not in (errno.EPIPE, errno.EIO):
                raise
            self._gone.add(id(stream))
            _to_devnull(stream)

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def _to_devnull(stream: IO[str]) -> None:
    """Point the stream's descriptor at /dev/null: what is still buffered in it would fail
    again at the interpreter's final flush (and print a traceback-like complaint)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def parse_tango_host(value: str) -> tuple[str, int]:
    host, sep, port = value.strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"TANGO_HOST must be host:port, got {value!r}")
    return host, int(port)


def database_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """True if a Tango database answers at host:port (a TCP check first: fast when closed)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError:
        return False
    try:
        tango.Database(host, port).get_info()
    except tango.DevFailed:
        return False
    return True


def example_scripts() -> Path | None:
    """The project's example scripts (resources/scripts), if this is a source checkout."""
    for base in (Path(__file__).resolve().parents[2], Path.cwd()):
        candidate = base / "resources" / "scripts"
        if candidate.is_dir():
            return candidate
    return None


def shipped_dashboard() -> Path | None:
    """The project's Taranta dashboard (resources/dashboards), if this is a source checkout."""
    scripts = example_scripts()
    candidate = scripts.parent / "dashboards" / DASHBOARD if scripts is not None else None
    return candidate if candidate is not None and candidate.is_file() else None


DASHBOARD = "oet-scheduler.wj"
DASHBOARD_DEVICE = "oet/scheduler/1"  # the device the shipped dashboard is bound to
_PROCEDURE_N = re.compile(r"procedure \d+")


def localise_dashboard(
    dashboard: dict[str, Any], device: str, script: Path, first_id: int
) -> dict[str, Any]:
    """A copy of the shipped dashboard whose defaults work on this quick start.

    The shipped one is the container image's: Prepare runs /usr/share/tango-oet/scripts/…
    and the other commands and the Timeline name procedures 1-3. Taranta's presets are fixed
    text (no expression can name "the newest procedure", nor does the device take one), so
    the copy names what is known when `up` starts: `script` (the example as ScriptRoots
    holds it), the device, and `first_id`, the id the next Prepare gets (its lanes that one
    and the next two).
    """
    result = copy.deepcopy(dashboard)
    result["name"] = str(result["name"]).replace(DASHBOARD_DEVICE, device)
    for widget in _widgets(result["widget"]):
        _rebind(widget["inputs"], device)
        inputs = widget["inputs"]
        if widget["type"] == "LABEL":
            inputs["text"] = str(inputs["text"]).replace(DASHBOARD_DEVICE, device)
        elif widget["type"] == "COMMAND":
            command = inputs["command"]["command"]
            for preset in inputs["commandArgs"]:
                preset["name"] = _PROCEDURE_N.sub(f"procedure {first_id}", preset["name"])
                if command == "Prepare":
                    request = json.loads(preset["value"])
                    if str(request.get("script", "")).startswith("file://"):
                        request["script"] = f"file://{script}"  # as the client sends it
                        preset["value"] = json.dumps(request)
                elif command in ("Start", "Stop"):
                    request = json.loads(preset["value"])
                    request["id"] = first_id
                    preset["value"] = json.dumps(request)
                elif command in ("Pause", "Resume", "Describe"):
                    preset["value"] = str(first_id)
        elif widget["type"] == "TIMELINE":
            for offset, lane in enumerate(inputs["attributes"]):
                lane["attribute"]["attribute"] = f"procedure{first_id + offset}state"
                lane["attribute"]["label"] = f"procedure {first_id + offset}"
    return result


def _widgets(widgets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for widget in widgets:
        found.append(widget)
        found.extend(_widgets(widget.get("innerWidgets", [])))
    return found


def _rebind(node: Any, device: str) -> None:
    """Every `"device": "oet/scheduler/1"` below `node` names `device` instead."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "device" and value == DASHBOARD_DEVICE:
                node[key] = device
            else:
                _rebind(value, device)
    elif isinstance(node, list):
        for item in node:
            _rebind(item, device)


def write_dashboard(tango_host: str, device: str, data_dir: Path, out: Printer) -> Path | None:
    """Write <data_dir>/oet-scheduler.wj for the running device (best effort: a failure is
    said and `up` goes on; the dashboard is a convenience)."""
    shipped = shipped_dashboard()
    if shipped is None:
        return None
    try:
        proxy = tango.DeviceProxy(f"tango://{tango_host}/{device}")
        roots = [Path(str(r)) for r in proxy.get_property("ScriptRoots")["ScriptRoots"]]
        script = next(
            (r / "hello_world.py" for r in roots if (r / "hello_world.py").is_file()), None
        )
        if script is None:
            out(f"no dashboard written: no hello_world.py under the ScriptRoots of {device}")
            return None
        history = json.loads(proxy.read_attribute("procedures").value or "[]")
        first_id = max((int(p["id"]) for p in history), default=0) + 1
        dashboard = json.loads(shipped.read_text(encoding="utf-8"))
        path = data_dir / DASHBOARD
        text = json.dumps(localise_dashboard(dashboard, device, script, first_id), indent=2)
        path.write_text(text + "\n", encoding="utf-8")
    except (tango.DevFailed, OSError, ValueError, KeyError) as exc:
        out(f"no dashboard written: {' '.join(str(exc).split())[:200]}")
        return None
    out(
        f"Taranta dashboard for {device}: {path} (Prepare runs {script}; the other commands"
        f" and the Timeline name procedure {first_id}, the next one prepared, and after)"
    )
    return path


@dataclass(frozen=True)
class Policy:
    """What `up` allows on top of what the database already holds for a device."""

    scripts: tuple[Path, ...] = ()  # folders added to ScriptRoots (absolute)
    git: tuple[str, ...] = ()  # patterns added to GitAllowList
    embedded: bool = False  # True sets AllowEmbedded; False leaves it as configured


def _is_true(values: Sequence[str]) -> bool:
    return bool(values) and str(values[0]).strip().lower() in ("true", "1")


def _extend(
    db: tango.Database, device: str, name: str, base: list[str], add: Sequence[str]
) -> list[str]:
    """`base` plus the new entries of `add`, written to property `name` if that changes it."""
    current = list(db.get_device_property(device, [name]).get(name, []))
    wanted = list(base)
    wanted += [a for a in add if a not in wanted]
    if wanted != current:
        db.put_device_property(device, {name: wanted})
    return wanted


def configure_policy(
    db: tango.Database, device: str, example: Path | None, policy: Policy
) -> list[str]:
    """Set the device's script policy explicitly; return lines saying what it allows.

    ScriptRoots keeps what the database holds (the example scripts when nothing is), plus
    `policy.scripts`; GitAllowList gains `policy.git`; `policy.embedded` sets AllowEmbedded.
    Only additions: a shared database's configuration is never narrowed or replaced.
    """
    held = db.get_device_property(device, ["ScriptRoots", "GitAllowList", "AllowEmbedded"])
    roots_now = list(held.get("ScriptRoots", []))
    base = roots_now or ([str(example)] if example is not None else [])
    roots = _extend(db, device, "ScriptRoots", base, [str(d) for d in policy.scripts])
    git = _extend(db, device, "GitAllowList", list(held.get("GitAllowList", [])), policy.git)
    embedded = _is_true(list(held.get("AllowEmbedded", [])))
    if policy.embedded and not embedded:
        db.put_device_property(device, {"AllowEmbedded": ["true"]})
        embedded = True
    return [
        f"{device} allows file:// scripts under: "
        + (", ".join(roots) if roots else "nothing (ScriptRoots is empty; add --scripts DIR)"),
        f"{device} allows git repositories matching: "
        + (", ".join(git) if git else "nothing (GitAllowList is empty; add --allow-git PATTERN)"),
        f"{device} allows embedded:// scripts: "
        + (
            "yes (AllowEmbedded)"
            if embedded
            else "no (AllowEmbedded is false; add --allow-embedded)"
        ),
    ]


def _executable(name: str) -> list[str]:
    beside = Path(sys.executable).with_name(name)
    if beside.exists():
        return [str(beside)]
    found = shutil.which(name)
    if found:
        return [found]
    raise FileNotFoundError(f"{name} is not installed (looked beside {sys.executable} and PATH)")


def server_command(instance: str) -> list[str]:
    """The command line of one OETScheduler server instance, listening on loopback only."""
    try:
        command = _executable("OETScheduler")
    except FileNotFoundError:
        command = [sys.executable, "-m", "tango_oet.device.server"]
    return [*command, instance, "-ORBendPoint", "giop:tcp:127.0.0.1:0"]


@dataclass
class Started:
    """One process `up` started, with its log."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Stack:
    """What `start` brought up; `stop` ends exactly the processes it started."""

    tango_host: str
    devices: list[str] = field(default_factory=list)
    database: Started | None = None
    servers: list[Started] = field(default_factory=list)

    def stop(self, out: Printer = print) -> None:
        # Their process trees, taken now: each child runs in a session of its own and workers
        # in yet another, so neither a process group nor the parent's death reaches them.
        trees = [_tree(s) for s in [*self.servers, *([self.database] if self.database else [])]]
        try:
            for server in reversed(self.servers):
                _stop_process(server, out)
            self.servers.clear()
            if self.database is not None:
                _stop_process(self.database, out)
                self.database = None
        finally:
            # A server that had to be killed (or `up` cut short) leaves its forkserver and
            # workers behind. A forkserver ends by itself once its server is gone: a moment
            # for that (signal 0 only waits), then SIGKILL for what is left.
            left = [p for tree in trees for p in tree]
            _, alive = procfs.kill_verified(left, wait_s=LEFTOVER_GRACE_S, sig=0)
            killed, _ = procfs.kill_verified(alive, wait_s=STOP_TIMEOUT_S)
            if killed:
                out(f"killed {len(killed)} process(es) left behind: {[p.pid for p in killed]}")

    def dead(self) -> list[Started]:
        started = [*self.servers, *([self.database] if self.database else [])]
        return [s for s in started if s.process.poll() is not None]


def _tree(started: Started) -> list[procfs.ProcessId]:
    """The live descendants of a started process (pid + start time: never a reused pid)."""
    if started.process.poll() is not None:
        return []
    return [s.ident for s in procfs.descendants(started.process.pid, procfs.scan()) if s.alive]


def _spawn(name: str, command: list[str], env: dict[str, str], log: Path) -> Started:
    log.parent.mkdir(parents=True, exist_ok=True)
    handle: IO[bytes] = log.open("ab")
    try:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # Ctrl-C reaches `up` only; it stops them in order
        )
    finally:
        handle.close()
    return Started(name, process, log)


def _stop_process(started: Started, out: Printer) -> None:
    process = started.process
    if process.poll() is None:
        out(f"stopping {started.name} (pid {process.pid})")
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            out(f"{started.name} did not stop within {STOP_TIMEOUT_S} s: SIGKILL")
            process.kill()
            process.wait()


def _wait(
    what: str,
    ready: Callable[[], bool],
    started: Started | None,
    timeout: float,
    cancel: threading.Event | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if cancel is not None and cancel.is_set():
            raise Interrupted(f"interrupted while waiting for {what}")
        if started is not None and started.process.poll() is not None:
            raise RuntimeError(
                f"{started.name} exited with code {started.process.returncode} before {what};"
                f" its log ({started.log}) ends with:\n{started.tail()}"
            )
        if time.monotonic() > deadline:
            tail = f"; log {started.log}:\n{started.tail()}" if started else ""
            raise TimeoutError(f"{what} did not happen within {timeout} s{tail}")
        time.sleep(0.05)  # polling another process's start-up: nothing to block on


def start_database(
    host: str, port: int, data_dir: Path, cancel: threading.Event | None = None
) -> Started:
    """PyDatabaseds on a sqlite file in data_dir, answering at host:port."""
    db_file = data_dir / "tango_database.db"
    env = {**os.environ, "PYTANGO_DATABASE_NAME": str(db_file)}
    env.pop("TANGO_HOST", None)
    command = [*_executable("PyDatabaseds"), "--host", host, "--port", str(port), "2"]
    started = _spawn("PyDatabaseds", command, env, data_dir / "logs" / "databaseds.log")
    try:
        _wait(
            f"the database answering at {host}:{port}",
            lambda: database_answers(host, port, 0.5),
            started,
            START_TIMEOUT_S,
            cancel,
        )
    except BaseException:
        _stop_process(started, lambda _: None)
        raise
    return started


def device_answers(name: str) -> bool:
    try:
        proxy = tango.DeviceProxy(name)
        proxy.set_timeout_millis(1000)
        proxy.ping()
    except tango.DevFailed:
        return False
    return True


def start(
    devices_files: Sequence[Path | str],
    data_dir: Path,
    tango_host: str | None = None,
    out: Printer = print,
    policy: Policy = Policy(),
    cancel: threading.Event | None = None,
) -> Stack:
    """Bring everything up and return at once; the caller must `stop()` the Stack.

    If `cancel` is set meanwhile, what was started is stopped and `Interrupted` raised.
    """
    tango_host = tango_host or os.environ.get("TANGO_HOST") or DEFAULT_TANGO_HOST
    host, port = parse_tango_host(tango_host)
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    definitions = [load_definition(Path(f)) for f in devices_files]
    if not definitions:
        raise ValueError("no device definition files given")
    stack = Stack(tango_host=tango_host)
    try:
        if database_answers(host, port):
            out(f"using the Tango database at {tango_host}")
        elif host in LOCAL_HOSTS:
            out(f"starting a Tango database at {tango_host} ({data_dir / 'tango_database.db'})")
            stack.database = start_database(host, port, data_dir, cancel)
        else:
            raise RuntimeError(f"no Tango database answers at {tango_host}")
        db = tango.Database(host, port)
        instances: dict[str, list[str]] = {}
        scripts = example_scripts()
        for definition in definitions:
            result = register(db, definition)
            out(f"registered {result.summary()}")
            for device in result.devices:
                instances.setdefault(device.instance, []).append(device.name)
                stack.devices.append(device.name)
                if device.device_class != "OETScheduler":
                    continue
                ensure_property(db, device.name, "DataDirectory", [str(data_dir / "engine")])
                for line in configure_policy(db, device.name, scripts, policy):
                    out(line)
        env = {**os.environ, "TANGO_HOST": tango_host}
        for instance, names in instances.items():
            if all(device_answers(f"tango://{tango_host}/{n}") for n in names):
                out(f"OETScheduler/{instance} is already running: not starting it")
                continue
            log = data_dir / "logs" / f"OETScheduler-{_safe(instance)}.log"
            server = _spawn(f"OETScheduler/{instance}", server_command(instance), env, log)
            stack.servers.append(server)
            for name in names:
                trl = f"tango://{tango_host}/{name}"
                ready = partial(device_answers, trl)
                _wait(f"{name} answering", ready, server, START_TIMEOUT_S, cancel)
    except BaseException:
        stack.stop(out)
        raise
    return stack


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def up(
    devices_files: Sequence[Path | str],
    data_dir: Path,
    tango_host: str | None = None,
    out: Printer = print,
    stop_event: threading.Event | None = None,
    policy: Policy = Policy(),
) -> int:
    """Start everything, print where it is, run until Ctrl-C/SIGTERM/SIGHUP, stop everything.

    Returns 0 when told to stop, 1 if a process it started died, 130 if told to stop while
    it was still starting (what it had started is stopped all the same).
    """
    stop = stop_event or threading.Event()
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        # The handlers only set the event: the clean-up runs in the main flow, and a second
        # Ctrl-C while it runs does not cut it short.
        for sig in STOP_SIGNALS:
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
        # Writes to a closed pipe fail with EPIPE (handled by UpOutput) instead of killing.
        previous[signal.SIGPIPE] = signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    try:
        try:
            stack = start(devices_files, data_dir, tango_host, out, policy, cancel=stop)
        except Interrupted as exc:
            out(f"{exc}: stopped what was started")
            return 130
        try:
            out(f"TANGO_HOST={stack.tango_host}")
            for name in stack.devices:
                out(f"device {name}")
            if stack.devices:
                write_dashboard(stack.tango_host, stack.devices[0], data_dir.resolve(), out)
            out("ready; press Ctrl-C to stop")
            while not stop.wait(0.5):
                dead = stack.dead()
                if dead:
                    for s in dead:
                        out(f"{s.name} exited with code {s.process.returncode}; log {s.log}")
                    return 1
            return 0
        finally:
            stack.stop(out)
            out("stopped")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _directory(value: str) -> Path:
    path = Path(value).expanduser().resolve()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{value!r} is not a directory")
    return path


def _git_pattern(value: str) -> str:
    try:
        return check_pattern(value)
    except GitUrlError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parser() -> argparse.ArgumentParser:
    result = argparse.ArgumentParser(
        prog="tango-oet up",
        description="Start a Tango database (if none answers), register and start OETScheduler."
        " The device runs only what it is configured to allow: the example scripts, plus"
        " what these options add.",
    )
    result.add_argument(
        "--devices", nargs="+", default=None, help="dsconfig JSON files (default: devices/*.json)"
    )
    result.add_argument("--data-dir", type=Path, default=Path(".oet-data"))
    result.add_argument("--port", type=int, default=None, help="Tango database port")
    result.add_argument(
        "--scripts",
        action="append",
        type=_directory,
        default=[],
        metavar="DIR",
        help="also allow the file:// scripts under DIR (ScriptRoots); repeatable",
    )
    result.add_argument(
        "--allow-git",
        action="append",
        type=_git_pattern,
        default=[],
        metavar="PATTERN",
        help="allow git repositories matching PATTERN, e.g. 'https://gitlab.example/obs/*'"
        " (GitAllowList); repeatable",
    )
    result.add_argument(
        "--allow-embedded",
        action="store_true",
        help="accept embedded:// scripts, whose source comes in the request (AllowEmbedded)",
    )
    return result


def policy_of(args: argparse.Namespace) -> Policy:
    return Policy(tuple(args.scripts), tuple(args.allow_git), bool(args.allow_embedded))


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry: `up [--devices FILE…] [--data-dir DIR] [--port N] [--scripts DIR]…`."""
    command = parser()
    args = command.parse_args(argv)
    files = args.devices or sorted(str(p) for p in Path("devices").glob("*.json"))
    if not files:
        command.error("no --devices given and no devices/*.json here")
    host_port = os.environ.get("TANGO_HOST") or DEFAULT_TANGO_HOST
    if args.port is not None:
        host, _ = parse_tango_host(host_port)
        host_port = f"{host}:{args.port}"
    try:
        for f in files:
            list(iter_devices(load_definition(Path(f))))  # fail early on a broken file
    except (ValueError, FileNotFoundError) as exc:
        print(f"tango-oet up: {exc}", file=sys.stderr)
        return 1
    out = UpOutput(args.data_dir.resolve() / "logs" / "up.log")
    try:
        out(f"log {out.log} (the servers' logs are beside it)")
        return up(files, args.data_dir, host_port, out=out, policy=policy_of(args))
    except (RuntimeError, TimeoutError, ValueError, FileNotFoundError) as exc:
        out.error(f"tango-oet up: {exc}")
        return 1
    finally:
        out.close()


if __name__ == "__main__":
    sys.exit(main())
