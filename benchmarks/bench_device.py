"""Device benchmarks: a real client against a real OETScheduler server process and pytango-db.

Run: `.venv/bin/python benchmarks/bench_device.py [--quick]`. Starts a Tango database
(pytango-db), an `OETScheduler` server (the console script) and a bare device server (a trivial
device in this file), measures from this process as a Tango client, stops everything by PID and
prints one table. Ratios compare with bare Tango costs measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import tango

PACE_S = 0.1  # idle time before each timed step: the warm pool refills, nothing else runs
TRIVIAL = "def main():\n    return 1\n"
PRINTER = "def main(n):\n    for i in range(n):\n        print('line', i)\n"
TICKER = "def main():\n    return 0\n\ndef tick():\n    return 1\n"
PINGER = (
    "import time\nfrom tango_oet.scripting import publish\n"
    "def main(n, gap):\n    for i in range(n):\n        time.sleep(gap)\n"
    "        publish('ping', i=i)\n"
)
PUBLISHER = (
    "from tango_oet.scripting import publish\n"
    "def main(n):\n    for i in range(n):\n        publish('tick', i=i)\n"
)
BARE_SERVER = "BareBench"


# ---- the bare device (runs in its own server process: `bench_device.py --bare-server X`) ----
def run_bare_server(instance: str) -> None:
    from tango import AttrWriteType, DevState
    from tango.server import Device, attribute, command, run

    class BareDevice(Device):  # type: ignore[misc]
        def init_device(self) -> None:
            super().init_device()
            self._stamp = 0.0
            self.set_change_event("stamp", True, False)
            self.set_state(DevState.ON)

        @attribute(dtype=float, access=AttrWriteType.READ)  # type: ignore[untyped-decorator]
        def stamp(self) -> float:
            return self._stamp

        @command  # type: ignore[untyped-decorator]
        def Noop(self) -> None:  # noqa: N802
            pass

        @command(dtype_in=int)  # type: ignore[untyped-decorator]
        def Pulse(self, n: int) -> None:  # noqa: N802
            for _ in range(n):
                self._stamp = time.time()
                self.push_change_event("stamp", self._stamp)

    run((BareDevice,), args=[BARE_SERVER, instance, "-ORBendPoint", "giop:tcp:127.0.0.1:0"])


# ---- client-side recording -------------------------------------------------------------------
class Recorder:
    """Change-event callback: keeps (value, perf_counter, wall time); waits on predicates."""

    def __init__(self) -> None:
        self.items: list[tuple[Any, float, float]] = []
        self.cond = threading.Condition()

    def __call__(self, e: Any) -> None:
        now, wall = time.perf_counter(), time.time()
        if e.err:
            return
        with self.cond:
            self.items.append((e.attr_value.value, now, wall))
            self.cond.notify_all()

    def wait(self, predicate: Callable[[], bool], timeout: float = 60.0) -> None:
        with self.cond:
            if not self.cond.wait_for(predicate, timeout):
                raise TimeoutError(f"no event matched within {timeout} s; last: {self.items[-3:]}")


class Transitions(Recorder):
    """lastTransition events indexed by (procedure id, state) -> receive perf_counter."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[tuple[int, str], tuple[float, float, str]] = {}
        self.counts: dict[tuple[int, str], int] = {}

    def __call__(self, e: Any) -> None:
        now, wall = time.perf_counter(), time.time()
        if e.err or not e.attr_value.value:
            return
        t = json.loads(e.attr_value.value)
        key = (t["id"], t["state"])
        with self.cond:
            self.seen[key] = (now, wall, t["time"])
            self.counts[key] = self.counts.get(key, 0) + 1
            self.cond.notify_all()

    def at(self, pid: int, state: str, timeout: float = 60.0) -> float:
        self.wait(lambda: (pid, state) in self.seen, timeout)
        return self.seen[(pid, state)][0]


def _iso_to_epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


@dataclass
class Row:
    name: str
    value: float
    unit: str
    bare: float | None = None
    bare_name: str = ""
    target: str = ""
    note: str = ""

    def ratio(self) -> str:
        return f"{self.value / self.bare:.1f}x {self.bare_name}" if self.bare else ""


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


def _p90_ms(samples: list[float]) -> float:
    return sorted(samples)[int(len(samples) * 0.9)] * 1e3


# ---- processes ---------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Servers:
    """pytango-db + OETScheduler (via the quick start) + the bare device server."""

    def __init__(self, tmp: Path, pool_size: int) -> None:
        from tango_oet.device import quickstart
        from tango_oet.device.registration import register

        self.tango_host = f"127.0.0.1:{_free_port()}"
        definition = {
            "servers": {
                "OETScheduler": {
                    "bench": {
                        "OETScheduler": {
                            "bench/oet/1": {
                                "properties": {
                                    "PoolSize": [str(pool_size)],
                                    "HistoryLength": ["1000"],
                                    "OutputLinesKept": ["1000"],
                                    # Deny by default: the benchmark's scripts are embedded.
                                    "AllowEmbedded": ["true"],
                                }
                            }
                        }
                    }
                },
                BARE_SERVER: {"bench": {"BareDevice": {"bench/bare/1": {}}}},
            }
        }
        path = tmp / "bench-devices.json"
        # The quick start registers both, but only starts OETScheduler servers.
        path.write_text(
            json.dumps({"servers": {"OETScheduler": definition["servers"]["OETScheduler"]}})
        )
        self.stack = quickstart.start([path], tmp, self.tango_host, out=lambda _: None)
        host, port = self.tango_host.split(":")
        register(
            tango.Database(host, int(port)),
            {"servers": {BARE_SERVER: definition["servers"][BARE_SERVER]}},
        )
        env = {**os.environ, "TANGO_HOST": self.tango_host}
        self.bare = subprocess.Popen(
            [sys.executable, __file__, "--bare-server", "bench"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                tango.DeviceProxy(self.trl("bench/bare/1")).ping()
                break
            except tango.DevFailed:
                if time.monotonic() > deadline or self.bare.poll() is not None:
                    self.close()
                    raise RuntimeError("the bare device server did not start") from None
                time.sleep(0.05)

    def trl(self, device: str) -> str:
        return f"tango://{self.tango_host}/{device}"

    def close(self) -> None:
        if self.bare.poll() is None:
            self.bare.terminate()
            try:
                self.bare.wait(20)
            except subprocess.TimeoutExpired:
                self.bare.kill()
                self.bare.wait()
        self.stack.stop(out=lambda _: None)


# ---- measurements ----------------------------------------------------------------------------
def bare_costs(proxy: tango.DeviceProxy, n: int, burst: int, pace: float) -> dict[str, float]:
    """A trivial device's command round trip and push->callback, hot and at `pace`."""
    for _ in range(50):
        proxy.Noop()
    hot = []
    for _ in range(n):
        t0 = time.perf_counter()
        proxy.Noop()
        hot.append(time.perf_counter() - t0)
    paced = []
    for _ in range(max(10, n // 20)):
        time.sleep(pace)
        t0 = time.perf_counter()
        proxy.Noop()
        paced.append(time.perf_counter() - t0)
    rec = Recorder()
    eid = proxy.subscribe_event("stamp", tango.EventType.CHANGE_EVENT, rec)
    rec.wait(lambda: len(rec.items) >= 1)
    latencies = []
    for i in range(max(10, n // 20)):
        time.sleep(pace)
        count = len(rec.items)
        proxy.Pulse(1)
        rec.wait(lambda c=count: len(rec.items) > c)  # type: ignore[misc]
        value, _, wall = rec.items[-1]
        if i:
            latencies.append(wall - value)
    count = len(rec.items)
    t0 = time.perf_counter()
    proxy.Pulse(burst)
    try:
        rec.wait(lambda: len(rec.items) >= count + burst, timeout=20)
    except TimeoutError:
        pass
    got = len(rec.items) - count
    rate = got / (rec.items[-1][1] - t0)
    proxy.unsubscribe_event(eid)
    return {
        "rtt_hot": statistics.median(hot),
        "rtt": statistics.median(paced),
        "latency": statistics.median(latencies),
        "events_per_s": rate,
        "burst_lost": burst - got,
    }


def run(quick: bool, pool_size: int, keep: bool = False) -> list[Row]:
    n = 15 if quick else 60
    n_events = 5_000 if quick else 20_000
    n_lines = 50_000 if quick else 200_000
    many = 20 if quick else 50
    rows: list[Row] = []
    tmp = tempfile.mkdtemp(prefix="bench-device-")
    try:
        servers = Servers(Path(tmp), pool_size)
        try:
            bare = bare_costs(
                tango.DeviceProxy(servers.trl("bench/bare/1")),
                300 if quick else 1000,
                5000,
                PACE_S,
            )
            rows.extend(measure_oet(servers, bare, n, n_events, n_lines, many, pool_size))
            rows.append(
                Row("bare: command round trip (DevVoid), back-to-back", bare["rtt_hot"] * 1e3, "ms")
            )
            rows.append(
                Row(
                    f"bare: command round trip after {PACE_S * 1e3:.0f} ms idle",
                    bare["rtt"] * 1e3,
                    "ms",
                )
            )
            rows.append(
                Row(
                    f"bare: push -> client callback after {PACE_S * 1e3:.0f} ms idle",
                    bare["latency"] * 1e3,
                    "ms",
                )
            )
            rows.append(
                Row(
                    f"bare: push burst events/s (5000, {bare['burst_lost']:.0f} lost)",
                    bare["events_per_s"],
                    "events/s",
                )
            )
        finally:
            servers.close()
    finally:
        if keep:
            print(f"logs kept in {tmp}/logs")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return rows


def measure_oet(
    servers: Servers,
    bare: dict[str, float],
    n: int,
    n_events: int,
    n_lines: int,
    many: int,
    pool_size: int,
) -> list[Row]:
    rows: list[Row] = []
    oet = tango.DeviceProxy(servers.trl("bench/oet/1"))
    transitions = Transitions()
    user_events = Recorder()
    output = Recorder()
    ids = [
        oet.subscribe_event("lastTransition", tango.EventType.CHANGE_EVENT, transitions),
        oet.subscribe_event("lastEvent", tango.EventType.CHANGE_EVENT, user_events),
        oet.subscribe_event("output", tango.EventType.CHANGE_EVENT, output),
    ]
    trivial = json.dumps({"script": "embedded://trivial", "source": TRIVIAL})
    cmd, event = bare["rtt"] * 1e3, bare["latency"] * 1e3

    prep_rtt, ready, start_rtt, complete, state_latency = [], [], [], [], []
    time.sleep(1.0)  # the pool's first workers start (forkserver start-up) before timing
    for i in range(n + 3):
        time.sleep(PACE_S)  # the warm pool is full again
        t0 = time.perf_counter()
        pid = oet.Prepare(trivial)
        t1 = time.perf_counter()
        t_ready = transitions.at(pid, "READY")
        time.sleep(PACE_S)  # the pool's replacement worker has started: nothing else runs
        t2 = time.perf_counter()
        oet.Start(json.dumps({"id": pid}))
        t3 = time.perf_counter()
        t_done = transitions.at(pid, "COMPLETE")
        if i < 3:
            continue  # warm-up
        prep_rtt.append(t1 - t0)
        ready.append(t_ready - t0)
        start_rtt.append(t3 - t2)
        complete.append(t_done - t2)
        _, wall, stamp = transitions.seen[(pid, "COMPLETE")]
        state_latency.append(wall - _iso_to_epoch(stamp))
    paced = f"after {PACE_S * 1e3:.0f} ms idle"
    rows.append(
        Row("Prepare command round trip", _median_ms(prep_rtt), "ms", cmd, f"bare cmd {paced}")
    )
    rows.append(
        Row(
            "Prepare -> READY event (warm pool)",
            _median_ms(ready),
            "ms",
            cmd + event,
            "bare cmd + bare event",
            "<= 3 ms",
            f"p90 {_p90_ms(ready):.2f} ms",
        )
    )
    rows.append(
        Row("Start command round trip", _median_ms(start_rtt), "ms", cmd, f"bare cmd {paced}")
    )
    rows.append(
        Row(
            "Start -> COMPLETE event",
            _median_ms(complete),
            "ms",
            cmd + event,
            "bare cmd + bare event",
            "<= 1.0 ms",
            f"p90 {_p90_ms(complete):.2f} ms",
        )
    )
    rows.append(
        Row(
            "state change in the service -> client callback",
            _median_ms(state_latency),
            "ms",
            event,
            "bare push->callback",
        )
    )

    # a call of a READY procedure's function, back to back: the same path, never idle
    time.sleep(PACE_S)
    pid = oet.Prepare(json.dumps({"script": "embedded://tick", "source": TICKER}))
    transitions.at(pid, "READY")
    time.sleep(PACE_S)
    tick = json.dumps({"id": pid, "function": "tick"})
    hot = []
    for i in range(3 * n + 5):
        key = (pid, "READY")
        count = transitions.counts[key]
        t0 = time.perf_counter()
        oet.Start(tick)
        transitions.wait(lambda k=key, c=count: transitions.counts[k] > c)  # type: ignore[misc]
        if i >= 5:
            hot.append(transitions.seen[key][0] - t0)
    rows.append(
        Row(
            "Start(function) -> READY again, back to back",
            _median_ms(hot),
            "ms",
            bare["rtt_hot"] * 1e3 + event,
            "bare cmd (hot) + bare event",
            note=f"p90 {_p90_ms(hot):.2f} ms",
        )
    )

    # one user event at a time: publish in the worker -> client callback
    pid = oet.Prepare(json.dumps({"script": "embedded://ping", "source": PINGER}))
    transitions.at(pid, "READY")
    before = len(user_events.items)
    oet.Start(json.dumps({"id": pid, "args": [n, PACE_S]}))
    transitions.at(pid, "COMPLETE", 120)
    user_events.wait(lambda: len(user_events.items) - before >= n, 30)
    lat = [
        wall - _iso_to_epoch(json.loads(v)["time"]) for v, _, wall in user_events.items[before:][1:]
    ]
    rows.append(
        Row(
            "user event: publish in the worker -> client callback",
            _median_ms(lat),
            "ms",
            event,
            "bare push->callback",
            note=f"one per {PACE_S * 1e3:.0f} ms",
        )
    )

    # user events as fast as a script can publish them: throughput, none lost
    time.sleep(PACE_S)
    pid = oet.Prepare(json.dumps({"script": "embedded://pub", "source": PUBLISHER}))
    transitions.at(pid, "READY")
    before = len(user_events.items)
    t0 = time.perf_counter()
    oet.Start(json.dumps({"id": pid, "args": [n_events]}))
    transitions.at(pid, "COMPLETE", 120)
    try:
        user_events.wait(lambda: len(user_events.items) - before >= n_events, 30)
    except TimeoutError:
        pass
    got = user_events.items[before:]
    seqs = [json.loads(v)["payload"]["i"] for v, _, _ in got]
    lost = n_events - len(got)
    rate = len(got) / (got[-1][1] - t0)
    rows.append(
        Row(
            f"lastEvent events/s to a client ({n_events}, {lost} lost)",
            rate,
            "events/s",
            bare["events_per_s"],
            "bare push burst",
            "0 lost",
            "in order" if seqs == sorted(seqs) else "OUT OF ORDER",
        )
    )

    # output lines
    time.sleep(PACE_S)
    pid = oet.Prepare(json.dumps({"script": "embedded://print", "source": PRINTER}))
    transitions.at(pid, "READY")
    before = len(output.items)
    prefix = f"{pid} "

    def lines_got() -> int:
        return sum(
            sum(1 for line in (v or ()) if line.startswith(prefix))
            for v, _, _ in output.items[before:]
        )

    t0 = time.perf_counter()
    oet.Start(json.dumps({"id": pid, "args": [n_lines]}))
    transitions.at(pid, "COMPLETE", 300)
    try:
        output.wait(lambda: lines_got() >= n_lines, 60)
    except TimeoutError:
        pass
    got_lines = lines_got()
    dt = output.items[-1][1] - t0
    pushes = len(output.items) - before
    rows.append(
        Row(
            f"output lines/s to a client ({n_lines}, {n_lines - got_lines} lost)",
            got_lines / dt,
            "lines/s",
            target=">= 20k/s, 0 lost",
            note=f"{pushes} pushes",
        )
    )

    # many procedures at once
    time.sleep(1.0)
    t0 = time.perf_counter()
    rtts = []
    pids = []
    for _ in range(many):
        c0 = time.perf_counter()
        pid = oet.Prepare(trivial)
        oet.Start(json.dumps({"id": pid, "force": True}))
        rtts.append(time.perf_counter() - c0)
        pids.append(pid)
    for pid in pids:
        transitions.at(pid, "COMPLETE", 120)
    total = time.perf_counter() - t0
    rows.append(
        Row(
            f"{many} procedures at once: all COMPLETE",
            total * 1e3,
            "ms",
            note=f"PoolSize {pool_size}; Prepare+Start {_median_ms(rtts):.2f} ms each",
        )
    )
    for i in ids:
        oet.unsubscribe_event(i)
    return rows


def _print(rows: list[Row]) -> None:
    print(
        f"tango-oet device benchmark  (python {sys.version.split()[0]}, {os.cpu_count()} cpus,"
        " real client -> real server process, medians)"
    )
    print(f"{'measurement':56} {'value':>10}  {'unit':9} {'ratio':30} {'target':18} note")
    for r in rows:
        value = f"{r.value:,.3f}" if r.value < 100 else f"{r.value:,.0f}"
        print(f"{r.name:56} {value:>10}  {r.unit:9} {r.ratio():30} {r.target:18} {r.note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (CI smoke)")
    parser.add_argument("--pool-size", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the server logs")
    parser.add_argument("--bare-server", metavar="INSTANCE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_server:
        run_bare_server(args.bare_server)
        return
    _print(run(args.quick, args.pool_size, args.keep))


if __name__ == "__main__":
    main()
