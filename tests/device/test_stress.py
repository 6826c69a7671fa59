"""Several clients preparing and starting back to back: every command answers, nothing is lost.

Before the device made its structural changes one at a time (docs/device.md, "Dynamic
attributes"), this load met cppTango's interface-thread deadlock: commands failed with
API_CommandTimedOut / API_DeviceTimedOut after 3 s and attributes went missing.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
import tango

from tests.device.conftest import StartDevice
from tests.device.harness import wait_attributes

pytestmark = pytest.mark.tango

CLIENTS = 4
CYCLES = 15  # per client
HISTORY = 4
SOURCE = "def main():\n    return 1\n"


def test_clients_back_to_back_get_every_answer_and_the_attributes_follow(
    start_device: StartDevice,
) -> None:
    oet = start_device(HistoryLength=HISTORY, PoolSize=2)
    proxy = oet.proxy
    access = f"tango://{proxy.get_dev_host()}:{proxy.get_dev_port()}/{proxy.dev_name()}#dbase=no"
    done: dict[int, str] = {}
    finished = threading.Condition()

    def on_transition(event: Any) -> None:
        if event.err or not event.attr_value.value:
            return
        t = json.loads(event.attr_value.value)
        if t["state"] in ("COMPLETE", "FAILED", "STOPPED", "UNKNOWN"):
            with finished:
                done[t["id"]] = t["state"]
                finished.notify_all()

    watcher = tango.DeviceProxy(access)
    watcher.subscribe_event("lastTransition", tango.EventType.CHANGE_EVENT, on_transition)
    errors: list[str] = []
    ids: list[int] = []
    start = threading.Barrier(CLIENTS)

    def client() -> None:
        me = tango.DeviceProxy(access)
        start.wait(10)
        for _ in range(CYCLES):
            try:
                pid = int(me.Prepare(json.dumps({"script": "embedded://t", "source": SOURCE})))
                ids.append(pid)
                me.Start(json.dumps({"id": pid, "force": True}))
            except tango.DevFailed as exc:
                errors.append(f"{exc.args[0].reason}: {exc.args[0].desc.strip()}")

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:5]
    assert len(ids) == len(set(ids)) == CLIENTS * CYCLES
    with finished:
        assert finished.wait_for(lambda: set(ids) <= set(done), 60), sorted(set(ids) - set(done))
    assert {done[i] for i in ids} == {"COMPLETE"}
    history = [p["id"] for p in json.loads(proxy.read_attribute("procedures").value)]
    assert len(history) == HISTORY and set(history) <= set(ids)
    expected = [f"procedure{i}{k}" for i in history for k in ("State", "Summary")]
    # Each structural change costs one cppTango interface cycle (~55 ms): allow for the backlog.
    wait_attributes(proxy, expected, upto=max(ids), timeout=60)
