"""A worker's pipe seen from the engine loop: framed messages in and out, never blocking.

The framing is multiprocessing's own (a big-endian 4-byte length, or -1 and an 8-byte length,
then the body), so the worker keeps using a plain `Connection`. Bodies to the worker are
pickles; bodies from it are JSON that `messages.decode_worker` parses (never unpickled).
The parent's end is switched to non-blocking: a frame the socket cannot take now waits in a
buffer until the socket is writable (a worker busy in user code may not read for a long
time), and reads gather whole frames from whatever has arrived, so neither direction can
stall the loop.
"""

from __future__ import annotations

import os
import struct
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler

from tango_oet.execution.messages import BadWorkerMessage, decode_worker

READ_CHUNK = 1 << 16
READ_BUDGET = 1 << 18  # bytes per receive(): one chatty worker cannot starve the others
_SHORT = struct.Struct("!i")
_LONG = struct.Struct("!Q")


class ProtocolError(Exception):
    """The worker sent bytes that are not a frame of one of its messages."""


def encode(message: object) -> bytes:
    """One frame; raises whatever pickling raises (RecursionError, PicklingError, ...)."""
    body = bytes(ForkingPickler.dumps(message))
    n = len(body)
    header = _SHORT.pack(n) if n <= 0x7FFFFFFF else _SHORT.pack(-1) + _LONG.pack(n)
    return header + body


class WorkerPipe:
    """The parent's end of one worker's Connection, driven by the loop's selector."""

    def __init__(self, conn: Connection) -> None:
        self._fd = conn.fileno()
        os.set_blocking(self._fd, False)
        self._out = bytearray()
        self._in = bytearray()
        self.eof = False  # the worker closed its end (or the socket broke)
        self.drained = False  # the last receive() read everything there was

    def fileno(self) -> int:
        return self._fd

    @property
    def wants_write(self) -> bool:
        return bool(self._out)

    def send(self, frame: bytes) -> None:
        """Queue `frame` and write as much as the socket takes now."""
        if self.eof:
            return  # the worker is gone; its exit sentinel tells the rest
        self._out += frame
        self.flush()

    def flush(self) -> None:
        """Write buffered frames until done or the socket is full."""
        while self._out:
            try:
                n = os.write(self._fd, self._out)
            except BlockingIOError:
                return
            except OSError:  # EPIPE, ECONNRESET: nobody reads any more
                self._out.clear()
                self.eof = True
                return
            del self._out[:n]

    def receive(self) -> list[object]:
        """Every whole message that has arrived (reading at most READ_BUDGET bytes).

        Sets `eof` when the worker's end is closed; raises ProtocolError on garbage.
        """
        budget = READ_BUDGET
        self.drained = False
        while budget > 0 and not self.eof:
            try:
                chunk = os.read(self._fd, READ_CHUNK)
            except BlockingIOError:
                self.drained = True
                break
            except OSError:
                self.eof = self.drained = True
                break
            if not chunk:
                self.eof = self.drained = True
                break
            self._in += chunk
            budget -= len(chunk)
        return self._frames()

    def _frames(self) -> list[object]:
        messages: list[object] = []
        buf, pos = self._in, 0
        view = memoryview(buf)
        try:
            while len(buf) - pos >= 4:
                (n,) = _SHORT.unpack_from(buf, pos)
                head = 4
                if n == -1:
                    if len(buf) - pos < 12:
                        break
                    (n,) = _LONG.unpack_from(buf, pos + 4)
                    head = 12
                elif n < 0:
                    raise ProtocolError(f"bad frame length {n}")
                if len(buf) - pos < head + n:
                    break
                start = pos + head
                try:
                    messages.append(decode_worker(view[start : start + n]))
                except BadWorkerMessage as exc:
                    raise ProtocolError(f"undecodable message: {exc}") from exc
                pos = start + n
        finally:
            view.release()
            del buf[:pos]
        return messages
