"""Frames from a worker are JSON the server parses, never pickles it loads (INTERFACE v2 "Safe
by default"): user code in a worker cannot run code inside the server."""

from __future__ import annotations

import json
import os
import pickle
import struct
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from tango_oet.execution import messages as m
from tango_oet.execution.wire import ProtocolError, WorkerPipe


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def _frame(body: bytes) -> bytes:
    return struct.pack("!i", len(body)) + body


def _pipe() -> tuple[WorkerPipe, Connection, int]:
    """The parent's end (and the Connection that owns its fd: keep it alive), the worker's fd."""
    ours, theirs = os.pipe()
    conn = Connection(ours, writable=False)
    return WorkerPipe(conn), conn, theirs


def test_every_worker_message_round_trips_as_json() -> None:
    samples: list[m.WorkerMessage] = [
        m.WorkerReady(1, 42, "/usr/bin/python3"),
        m.Loaded(2, ("main", "init"), {"ok": [1, 2]}),
        m.CallReturned(3, 0, "main", {"é€": [1.5, None]}),
        m.ScriptFailed(4, "call main", "ValueError", "bad", "Traceback..."),
        m.UserEvent(5, "t", {"n": 1}, 1.5, "MainThread"),
        m.OutputLines(6, "stdout", ("a", "b")),
        m.ProgressReport(7, 1.0, None, "half"),
        m.PauseReached(8),
    ]
    for msg in samples:
        raw = m.encode_worker(msg)
        json.loads(raw)  # plain JSON
        assert m.decode_worker(raw) == msg


def test_a_pickle_from_a_worker_is_a_protocol_error_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran-in-the-server"
    pipe, conn, theirs = _pipe()
    os.write(theirs, _frame(pickle.dumps(_Payload(marker))))
    os.close(theirs)
    with pytest.raises(ProtocolError, match="undecodable"):
        pipe.receive()
    assert not marker.exists()
    conn.close()


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b'{"type": "Exploit", "seq": 1}', "unknown message type"),
        (b'{"type": "PauseReached", "seq": 1, "extra": 2}', "unknown fields"),
        (b'{"type": "CallReturned", "seq": 1}', "missing"),
        (b'{"type": "PauseReached", "seq": "1"}', "seq must be an integer"),
        (b"[1, 2]", "not a JSON object"),
        (b"\x80\x04K\x01.", "not a JSON message"),
    ],
)
def test_a_frame_that_is_not_a_worker_message_is_refused_saying_why(body: bytes, says: str) -> None:
    with pytest.raises(m.BadWorkerMessage, match=says):
        m.decode_worker(body)
