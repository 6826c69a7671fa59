"""Fixtures for integration tests: a real Tango database, real servers, client processes.

The database is parametrized: pytango-db (sqlite, always) and Debian's C++ DataBaseds on
MariaDB (marked `mariadb`; skipped unless `.ci/setup-mariadb-tango-db.sh` has run).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tango_oet.device.registration import register
from tests.integration.processes import (
    CPP_DATABASEDS,
    Managed,
    TangoDatabase,
    start_cpp_databaseds,
    start_pytango_db,
    start_server,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DEFINITION = HERE / "oet-test.json"
_counter = itertools.count(1)


def _mariadb_answers() -> bool:
    try:
        ping = subprocess.run(["mysqladmin", "--silent", "ping"], capture_output=True, check=False)
    except FileNotFoundError:
        return False
    return ping.returncode == 0


@pytest.fixture(
    scope="module",
    params=["pytango-db", pytest.param("mariadb", marks=pytest.mark.mariadb)],
)
def tango_db(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TangoDatabase]:
    tmp = tmp_path_factory.mktemp(f"db-{request.param}")
    if request.param == "mariadb":
        if not CPP_DATABASEDS.exists():
            pytest.skip(
                f"{CPP_DATABASEDS} is not installed: run .ci/setup-mariadb-tango-db.sh first"
            )
        if not _mariadb_answers():
            # Installed but not running (e.g. after a reboot): the setup script only starts it.
            done = subprocess.run(
                [str(REPO / ".ci" / "setup-mariadb-tango-db.sh")],
                capture_output=True,
                text=True,
                check=False,
            )
            if not _mariadb_answers():
                pytest.skip(f"MariaDB is not running and could not be started: {done.stderr}")
        db = start_cpp_databaseds(tmp)
    else:
        db = start_pytango_db(tmp)
    try:
        yield db
    finally:
        leftovers = db.process.stop()
        assert not leftovers, f"left behind by the database: {leftovers}"


@dataclass
class Server:
    """A running OETScheduler server process with one device."""

    db: TangoDatabase
    instance: str
    device: str
    process: Managed

    @property
    def trl(self) -> str:
        return f"tango://{self.db.tango_host}/{self.device}"


def definition(instance: str, device: str, properties: dict[str, Any]) -> dict[str, Any]:
    """The fixture definition file, renamed to a unique instance/device, properties merged."""
    data = json.loads(DEFINITION.read_text())
    (template,) = data["servers"]["OETScheduler"].values()
    (devices,) = template.values()
    (body,) = devices.values()
    props = {**body["properties"], **{k: [str(v)] for k, v in properties.items()}}
    return {
        "servers": {"OETScheduler": {instance: {"OETScheduler": {device: {"properties": props}}}}}
    }


@pytest.fixture
def start_oet(tango_db: TangoDatabase, tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Register a uniquely named OETScheduler in the database and start its server process."""
    started: list[Server] = []

    def start(**properties: Any) -> Server:
        # Unique per test: the MariaDB database outlives the test session.
        instance = f"it{os.getpid()}x{next(_counter)}x{uuid.uuid4().hex[:6]}"
        device = f"test/oet-it/{instance}"
        props = {
            "ScriptRoots": str(REPO / "resources" / "scripts"),
            "DataDirectory": str(tmp_path / "data"),
            **properties,
        }
        register(tango_db.database(), definition(instance, device, props))
        process = start_server(tango_db, instance, [device], tmp_path)
        server = Server(tango_db, instance, device, process)
        started.append(server)
        return server

    yield start
    for server in started:
        leftovers = server.process.stop()
        try:
            tango_db.database().delete_server(f"OETScheduler/{server.instance}")
        finally:
            assert not leftovers, f"left behind by {server.process.name}: {leftovers}"


def run_client(server: Server, scenario: str, *args: str, timeout: float = 60) -> dict[str, Any]:
    """Run tests/integration/client.py in its own process; returns its JSON report."""
    command = [sys.executable, "-m", "tests.integration.client", server.trl, scenario, *args]
    done = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise AssertionError(
            f"client {scenario} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}\n"
            f"server log:\n{server.process.tail()}"
        )
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report
