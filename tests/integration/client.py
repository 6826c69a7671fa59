"""A client process for integration tests: `python -m tests.integration.client TRL SCENARIO …`.

It talks to a real OETScheduler only through Tango (commands and change events), waits on
events with deadlines, and prints one JSON line with what it observed. Exit code 1 (and the
events seen so far) on any failure.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import tango

from tests.waiting import Recorder

TIMEOUT_S = 30.0


class Client:
    def __init__(self, trl: str) -> None:
        self.proxy = tango.DeviceProxy(trl)
        self.events: Recorder[tuple[str, Any, float]] = Recorder()
        self._ids: list[int] = []

    def subscribe(self, attr: str) -> None:
        self._ids.append(self.proxy.subscribe_event(attr, tango.EventType.CHANGE_EVENT, self._push))

    def _push(self, e: Any) -> None:
        if e.err:
            return
        name = e.attr_name.rsplit("/", 1)[-1].lower()
        self.events((name, e.attr_value.value, time.perf_counter()))

    def values(self, attr: str) -> list[Any]:
        return [v for (a, v, _) in self.events.snapshot() if a == attr.lower()]

    def transitions(self, pid: int) -> list[str]:
        out = []
        for v in self.values("lastTransition"):
            if v:
                t = json.loads(v)
                if t["id"] == pid:
                    out.append(t["state"])
        return out

    def wait_transition(self, pid: int, *states: str) -> None:
        def seen(_: list[Any]) -> bool:
            return any(s in states for s in self.transitions(pid))

        self.events.wait_for(seen, TIMEOUT_S, f"procedure {pid} in {states}")

    def wait(self, what: str, predicate: Callable[[], bool]) -> None:
        self.events.wait_for(lambda _: predicate(), TIMEOUT_S, what)

    def prepare(self, request: dict[str, Any]) -> int:
        return int(self.proxy.Prepare(json.dumps(request)))

    def close(self) -> None:
        for i in self._ids:
            self.proxy.unsubscribe_event(i)


def lifecycle(client: Client, script: str) -> dict[str, Any]:
    """Prepare a file script with init, start main, and record every state on the way."""
    client.subscribe("lastTransition")
    client.subscribe("output")
    pid = client.prepare(
        {"script": f"file://{script}", "init": {"kwargs": {"target": "integration"}}}
    )
    state_attr = f"procedure{pid}State"
    client.subscribe(state_attr)
    client.proxy.Start(json.dumps({"id": pid, "kwargs": {"repeat": 3}, "force": True}))
    client.wait_transition(pid, "COMPLETE", "FAILED")
    labels = list(client.proxy.get_attribute_config(state_attr).enum_labels)
    client.wait(
        "COMPLETE on the state attribute",
        lambda: labels.index("COMPLETE") in client.values(state_attr),
    )
    client.wait(
        "three output lines",
        lambda: (
            sum(1 for push in client.values("output") for line in (push or []) if "hello" in line)
            >= 3
        ),
    )
    return {
        "id": pid,
        "transitions": client.transitions(pid),
        "state_events": [labels[int(v)] for v in client.values(state_attr)],
        "summary": json.loads(client.proxy.Describe(pid)),
        "output": [line for push in client.values("output") for line in (push or [])],
        "device_state": str(client.proxy.state()),
    }


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead too (its parent reaps it)
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def stop_ignoring_sigterm(client: Client, script: str) -> dict[str, Any]:
    client.subscribe("lastTransition")
    pid = client.prepare({"script": f"file://{script}"})
    client.proxy.Start(json.dumps({"id": pid, "force": True}))
    client.wait_transition(pid, "RUNNING")
    worker = json.loads(client.proxy.Describe(pid))["pid"]
    started = time.perf_counter()
    client.proxy.Stop(json.dumps({"id": pid}))
    client.wait_transition(pid, "STOPPED", "FAILED", "UNKNOWN")
    return {
        "id": pid,
        "transitions": client.transitions(pid),
        "stop_seconds": time.perf_counter() - started,
        "worker_alive": _alive(worker),
        "summary": json.loads(client.proxy.Describe(pid)),
    }


def sigkill(client: Client, script: str, gate: str) -> dict[str, Any]:
    client.subscribe("lastTransition")
    pid = client.prepare({"script": f"file://{script}", "init": {"args": [gate]}})
    client.proxy.Start(json.dumps({"id": pid, "force": True}))
    client.wait_transition(pid, "RUNNING")
    worker = json.loads(client.proxy.Describe(pid))["pid"]
    os.kill(worker, signal.SIGKILL)
    client.wait_transition(pid, "FAILED")
    return {
        "id": pid,
        "worker": worker,
        "transitions": client.transitions(pid),
        "summary": json.loads(client.proxy.Describe(pid)),
    }


SCENARIOS: dict[str, Callable[..., dict[str, Any]]] = {
    "lifecycle": lifecycle,
    "stop-ignoring-sigterm": stop_ignoring_sigterm,
    "sigkill": sigkill,
}


def main(argv: list[str]) -> int:
    trl, scenario, *args = argv
    client = Client(trl)
    try:
        report = SCENARIOS[scenario](client, *args)
    except Exception as exc:  # report everything seen so far, for the test's message
        print(
            json.dumps(
                {
                    "error": repr(exc),
                    "events": [[a, str(v)] for a, v, _ in client.events.snapshot()][-30:],
                }
            )
        )
        return 1
    finally:
        client.close()
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
