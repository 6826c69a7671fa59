"""What the durable store costs: the engine's enqueue, the writer's throughput, restore time.

    .venv/bin/python benchmarks/bench_store.py [--quick]

Ratios are to floors measured in the same run: a bare `SimpleQueue.put` for the enqueue, and
encoding the summary JSON (which the writer must do anyway) for the write.
"""

from __future__ import annotations

import argparse
import queue
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tango_oet.domain.requests import ProcedureInput
from tango_oet.domain.scripts import FilesystemScript
from tango_oet.domain.states import ProcedureState
from tango_oet.domain.summary import CallRecord, ProcedureSummary, utc_now
from tango_oet.store import Store


def summary(pid: int) -> ProcedureSummary:
    now = utc_now()
    states = (ProcedureState.CREATING, ProcedureState.IDLE, ProcedureState.READY)
    return ProcedureSummary(
        id=pid,
        state=ProcedureState.COMPLETE,
        script=FilesystemScript(f"/scripts/observe_{pid % 7}.py"),
        init=ProcedureInput(args=("field A",), kwargs={"exposure": 30}),
        history=tuple((s, now) for s in states),
        calls=(CallRecord("main", ProcedureInput(), now, now, {"frames": 12}),),
    )


def per_op_us(n: int, op: Callable[[int], object]) -> float:
    start = time.perf_counter()
    for i in range(n):
        op(i)
    return (time.perf_counter() - start) / n * 1e6


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer items (a smoke run)")
    quick = parser.parse_args(argv).quick
    n = 2000 if quick else 20000
    items = [summary(i) for i in range(1, n + 1)]
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        bare: queue.SimpleQueue[object] = queue.SimpleQueue()
        floor_put = per_op_us(n, lambda i: bare.put(items[i]))
        store = Store(Path(tmp) / "bench.sqlite3")
        enqueue = per_op_us(n, lambda i: store.save(items[i]))
        store.flush(60)
        rows.append(
            (
                "enqueue a summary (engine's cost)",
                f"{enqueue:.2f} µs",
                f"{enqueue / floor_put:.1f}x put",
            )
        )
        floor_json = per_op_us(n, lambda i: items[i].to_json_text())
        start = time.perf_counter()
        for s in items:
            store.save(summary(s.id + n))
        store.flush(120)
        written = n / (time.perf_counter() - start)
        rows.append(
            (
                "summaries written/s (new procedures)",
                f"{written:,.0f}/s",
                f"{(1e6 / written) / floor_json:.1f}x JSON encode",
            )
        )
        lines = [f"line {i} of output" for i in range(100)]
        start = time.perf_counter()
        for i in range(n // 10):
            store.append_output(1 + i % 50, lines)
        store.flush(120)
        rows.append(
            ("output lines written/s", f"{n * 10 / (time.perf_counter() - start):,.0f}/s", "")
        )
        store.close()
        for count in (100, 1000, 10000) if not quick else (100, 1000):
            path = Path(tmp) / f"restore-{count}.sqlite3"
            filler = Store(path)
            for i in range(1, count + 1):
                filler.save(summary(i))
            filler.close()
            start = time.perf_counter()
            restored = Store(path)
            got = restored.restore(limit=100, output_lines=1000)
            elapsed = time.perf_counter() - start
            restored.close()
            assert len(got.summaries) == min(100, count)
            rows.append((f"open + restore 100 of {count:,} stored", f"{elapsed * 1e3:.1f} ms", ""))
    width = max(len(r[0]) for r in rows)
    print(f"{'store benchmark':<{width}}  {'figure':>14}  ratio")
    for name, figure, ratio in rows:
        print(f"{name:<{width}}  {figure:>14}  {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
