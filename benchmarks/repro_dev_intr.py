"""Minimal reproduction of cppTango's 3.2 s device-interface-change stall (docs/device.md).

Run: `.venv/bin/python benchmarks/repro_dev_intr.py`. A 20-line device (`IntrDev`, in a
`DeviceTestContext(process=True)`, no database) has one command, `Grow([n, gap_ms])`: it adds
attribute `a<n>`, keeps the device monitor for `gap_ms` (as any command or a publisher batch
does), then adds `b<n>`. The script runs it in two modes and prints each call's duration:

- `self`: the device subscribed to its own interface-change event through its admin device;
- `client`: a client subscribed to INTERFACE_CHANGE_EVENT.

(With no event subscription at all, cppTango 10.3.3 crashes at the first `add_attribute`
after start: its ZMQ event supplier does not exist yet. So some subscription always exists.)
In both modes a gap above 50 ms (DEV_INTR_THREAD_SLEEP_TIME) makes the second `add_attribute`
wait 3.2 s (DEFAULT_TIMEOUT) and raise API_CommandTimedOut "Device interface change event
thread blocked !!!", after adding the attribute; a 10 ms gap does not.

Mechanism: the first add_attribute starts the DevIntrThread (`push_dev_intr`), which waits 50 ms
for further changes and then takes the device monitor to push the event. It times out while the
command still holds the monitor and blocks in `AutoTangoMonitor(dev, true)`. The second
add_attribute, in the thread holding the monitor, finds the DevIntrThread alive, posts it a
command and waits for the acknowledgement on `devintr_mon`, which the blocked thread never
gives: each waits for the other until the 3.2 s timeouts fire. The same wait also hangs when
the DevIntrThread has pushed but not yet ended. OETScheduler therefore makes one structural
change at a time and the next only once the threads started by the last have ended
(tango_oet/device/interface.py).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import tango
from tango.server import Device, attribute, command
from tango.test_context import DeviceTestContext

MODES = ("self", "client")
GAPS_MS = (10, 100)
CALLS = 3


class IntrDev(Device):  # type: ignore[misc]
    def _read(self, attr: Any) -> None:
        attr.set_value(1)

    @command(dtype_in=(int,))  # type: ignore[untyped-decorator]
    def Grow(self, arg: list[int]) -> None:  # noqa: N802
        n, gap_ms = arg
        self.add_attribute(attribute(name=f"a{n}", dtype=int), self._read)
        time.sleep(gap_ms / 1000)  # the monitor stays held, as in any command or batch
        self.add_attribute(attribute(name=f"b{n}", dtype=int), self._read)

    @command  # type: ignore[untyped-decorator]
    def SelfSubscribe(self) -> None:  # noqa: N802
        admin = tango.DeviceProxy(tango.Util.instance().get_dserver_device().get_name())
        admin.command_inout(
            "ZmqEventSubscriptionChange", [self.get_name(), "", "subscribe", "intr_change"]
        )


def run(mode: str, gap_ms: int) -> list[tuple[float, str]]:
    """Call Grow CALLS times; (duration in s, error reason or "") per call."""
    results = []
    with DeviceTestContext(IntrDev, process=True, host="127.0.0.1", timeout=10) as proxy:
        proxy.set_timeout_millis(10000)
        if mode == "self":
            proxy.SelfSubscribe()
        elif mode == "client":
            proxy.subscribe_event(tango.EventType.INTERFACE_CHANGE_EVENT, lambda _e: None)
        for n in range(CALLS):
            start = time.perf_counter()
            try:
                proxy.Grow([n, gap_ms])
                error = ""
            except tango.DevFailed as exc:
                error = f"{exc.args[0].reason}: {exc.args[0].desc.strip()}"
            results.append((time.perf_counter() - start, error))
            time.sleep(0.2)  # let the DevIntrThread push and exit: each call starts afresh
    return results


def main() -> int:
    stalled = {}
    for mode in MODES:
        for gap in GAPS_MS:
            results = run(mode, gap)
            for n, (seconds, error) in enumerate(results):
                print(f"{mode:6} gap {gap:3} ms  call {n}: {seconds * 1000:6.0f} ms  {error}")
            stalled[(mode, gap)] = sum(1 for s, _ in results if s > 1.0)
    print("calls over 1 s:", {f"{m}/{g}ms": c for (m, g), c in stalled.items()})
    # The reproduction holds when only the subscribed modes with a long gap stall.
    expected = {(m, g): g > 50 for m in MODES for g in GAPS_MS}
    ok = all(bool(stalled[k]) == v for k, v in expected.items())
    print("reproduced" if ok else "NOT reproduced as described")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
