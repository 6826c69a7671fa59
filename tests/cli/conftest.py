"""Fixtures for CLI tests: `tango-oet` run in-process (capsys) or as a real console script.

The device is the device tests' OETScheduler in a DeviceTestContext (process=False); commands
get its full TRL with --device, which also works from a child process (tango-recipes Pitfall 6).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import pytest

from tango_oet.cli.main import main
from tests.client.conftest import free_port, start_client, trl
from tests.device.conftest import StartDevice, no_worker_left, start_device
from tests.waiting import Recorder

__all__ = ["free_port", "no_worker_left", "start_client", "start_device"]

CONSOLE_SCRIPT = Path(sys.executable).with_name("tango-oet")


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def json_lines(self) -> list[Any]:
        return [json.loads(line) for line in self.out.splitlines() if line.strip()]


Cli = Callable[..., Result]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    """`cli("list", "--device", trl)` runs `tango-oet list …` in this process."""

    def run(*argv: str) -> Result:
        capsys.readouterr()
        code = main(list(argv))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture
def device(start_device: StartDevice) -> str:
    """A fresh OETScheduler; its full TRL."""
    return trl(start_device().proxy)


class Child:
    """A running `tango-oet` process whose stdout/stderr lines are recorded as they come."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        if not CONSOLE_SCRIPT.exists():
            pytest.fail(f"{CONSOLE_SCRIPT} missing: run `.venv/bin/pip install -e .`")
        self.process = subprocess.Popen(
            [str(CONSOLE_SCRIPT), *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.out: Recorder[str] = Recorder()
        self.err: Recorder[str] = Recorder()
        assert self.process.stdout is not None and self.process.stderr is not None
        self._readers = [
            threading.Thread(target=_pump, args=(self.process.stdout, self.out), daemon=True),
            threading.Thread(target=_pump, args=(self.process.stderr, self.err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def wait_out(self, text: str, timeout: float = 30.0) -> None:
        """Block until a stdout line contains `text` (fails with the lines seen)."""
        self._wait(self.out, text, timeout)

    def wait_err(self, text: str, timeout: float = 30.0) -> None:
        self._wait(self.err, text, timeout)

    def _wait(self, lines: Recorder[str], text: str, timeout: float) -> None:
        try:
            lines.wait_for(lambda seen: any(text in line for line in seen), timeout, repr(text))
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}\nstdout: {self.out.snapshot()}\nstderr: {self.err.snapshot()}"
            ) from None

    def finish(self, timeout: float = 30.0) -> Result:
        code = self.process.wait(timeout)
        self._close(timeout)
        return Result(code, "".join(self.out.snapshot()), "".join(self.err.snapshot()))

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._close(5.0)

    def _close(self, timeout: float) -> None:
        for reader in self._readers:
            reader.join(timeout)  # they end at EOF, when the process has exited
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def _pump(stream: TextIO, sink: Recorder[str]) -> None:
    for line in stream:
        sink(line)


@pytest.fixture
def child() -> Iterator[Callable[..., Child]]:
    """Start `tango-oet` processes; any still running at the end is killed."""
    started: list[Child] = []

    def start(*argv: str, env: dict[str, str] | None = None) -> Child:
        c = Child(list(argv), env)
        started.append(c)
        return c

    yield start
    for c in started:
        c.kill()


@pytest.fixture
def tango_db(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A pytango-db database (sqlite in memory) on a free loopback port; TANGO_HOST set to it.

    pytango-db's own helper starts `PyDatabaseds` from PATH: the venv's bin must be on it.
    """
    from databaseds.fixtures import run_pytango_db

    bin_dir = str(Path(sys.executable).parent)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("PYTANGO_DATABASE_NAME", ":memory:")
    yield from run_pytango_db()
