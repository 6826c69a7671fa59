"""A store owner in its own process, for tests that kill -9 it or limit its file size.

    python tests/store/child.py MODE STORE_FILE [ARGS]

Prints one JSON line per step; then waits on stdin (so the test decides when it dies).
"""

from __future__ import annotations

import json
import resource
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tango_oet.domain.states import ProcedureState as S
from tango_oet.store import QueueItemRecord, Store, StoreOptions
from tests.store.conftest import make_summary


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def wait_for_death() -> None:
    sys.stdin.read()  # until the test kills us (or closes stdin)


def ids(store: Store, count: int) -> None:
    given = [store.allocate_id() for _ in range(count)]
    items = [store.allocate_id("queue_item") for _ in range(2)]
    for pid in given:
        store.record_summary(make_summary(pid, S.COMPLETE))
    store.flush()
    say(ids=given, items=items)


def live(store: Store) -> None:
    """Procedures in every kind of state, a running queue, then a crash."""
    states = [S.COMPLETE, S.READY, S.RUNNING, S.PAUSED, S.STOPPING, S.CREATING, S.FAILED]
    for state in states:
        store.record_summary(make_summary(store.allocate_id(), state))
    running, waiting = store.allocate_id("queue_item"), store.allocate_id("queue_item")
    store.record_queue(
        state="RUNNING",
        items=[
            QueueItemRecord(running, "calibrate", "RUNNING", {"prepare": {}}, "t0", 0,
                            procedure_id=3, started="t1"),
            QueueItemRecord(waiting, "field A", "WAITING", {"prepare": {}}, "t0", 1,
                            at="2030-01-01T21:30:00.000000Z"),
        ],
    )  # fmt: skip
    store.append_output(3, ["working", "still working"])
    store.flush()
    say(states=[s.name for s in states], running=running, waiting=waiting)


def fill(store: Store, headroom: int) -> None:
    """Write until the file-size limit stops the writer; report health and what was durable."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write beyond the limit fails with EFBIG
    store.record_summary(make_summary(1, S.COMPLETE))
    store.flush()
    size = sum(p.stat().st_size for p in store.path.parent.iterdir())
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + headroom, size + headroom))
    pid = 1
    big = "x" * 20_000
    while store.health()[0] and pid < 10_000:
        pid += 1
        store.append_output(1, [big] * 5)
        try:
            store.flush()
        except Exception as exc:
            say(flush_error=str(exc))
            break
    ok, message = store.health()
    say(ok=ok, message=message)
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


def main() -> None:
    mode, where = sys.argv[1], Path(sys.argv[2])
    options = StoreOptions(commit_interval=0.0, retry_interval=0.01, max_retry_interval=0.05)
    if mode == "ids" and len(sys.argv) > 4:
        options = StoreOptions(commit_interval=0.0, id_block=int(sys.argv[4]))
    store = Store(where, options=options)
    if mode == "ids":
        ids(store, int(sys.argv[3]))
    elif mode == "live":
        live(store)
    elif mode == "fill":
        fill(store, int(sys.argv[3]))
        store.close()
        return
    elif mode == "hold":
        say(holding=str(where))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    wait_for_death()


if __name__ == "__main__":
    main()
