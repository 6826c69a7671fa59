"""The worker protocol itself: typed messages, gapless sequence numbers, a clean exit."""

from __future__ import annotations

from tango_oet.execution import messages as m
from tango_oet.execution.launcher import WorkerProcess
from tango_oet.execution.messages import decode_worker


def receive_until(worker: WorkerProcess, kind: type) -> list[object]:
    got: list[object] = []
    while True:
        assert worker.conn.poll(10), f"no {kind.__name__} after {got!r}"
        msg = decode_worker(worker.conn.recv_bytes())
        got.append(msg)
        if isinstance(msg, kind):
            return got


def test_load_call_and_exit(worker: WorkerProcess) -> None:
    ready = worker.handshake()
    assert ready.pid == worker.pid and ready.seq == 1
    source = "def init(a):\n    print('init', a)\ndef main(x):\n    return {'x': x}\n"
    worker.send(
        m.LoadScript, procedure_id=7, name="embedded://t", path=None, source=source, init_args=(1,)
    )
    got = receive_until(worker, m.Loaded)
    worker.send(m.CallFunction, call_id=0, function="main", args=(5,))
    got += receive_until(worker, m.CallReturned)
    assert [type(g) for g in got] == [
        m.LoadStarted,
        m.InitStarted,
        m.OutputLines,
        m.Loaded,
        m.CallReturned,
    ]
    assert [g.seq for g in got] == list(range(2, 2 + len(got)))  # type: ignore[attr-defined]
    assert got[2] == m.OutputLines(seq=4, stream="stdout", lines=("init 1",))
    assert got[-1] == m.CallReturned(seq=6, call_id=0, function="main", result={"x": 5})
    info = worker.reap(timeout=10)  # main returned: the worker exits by itself
    assert info is not None and (info.exitcode, info.signal) == (0, None)


def test_closing_the_pipe_ends_an_idle_worker(worker: WorkerProcess) -> None:
    worker.handshake()
    worker.conn.close()
    info = worker.reap(timeout=10)
    assert info is not None and info.signal is None
