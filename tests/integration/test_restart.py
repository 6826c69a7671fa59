"""Durability and containment through a real server process: kill -9, SIGTERM and Init.

A server holds procedures in every kind of live state (READY, busy, sleeping with a child,
PAUSED, ignoring SIGTERM, with a setsid child, with a double-forked daemon) and one COMPLETE;
then it goes away. Afterwards the record is whole (same ids, same scripts, every procedure
final, ids continue) and no process any script started is alive.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
import tango

from tests.integration.conftest import REPO, Server
from tests.integration.processes import start_server
from tests.waiting import Recorder

pytestmark = [pytest.mark.integration, pytest.mark.tango, pytest.mark.slow]

SCRIPTS = REPO / "resources" / "scripts"
DESCENDANTS = SCRIPTS / "tests" / "dev_descendants.py"
FINAL = {"COMPLETE", "STOPPED", "FAILED", "UNKNOWN"}
TIMEOUT_S = 30.0


@dataclass
class Watcher:
    """A client in the test process: every lastTransition and lastEvent, as they come."""

    proxy: tango.DeviceProxy
    events: Recorder[tuple[str, dict[str, Any]]] = field(default_factory=Recorder)
    subscriptions: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        for attr in ("lastTransition", "lastEvent"):
            self.subscriptions.append(
                self.proxy.subscribe_event(attr, tango.EventType.CHANGE_EVENT, self._push)
            )

    def _push(self, event: Any) -> None:
        if event.err or not event.attr_value.value:
            return
        name = event.attr_name.rsplit("/", 1)[-1].lower()
        self.events((name, json.loads(event.attr_value.value)))

    def wait_state(self, pid: int, *states: str) -> None:
        self.events.wait_for(
            lambda items: any(
                n == "lasttransition" and v["id"] == pid and v["state"] in states for n, v in items
            ),
            TIMEOUT_S,
            f"procedure {pid} in {states}",
        )

    def wait_descendants(self, pid: int) -> list[int]:
        found = self.events.wait_for(
            lambda items: any(
                n == "lastevent" and v["id"] == pid and v["topic"] == "descendants"
                for n, v in items
            ),
            TIMEOUT_S,
            f"procedure {pid} publishing its descendants",
        )
        (payload,) = [v["payload"] for n, v in found if n == "lastevent" and v["id"] == pid]
        return [int(p) for p in payload["pids"]]

    def close(self) -> None:
        subscriptions, self.subscriptions = self.subscriptions, []
        for sub in subscriptions:
            try:
                self.proxy.unsubscribe_event(sub)
            except tango.DevFailed:
                pass  # the server is gone: nothing to unsubscribe from


@dataclass
class Scene:
    """What the test set up before the server went away."""

    ids: dict[str, int]
    scripts: dict[int, str]
    processes: list[psutil.Process]  # workers and every descendant, with their start times


def _process(pid: int) -> psutil.Process:
    return psutil.Process(pid)  # remembers the create time: never confused with a reused pid


def _set_up(server: Server, watcher: Watcher) -> Scene:
    proxy = watcher.proxy
    ids: dict[str, int] = {}

    def prepare(name: str, script: Path) -> int:
        ids[name] = int(proxy.Prepare(json.dumps({"script": f"file://{script}"})))
        return ids[name]

    done = prepare("complete", SCRIPTS / "hello_world.py")
    proxy.Start(json.dumps({"id": done, "force": True}))
    watcher.wait_state(done, "COMPLETE")
    ready = prepare("ready", DESCENDANTS)
    watcher.wait_state(ready, "READY")
    running = {
        "busy": ("child", "busy"),
        "sleeping": ("child", "checkpoint"),
        "paused": ("child", "checkpoint"),
        "ignore_term": ("child", "ignore_term"),
        "setsid": ("setsid", "checkpoint"),
        "daemon": ("daemon", "checkpoint"),
    }
    descendants: list[int] = []
    for name, (kind, wait) in running.items():
        pid = prepare(name, DESCENDANTS)
        proxy.Start(json.dumps({"id": pid, "kwargs": {"kind": kind, "wait": wait}, "force": True}))
        descendants += watcher.wait_descendants(pid)
    proxy.Pause(ids["paused"])
    watcher.wait_state(ids["paused"], "PAUSED")
    summaries = {s["id"]: s for s in json.loads(proxy.read_attribute("procedures").value)}
    workers = [s["pid"] for s in summaries.values() if s["pid"] and s["state"] not in FINAL]
    assert len(workers) == 7, summaries
    return Scene(
        ids=ids,
        scripts={i: s["script"]["uri"] for i, s in summaries.items()},
        processes=[_process(p) for p in workers + descendants],
    )


def _assert_all_gone(scene: Scene, within_s: float) -> None:
    _gone, alive = psutil.wait_procs(scene.processes, timeout=within_s)
    described = []
    for p in alive:
        try:
            described.append(f"{p.pid} {' '.join(p.cmdline())} ({p.status()})")
        except psutil.NoSuchProcess:
            continue
        p.kill()  # never leave them behind, even when the test fails
    assert not described, f"alive {within_s} s later: {described}"


def _summaries(proxy: tango.DeviceProxy) -> dict[int, dict[str, Any]]:
    return {s["id"]: s for s in json.loads(proxy.read_attribute("procedures").value)}


def _state_label(proxy: tango.DeviceProxy, pid: int) -> str:
    attr = f"procedure{pid}State"
    labels = list(proxy.get_attribute_config(attr).enum_labels)
    return str(labels[int(proxy.read_attribute(attr).value)])


@pytest.fixture
def server(start_oet: Callable[..., Server]) -> Server:
    return start_oet(PoolSize=2, HistoryLength=50)


@pytest.fixture
def watcher(server: Server) -> Iterator[Watcher]:
    w = Watcher(tango.DeviceProxy(server.trl))
    yield w
    w.close()


def _restart(server: Server, tmp_path: Path) -> tango.DeviceProxy:
    server.process = start_server(server.db, server.instance, [server.device], tmp_path)
    return tango.DeviceProxy(server.trl)


def test_after_kill_9_the_record_is_whole_and_every_descendant_is_gone(
    server: Server, watcher: Watcher, tmp_path: Path
) -> None:
    scene = _set_up(server, watcher)
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.popen.wait()
    watcher.close()

    proxy = _restart(server, tmp_path)
    _assert_all_gone(scene, within_s=5.0)

    summaries = _summaries(proxy)
    assert set(summaries) == set(scene.scripts)
    assert {i: s["script"]["uri"] for i, s in summaries.items()} == scene.scripts
    complete = summaries[scene.ids["complete"]]
    assert complete["state"] == "COMPLETE"
    assert complete["calls"][0]["result"] is not None
    for name, pid in scene.ids.items():
        if name == "complete":
            continue
        s = summaries[pid]
        assert s["state"] == "FAILED", (name, s)
        assert s["error"]["type"] == "ServerRestarted", (name, s)
        assert s["history"][-1][0] == "FAILED"
        assert _state_label(proxy, pid) == "FAILED"
        assert json.loads(proxy.Describe(pid)) == s
    assert _state_label(proxy, scene.ids["complete"]) == "COMPLETE"
    newest = int(proxy.Prepare(json.dumps({"script": f"file://{SCRIPTS / 'hello_world.py'}"})))
    assert newest > max(scene.scripts)


def test_after_a_clean_stop_nothing_runs_and_the_record_is_whole(
    server: Server, watcher: Watcher, tmp_path: Path
) -> None:
    scene = _set_up(server, watcher)
    watcher.close()
    leftovers = server.process.stop()
    assert not leftovers
    _assert_all_gone(scene, within_s=5.0)

    proxy = _restart(server, tmp_path)
    summaries = _summaries(proxy)
    assert set(summaries) == set(scene.scripts)
    assert all(s["state"] in FINAL for s in summaries.values()), summaries
    assert summaries[scene.ids["complete"]]["state"] == "COMPLETE"
    newest = int(proxy.Prepare(json.dumps({"script": f"file://{SCRIPTS / 'hello_world.py'}"})))
    assert newest > max(scene.scripts)


def test_init_keeps_the_history_and_stops_every_descendant(
    server: Server, watcher: Watcher
) -> None:
    scene = _set_up(server, watcher)
    proxy = watcher.proxy
    proxy.set_timeout_millis(30000)
    proxy.Init()
    _assert_all_gone(scene, within_s=5.0)

    summaries = _summaries(proxy)
    assert set(summaries) == set(scene.scripts)
    assert all(s["state"] in FINAL for s in summaries.values()), summaries
    for pid in scene.scripts:
        assert _state_label(proxy, pid) == summaries[pid]["state"]
    newest = int(proxy.Prepare(json.dumps({"script": f"file://{SCRIPTS / 'hello_world.py'}"})))
    assert newest > max(scene.scripts)
