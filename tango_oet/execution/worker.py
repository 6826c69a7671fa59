"""The worker process: loads one user script and runs its functions on request (ScriptWorker).

Standard library only (plus `tango_oet.scripting` and the message types), because workers also
run under an environment's own interpreter. Threads in the worker:

    main thread      runs the script: load, init, each call; SIGTERM raises ScriptTerminated here
    receiver         reads the parent's pipe: Load/Call go to the main thread's queue,
                     Pause/Resume/Stop flip flags that `checkpoint()` honours
    output flusher   sends buffered output lines every few milliseconds

Every message to the parent goes through `Channel.send`, which flushes pending output first, so
the parent sees output lines and events in the order the script produced them.
"""

from __future__ import annotations

import gc
import io
import json
import logging
import os
import queue
import re
import select
import signal
import sys
import threading
import time
import traceback
import types
from multiprocessing.connection import Connection
from typing import Any

from tango_oet import scripting
from tango_oet.execution import cgroups, procfs
from tango_oet.execution import messages as m
from tango_oet.execution.environment import worker_environment
from tango_oet.execution.limits import ResultTooLarge, WorkerLimits

#: How an InterpreterLauncher hands WorkerLimits to `python -m ...worker` ("MB,seconds").
LIMITS_ENV = "OET_WORKER_LIMITS"
FLUSH_INTERVAL_S = 0.005
MAX_PENDING_LINES = 2000
MAX_LINE_CHARS = 10_000
GIL_SWITCH_INTERVAL_S = 0.0005
EXIT_OK = 0
EXIT_SCRIPT_ERROR = 1
EXIT_PROTOCOL_ERROR = 3
CGROUP_ENV = "OET_CONTAINMENT_CGROUP"  # the same name as in containment.py (server side)
# A `str` may hold lone surrogates (print("\udcff"), text decoded with surrogateescape); UTF-8
# cannot, so neither the store nor a client could take such a line. They become U+FFFD here.
_SURROGATE = re.compile("[\ud800-\udfff]")

# Set once by worker_main: how this worker kills what its script left before it exits.
_subreaper = False
_cgroup: str | None = None
# Set when the worker starts to exit (the script is over, `_exit` is about to kill what it
# left): from then on SIGTERM no longer raises, so it cannot abort that cleanup half-way, and
# the receiver no longer takes the pipe the worker closed itself for a parent that is gone.
_exiting = False
# Held by the first caller of `_exit` until os._exit: the main thread and the timer that
# `_parent_gone` starts may both get there, and the first to finish must not end the process
# while the other is still killing.
_exit_lock = threading.Lock()


#: MaxResultBytes of this worker (0: none), from its WorkerLimits.
_max_result_bytes = 0


def json_safe(value: Any, limit: int = 0) -> Any:
    """Return `value` as plain JSON data; objects JSON cannot hold become their repr.

    With `limit`, ResultTooLarge if the JSON text is longer than `limit` bytes.
    """
    try:
        text = json.dumps(value, default=repr, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        text = json.dumps(repr(value))
    if limit and len(text) > limit and len(text.encode("utf-8", "replace")) > limit:
        raise ResultTooLarge(
            f"{len(text.encode('utf-8', 'replace'))} bytes as JSON, more than "
            f"MaxResultBytes={limit}"
        )
    return json.loads(text)


def public_functions(module: types.ModuleType) -> dict[str, types.FunctionType]:
    """The functions a client may call: public, and defined in the script itself.

    A plain function (not a class, a callable object, a partial or a builtin) whose
    `__module__` is the script's module: a name the script imported (`from os import system`,
    a helper module next to it) keeps its own module and is excluded.
    """
    return {
        name: obj
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and isinstance(obj, types.FunctionType)
        and obj.__module__ == module.__name__
    }


class Channel:
    """The worker's side of the pipe: numbered, thread-safe sends and batched output lines."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self._seq = 0
        self._pending: dict[str, list[str]] = {}
        self._npending = 0
        self._has_output = threading.Event()
        self.broken = False

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def send(self, make: Any, *args: Any, **kwargs: Any) -> None:
        """Build `make(seq, *args, **kwargs)` under the lock and send it after pending output."""
        with self._lock:
            self._flush_locked()
            self._send_locked(make(self.next_seq(), *args, **kwargs))

    def add_lines(self, stream: str, lines: list[str]) -> None:
        with self._lock:
            self._pending.setdefault(stream, []).extend(lines)
            self._npending += len(lines)
            if self._npending >= MAX_PENDING_LINES:
                self._flush_locked()
        self._has_output.set()

    def flush_forever(self) -> None:
        """Send pending output a few ms after it appears; sleeps without CPU while idle."""
        while True:
            self._has_output.wait()
            # Wait a little so one message carries a burst of lines, not one line each.
            time.sleep(FLUSH_INTERVAL_S)
            self._has_output.clear()
            self.flush()

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if not self._npending:
            return
        pending, self._pending, self._npending = self._pending, {}, 0
        for stream, lines in pending.items():
            self._send_locked(m.OutputLines(self.next_seq(), stream, tuple(lines)))

    def _send_locked(self, msg: Any) -> None:
        if self.broken:
            return
        try:
            self._conn.send_bytes(m.encode_worker(msg))  # JSON: the server never unpickles
        except (OSError, ValueError):
            # The parent is gone; the receiver thread notices EOF and ends the worker.
            self.broken = True


class LineWriter(io.TextIOBase):
    """A text stream that turns writes into whole lines on the channel (sys.stdout, sys.stderr)."""

    def __init__(self, channel: Channel, stream: str) -> None:
        super().__init__()
        self._channel = channel
        self._stream = stream
        self._partial = ""
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]  # TextIOBase says None
        # Libraries that look (click, rich, …) print any Unicode, not a '?' or an ASCII form.
        return "utf-8"

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        if not s.isascii():  # ASCII (the common case) cannot hold a surrogate
            s = _SURROGATE.sub("\ufffd", s)
        with self._lock:
            text = self._partial + s
            *lines, self._partial = text.split("\n")
        if lines:
            self._channel.add_lines(self._stream, [ln[:MAX_LINE_CHARS] for ln in lines])
        return len(s)

    def flush(self) -> None:
        with self._lock:
            partial, self._partial = self._partial, ""
        if partial:
            self._channel.add_lines(self._stream, [partial[:MAX_LINE_CHARS]])

    def isatty(self) -> bool:
        return False


class FdCapture:
    """Output written to file descriptors 1 and 2 (subprocesses, C extensions) as lines.

    The descriptors are redirected into a pipe; a thread forwards what arrives, and `drain`
    (called before every message to the parent) forwards what is already in the pipe, so
    lines a subprocess wrote before a call returned arrive before its result.
    """

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        read_end, write_end = os.pipe()
        os.dup2(write_end, 1)
        os.dup2(write_end, 2)
        os.close(write_end)
        os.set_blocking(read_end, False)
        self._fd = read_end
        self._lock = threading.Lock()
        self._partial = b""
        threading.Thread(target=self._forward, name="oet-fd-output", daemon=True).start()

    def _forward(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        while True:
            poller.poll()
            if not self.drain():
                return

    def drain(self, final: bool = False) -> bool:
        """Forward what the pipe holds now (and, if `final`, an unfinished line); False at EOF."""
        with self._lock:
            data, open_ = [], True
            while True:
                try:
                    chunk = os.read(self._fd, 65536)
                except BlockingIOError:
                    break
                if not chunk:
                    open_ = False
                    break
                data.append(chunk)
            *lines, self._partial = (self._partial + b"".join(data)).split(b"\n")
            if final and self._partial:
                lines.append(self._partial)
                self._partial = b""
            if lines:
                text = [ln.decode("utf-8", "replace")[:MAX_LINE_CHARS] for ln in lines]
                self._channel.add_lines("stdout", text)
            return open_


class _Stop:
    """Queue marker: leave the main loop (stop requested or parent gone)."""


class ScriptWorker:
    """Runs one procedure: the main loop, and the runtime behind `tango_oet.scripting`."""

    def __init__(self, conn: Connection) -> None:
        self.channel = Channel(conn)
        self._conn = conn
        self._work: queue.SimpleQueue[m.ParentMessage | _Stop] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._resume = threading.Condition()
        self._paused = False
        self._module: types.ModuleType | None = None
        self._functions: dict[str, types.FunctionType] = {}
        self._script_name = "script"
        self._fd_capture: FdCapture | None = None

    # ---- scripting.Runtime -----------------------------------------------------------------
    def publish(self, topic: str, payload: dict[str, Any]) -> None:
        safe = json_safe(payload, _max_result_bytes)
        self.channel.send(
            m.UserEvent,
            topic,
            safe if isinstance(safe, dict) else {"value": safe},
            time.time(),
            threading.current_thread().name,
        )

    def progress(self, done: float, total: float | None, message: str) -> None:
        self.channel.send(m.ProgressReport, done, total, message)

    def checkpoint(self) -> None:
        if self._stop.is_set():
            raise scripting.StopRequested("stop requested")
        if not self._paused:
            return
        self.channel.send(m.PauseReached)
        with self._resume:
            self._resume.wait_for(lambda: not self._paused or self._stop.is_set())
        if self._stop.is_set():
            raise scripting.StopRequested("stop requested while paused")
        self.channel.send(m.ResumedRunning)

    def stop_requested(self) -> bool:
        return self._stop.is_set()

    # ---- threads -----------------------------------------------------------------------------
    def _receive(self) -> None:
        try:
            self._receive_forever()
        except BaseException:
            if _exiting:
                return  # the worker closed the pipe under us on its way out (e.g. TypeError)
            # Without its receiver nobody could stop this worker: end it as if orphaned.
            self._parent_gone()
            raise

    def _receive_forever(self) -> None:
        while True:
            try:
                msg = self._conn.recv()
            except (EOFError, OSError):
                self._parent_gone()
                return
            match msg:
                case m.LoadScript() | m.CallFunction():
                    self._work.put(msg)
                case m.PauseScript():
                    with self._resume:
                        self._paused = True
                case m.ResumeScript():
                    self._set_unpaused()
                case m.StopScript():
                    self._stop.set()
                    self._set_unpaused()
                    self._work.put(_Stop())
                case _:
                    print(f"tango-oet worker: unexpected message {msg!r}", file=sys.__stderr__)
                    self._parent_gone()
                    return

    def _set_unpaused(self) -> None:
        with self._resume:
            self._paused = False
            self._resume.notify_all()

    def _parent_gone(self) -> None:
        if _exiting:
            # Not the parent: worker_main closed the pipe itself and `_exit` is killing what the
            # script left. Signalling ourselves now would only interrupt that.
            return
        # Without a parent nobody can stop us: stop the script ourselves, escalating like it would.
        self._stop.set()
        self._set_unpaused()
        self._work.put(_Stop())
        os.kill(os.getpid(), signal.SIGTERM)
        threading.Timer(2.0, _exit, args=(EXIT_PROTOCOL_ERROR,)).start()

    # ---- main thread -------------------------------------------------------------------------
    def run(self) -> int:
        _warm_up()
        threading.Thread(target=self.channel.flush_forever, name="oet-flusher", daemon=True).start()
        self.channel.send(m.WorkerReady, os.getpid(), sys.executable)
        try:
            # While idle in the pool only a Load (or a Stop) can come: the main thread reads
            # it itself, saving a thread hand-over on the Prepare path. The receiver thread
            # starts once there is a script to pause or stop.
            try:
                load = self._conn.recv()
            except (EOFError, OSError):
                return EXIT_OK  # the pool closed us
            if not isinstance(load, m.LoadScript):
                return EXIT_OK if isinstance(load, m.StopScript) else EXIT_PROTOCOL_ERROR
            self._capture_output(load.procedure_id)
            scripting._install(self)
            if not self._load(load):
                return EXIT_SCRIPT_ERROR
            while True:
                msg = self._work.get()
                if isinstance(msg, _Stop):
                    return EXIT_OK
                if not isinstance(msg, m.CallFunction):
                    return EXIT_PROTOCOL_ERROR
                ok, is_main = self._call(msg)
                if not ok:
                    return EXIT_SCRIPT_ERROR
                if is_main:
                    return EXIT_OK
        except scripting.StopRequested as exc:
            # A stop that arrived between calls (e.g. SIGTERM while idle): nothing to report
            # unless nobody asked for it.
            if not self._stop.is_set():
                self._report("idle", exc)
            return EXIT_OK
        finally:
            self._flush_output(final=True)
            self.channel.flush()

    def _capture_output(self, procedure_id: int) -> None:
        _flush_std_streams()
        self._fd_capture = FdCapture(self.channel)
        sys.stdout = LineWriter(self.channel, "stdout")
        sys.stderr = LineWriter(self.channel, "stderr")
        threading.current_thread().name = f"procedure-{procedure_id}"
        handler = logging.StreamHandler(LineWriter(self.channel, "log"))
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.handlers[:] = [handler]
        root.setLevel(logging.INFO)

    def _load(self, load: m.LoadScript) -> bool:
        self.channel.send(m.LoadStarted)
        threading.Thread(target=self._receive, name="oet-receiver", daemon=True).start()
        self._script_name = load.name
        try:
            for entry in reversed(load.sys_path):
                sys.path.insert(0, entry)
            if load.cwd:
                os.chdir(load.cwd)
            module = types.ModuleType(f"oet_script_{load.procedure_id}")
            if load.path is not None:
                module.__file__ = load.path
            if load.source is not None:
                # The text the server read from the file it checked (or an embedded script).
                source = load.source
                filename = load.path or f"<embedded:{load.name}>"
            elif load.path is not None:
                with open(load.path, encoding="utf-8") as f:
                    source = f.read()
                filename = load.path
            else:
                source, filename = "", f"<embedded:{load.name}>"
            sys.modules[module.__name__] = module
            exec(compile(source, filename, "exec"), module.__dict__)
            self._module = module
            init = getattr(module, "init", None)
            result = None
            if callable(init):
                self.channel.send(m.InitStarted)
                result = init(*load.init_args, **load.init_kwargs)
            # After init: what init defines is callable too. The one list the parent sees
            # (and checks Start against) and the one `_call` resolves names from.
            self._functions = public_functions(module)
            self._flush_output()
            self.channel.send(m.Loaded, tuple(sorted(self._functions)), json_safe(result))
            return True
        except BaseException as exc:
            self._report("init" if self._module is not None else "load", exc)
            if isinstance(exc, scripting.StopRequested):
                return False
            return False

    def _call(self, call: m.CallFunction) -> tuple[bool, bool]:
        assert self._module is not None
        # Never getattr(module, name): that would reach whatever the script imported
        # (`from os import system`). The parent checks Start against the same list; a call
        # that gets here anyway (forced before the list was known) is refused before it runs.
        fn = self._functions.get(call.function)
        is_main = call.function == "main"
        try:
            if fn is None:
                raise AttributeError(
                    f"{self._script_name} has no public function {call.function!r} defined in "
                    f"the script; it defines {sorted(self._functions)}"
                )
            result = fn(*call.args, **call.kwargs)
            self._flush_output(final=is_main)  # main is the last call: no line left behind
            reply = json_safe(result, _max_result_bytes)
            self.channel.send(m.CallReturned, call.call_id, call.function, reply)
            return True, is_main
        except BaseException as exc:
            self._report(f"call {call.function}", exc)
            return False, is_main
        finally:
            with self._resume:
                self._paused = False

    def _flush_output(self, final: bool = False) -> None:
        _flush_std_streams()
        if self._fd_capture is not None:
            self._fd_capture.drain(final)

    def _report(self, phase: str, exc: BaseException) -> None:
        self._flush_output(final=True)
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self.channel.send(m.ScriptFailed, phase, type(exc).__name__, str(exc), tb)


def _warm_up() -> None:
    """Exercise the load/call/reply paths once while idle.

    A worker forked from the forkserver shares its pages copy-on-write; the first run of any
    code path takes page faults. Taking them here, before the worker is handed out, removes
    milliseconds from the first Prepare and Start.
    """
    import pickle

    gc.freeze()  # our GC must not write to every inherited object (more copy-on-write)
    module = types.ModuleType("oet_warm_up")
    exec(
        compile("def init(a=1):\n    return a\ndef main():\n    return [1]\n", "<warm>", "exec"),
        module.__dict__,
    )
    json_safe(module.main())
    traceback.format_exception(ValueError, ValueError("x"), None)
    samples = (
        m.LoadScript(0, 0, "x", None, "", (1,), {"a": 1}, ("/",), None),
        m.CallFunction(0, 0, "main", (), {}),
        m.Loaded(0, ("main",), None),
        m.CallReturned(0, 0, "main", [1]),
        m.OutputLines(0, "stdout", ("x",)),
        m.UserEvent(0, "t", {"a": 1}, 0.0, "main"),
        m.LoadStarted(0),
        m.InitStarted(0),
    )
    for sample in samples:
        if isinstance(sample, m.LoadScript | m.CallFunction):
            pickle.loads(pickle.dumps(sample, protocol=pickle.HIGHEST_PROTOCOL))
        else:
            m.encode_worker(sample)
    logging.Formatter("%(levelname)s %(name)s: %(message)s").format(
        logging.LogRecord("x", logging.INFO, "x", 1, "x", None, None)
    )


def _flush_std_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


def _on_sigterm(signum: int, frame: types.FrameType | None) -> None:
    if _exiting:
        # The script is over and `_exit` is killing what it left: exactly what the SIGTERM
        # asks for. Raising here would abort that half-way (in subreaper mode, a daemon that
        # forked without exec would then escape for good), so the signal is absorbed.
        return
    raise scripting.ScriptTerminated(f"terminated by {signal.Signals(signum).name}")


def _contain(containment: tuple[str, str | None] | None) -> None:
    """Put this worker where the server finds everything it starts.

    `containment` is (environment marker, cgroup directory or None), from the server's
    Containment. In a cgroup, everything the script starts stays there. Without one (or if
    entering it fails), the worker adopts its orphans (setsid, double fork) as a subreaper.
    Either way it kills them itself before exiting (`_exit`), even with no server left.
    """
    global _subreaper, _cgroup
    if containment is None:
        return
    marker, cgroup = containment
    # Inherited by every process the script execs: the server finds them even after a crash.
    os.environ[procfs.MARKER_ENV] = marker
    if cgroup:
        try:
            with open(os.path.join(cgroup, "cgroup.procs"), "w", encoding="ascii") as f:
                f.write(str(os.getpid()))
            _cgroup = cgroup
            return
        except OSError as exc:
            # The server notices (the handshake checks membership) and shows a warning.
            print(f"tango-oet worker: cannot enter cgroup {cgroup}: {exc}", file=sys.__stderr__)
    _subreaper = procfs.set_child_subreaper()
    if not _subreaper:
        print("tango-oet worker: prctl(PR_SET_CHILD_SUBREAPER) failed", file=sys.__stderr__)


def _kill_cgroup_mates(cgroup: str) -> None:
    """SIGKILL every other member of this worker's cgroup (checked members, verified pids)."""
    mine = cgroups.cgroup_of(os.getpid())
    for _ in range(20):
        try:
            with open(os.path.join(cgroup, "cgroup.procs"), encoding="ascii") as f:
                pids = [int(x) for x in f.read().split() if int(x) != os.getpid()]
        except OSError:
            return
        mates = []
        for pid in pids:
            ident = procfs.identify(pid)
            # Membership checked after the start time was read: the pid is that process.
            if ident is not None and cgroups.cgroup_of(pid) == mine:
                mates.append(ident)
        if not mates:
            return
        procfs.kill_verified(mates, wait_s=0.5)


def _exit(code: int) -> None:
    """os._exit, after killing every process the script left (its cgroup mates or its tree).

    Called from the main thread (worker_main) or from `_parent_gone`'s timer; the second caller
    waits here until the first has exited the process.
    """
    global _exiting
    _exiting = True
    _exit_lock.acquire()  # never released: os._exit below ends the process
    try:
        if _cgroup is not None:
            _kill_cgroup_mates(_cgroup)
        elif _subreaper:
            me = procfs.identify(os.getpid())
            if me is not None:
                procfs.kill_tree(me, include_root=False)
    except BaseException as exc:  # exiting matters more than a clean tree
        print(f"tango-oet worker: cannot kill descendants: {exc!r}", file=sys.__stderr__)
    os._exit(code)


def worker_main(
    conn: Connection,
    containment: tuple[str, str | None] | None = None,
    environment: tuple[str, ...] | None = None,
    limits: WorkerLimits | None = None,
) -> None:
    """Entry point of a worker process (forkserver/spawn target, or `python -m`).

    `environment`: the WorkerEnvironment allow-list; the script sees only those variables
    (None: the environment as inherited, which the `python -m` launcher has filtered already).
    """
    global _exiting, _max_result_bytes
    if limits is not None:
        _max_result_bytes = limits.max_result_bytes
    if environment is not None:
        # The forkserver holds the server's whole environment: only the allowed part stays.
        allowed = worker_environment(os.environ, environment)
        os.environ.clear()
        os.environ.update(allowed)
    # First, before anything can start a process that could escape.
    _contain(containment)
    if limits is not None and limits.any:
        limits.apply()  # before any script code: it cannot raise them again (hard limits)
        limits.become_user()  # last: entering the cgroup and the limits needed root
    # Own process group: the supervisor's SIGKILL reaches whatever the script started too.
    try:
        os.setsid()
    except OSError:
        pass  # already a group leader (started with start_new_session)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)
    # A script spinning in pure Python holds the GIL; the receiver thread (pause, stop) and
    # the output flusher would wait up to the default 5 ms for it on every hand-over.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    code = 1  # what multiprocessing reports for an uncaught exception, as before
    try:
        code = ScriptWorker(conn).run()
    except scripting.StopRequested:
        code = EXIT_OK  # a SIGTERM (or Stop) ended the script, possibly on its way out of run()
    except BaseException:
        # A fault of the worker itself: still kill what the script started (below).
        traceback.print_exc(file=sys.__stderr__)
    finally:
        # Whatever is in flight, the cleanup runs. A plain store first: no call precedes it,
        # where CPython could run the SIGTERM handler, so every SIGTERM from here on is
        # absorbed; and it precedes closing the pipe, which the receiver thread notices.
        _exiting = True
        try:
            conn.close()
        except OSError:
            pass
        # os._exit: non-daemon threads a script left behind must not keep the worker alive.
        _exit(code)


def _main_from_fd() -> None:
    """`python -m tango_oet.execution.worker FD`: a worker under another interpreter."""
    fd = int(sys.argv[1])
    marker = os.environ.get(procfs.MARKER_ENV)
    containment = (marker, os.environ.get(CGROUP_ENV) or None) if marker else None
    os.environ.pop(CGROUP_ENV, None)  # the script's children need the marker, not this
    limits = None
    if raw := os.environ.pop(LIMITS_ENV, ""):
        memory_mb, cpu_seconds, result_bytes, user = raw.split(",", 3)
        limits = WorkerLimits(int(memory_mb), int(cpu_seconds), int(result_bytes), user)
    worker_main(Connection(fd), containment, limits=limits)


if __name__ == "__main__":
    _main_from_fd()
