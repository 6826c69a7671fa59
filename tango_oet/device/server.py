"""`OETScheduler <instance>`: the device server entry point (console script).

Worker processes started by forkserver/spawn re-import the parent's `__main__`, which for the
console script is this module. So nothing here imports `tango` at module level: a worker pays
for importing a few lines, not for the Tango libraries (see docs/device.md).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

SWITCH_INTERVAL_S = 0.0005


def main(argv: Sequence[str] | None = None) -> None:
    """Run the OETScheduler device server; argv is `[instance, tango options…]`."""
    from tango.server import run

    from tango_oet.device.oetscheduler import OETScheduler

    args = list(sys.argv[1:] if argv is None else argv)
    # The server's threads (Tango requests, supervisor, event pump, publisher) hand the GIL to
    # each other on every event; with the default 5 ms switch interval a thread woken while
    # another computes waits up to 5 ms, which dominated the event latency.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    run((OETScheduler,), args=["OETScheduler", *args])


if __name__ == "__main__":
    main()
