"""Tango's own access control in front of OETScheduler: TangoAccessControl on MariaDB.

A user with read access reads the attributes and runs the read-only commands the class allows
(`AllowedAccessCmd`), but cannot Prepare; a user with write access can. The control system runs
on a database of its own (`tango_ac`, .ci/setup-accesscontrol.sh): TangoAccessControl registers
itself as the service of the database it runs on, and would otherwise put every other test
sharing the `tango` database under access control.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tango

from tango_oet.device.registration import register
from tests.integration.conftest import REPO, definition
from tests.integration.processes import (
    CPP_DATABASEDS,
    START_TIMEOUT_S,
    Managed,
    TangoDatabase,
    spawn,
    start_cpp_databaseds,
    start_server,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.tango, pytest.mark.mariadb]

ACCESS_CONTROL = Path("/usr/lib/tango/TangoAccessControl")
AC_DATABASE = os.environ.get("TANGO_AC_MYSQL_DATABASE", "tango_ac")
AC_DEVICE = "sys/access_control/1"
READER, WRITER = "oetreader", "oetwriter"
FAMILY = "test/oet-ac"
CLIENT = Path(__file__).with_name("ac_client.py")
SCRIPT = REPO / "resources" / "scripts" / "hello_world.py"
SETUP = ".ci/setup-accesscontrol.sh"


def _mysql(sql: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "mysql",
            "-u",
            os.environ.get("TANGO_MYSQL_USER", "tango"),
            f"-p{os.environ.get('TANGO_MYSQL_PASSWORD', 'tango')}",
            "-N",
            "-B",
            AC_DATABASE,
            "-e",
            sql,
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def _why_not_ready() -> str | None:
    if not CPP_DATABASEDS.exists() or not ACCESS_CONTROL.exists():
        return f"{CPP_DATABASEDS} or {ACCESS_CONTROL} is not installed: run {SETUP}"
    if shutil.which("mysql") is None:
        return f"no mysql client: run {SETUP}"
    found = _mysql("SELECT COUNT(*) FROM access_device")
    if found.returncode != 0:
        return f"database {AC_DATABASE} is not usable ({found.stderr.strip()}): run {SETUP}"
    if os.geteuid() != 0:
        return "acting as two Tango users means becoming two OS users: needs root"
    for user in (READER, WRITER):
        try:
            pwd.getpwnam(user)
        except KeyError:
            return f"OS user {user} does not exist: run {SETUP}"
    return None


@dataclass
class ControlledSystem:
    db: TangoDatabase
    device: str
    tmp: Path
    started: list[Managed]  # stopped, newest first, when the module ends

    @property
    def trl(self) -> str:
        return f"tango://{self.db.tango_host}/{self.device}"


def _start_access_control(db: TangoDatabase, tmp: Path, started: list[Managed]) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if k != "TANGO_HOST"},
        "TANGO_HOST": db.tango_host,
        "MYSQL_USER": os.environ.get("TANGO_MYSQL_USER", "tango"),
        "MYSQL_PASSWORD": os.environ.get("TANGO_MYSQL_PASSWORD", "tango"),
        "MYSQL_HOST": "localhost",
        "MYSQL_DATABASE": AC_DATABASE,
        "SUPER_TANGO": "true",  # as its Debian init script: it must not check itself
    }
    command = [str(ACCESS_CONTROL), "1", "-ORBendPoint", "giop:tcp:127.0.0.1:0"]
    managed = spawn("TangoAccessControl", command, env, tmp / "accesscontrol.log")
    started.append(managed)
    proxy = f"tango://{db.tango_host}/{AC_DEVICE}"

    def answering() -> bool:
        try:
            tango.DeviceProxy(proxy).ping()
        except tango.DevFailed:
            return False
        return True

    wait_until("TangoAccessControl answering", answering, managed, START_TIMEOUT_S)
    # It does not enter itself in CtrlSystem/Services on start: this is the operator's step
    # that turns access control on for every client of this database.
    tango.DeviceProxy(proxy).command_inout("RegisterService")
    found = db.database().get_property("CtrlSystem", "Services")["Services"]
    assert f"AccessControl/tango:{AC_DEVICE}" in list(found), found


def _grant(db: TangoDatabase) -> None:
    """Everyone reads everything; the writer may command our devices."""
    ac = tango.DeviceProxy(f"tango://{db.tango_host}/{AC_DEVICE}")
    rules = [(WRITER, f"{FAMILY}/*", "write"), (READER, f"{FAMILY}/*", "read")]
    rules += [("*", "*/*/*", "read")]
    for user, device, _ in rules:
        for right in ("read", "write"):  # idempotent: the database outlives the session
            try:
                ac.command_inout("RemoveDeviceForUser", [user, device, right])
            except tango.DevFailed:
                pass
    for user, device, right in rules:
        if user != "*":
            try:
                ac.command_inout("RemoveAddressForUser", [user, "*.*.*.*"])
            except tango.DevFailed:
                pass
            ac.command_inout("AddAddressForUser", [user, "*.*.*.*"])
        ac.command_inout("AddDeviceForUser", [user, device, right])


@pytest.fixture(scope="module")
def controlled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlledSystem]:
    why = _why_not_ready()
    if why:
        pytest.skip(why)
    tmp = tmp_path_factory.mktemp("access-control")
    # A service entry left by a killed run would send clients to a device not yet running.
    _mysql("DELETE FROM property WHERE object='CtrlSystem' AND name='Services'")
    with pytest.MonkeyPatch.context() as patch:
        # This process administers the control system (as Astor's administrator mode does):
        # the check does not apply to it, so no earlier run's rules can lock it out. The
        # clients under test run without it (as_user).
        patch.setenv("SUPER_TANGO", "true")
        patch.setenv("TANGO_MYSQL_DATABASE", AC_DATABASE)
        db = start_cpp_databaseds(tmp)
        patch.delenv("TANGO_MYSQL_DATABASE")
        yield from _controlled(db, tmp)


def _controlled(db: TangoDatabase, tmp: Path) -> Iterator[ControlledSystem]:
    started: list[Managed] = [db.process]
    instance = f"ac{os.getpid()}x{uuid.uuid4().hex[:6]}"
    device = f"{FAMILY}/{instance}"
    try:
        _start_access_control(db, tmp, started)
        _grant(db)
        # Commands a read-only client may still run on every OETScheduler: those that change
        # nothing. Tango reads them from this class property (AccessControl GetAllowedCommands).
        db.database().put_class_property("OETScheduler", {"AllowedAccessCmd": ["Describe"]})
        props = {"ScriptRoots": str(SCRIPT.parent), "DataDirectory": str(tmp / "data")}
        register(db.database(), definition(instance, device, props))
        started.append(start_server(db, instance, [device], tmp))
        yield ControlledSystem(db, device, tmp, started)
    finally:
        leftovers = [line for process in reversed(started) for line in process.stop()]
        try:
            db_proxy = tango.Database(db.host, db.port)
            db_proxy.delete_server(f"OETScheduler/{instance}")
        except tango.DevFailed:
            pass
        assert not leftovers, f"left behind: {leftovers}"


def as_user(
    system: ControlledSystem, user: str, *describe: int, super_tango: bool = False
) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in ("SUPER_TANGO", "TANGO_HOST")}
    env["TANGO_HOST"] = system.db.tango_host
    if super_tango:
        env["SUPER_TANGO"] = "true"
    argin = json.dumps({"script": SCRIPT.as_uri()})
    command = [sys.executable, str(CLIENT), user, system.trl, argin, *map(str, describe)]
    done = subprocess.run(
        command, cwd="/", env=env, capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"client as {user} failed:\n{done.stdout}\n{done.stderr}")
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def test_read_access_reads_but_cannot_prepare_and_write_access_can(
    controlled: ControlledSystem,
) -> None:
    writer = as_user(controlled, WRITER)
    assert writer["prepare"]["ok"], writer
    pid = writer["prepare"]["value"]
    assert pid > 0

    reader = as_user(controlled, READER, pid)
    assert reader["uid"] != 0
    assert reader["state"]["ok"] and reader["status"]["ok"], reader
    assert reader["procedures"]["ok"], reader
    assert [p["id"] for p in reader["procedures"]["value"]] == [pid]  # it sees the writer's
    assert reader["describe"]["ok"], reader  # an AllowedAccessCmd
    assert json.loads(reader["describe"]["value"])["id"] == pid
    refused = reader["prepare"]
    assert not refused["ok"]
    assert refused["reason"] == "API_ReadOnlyMode", refused
    assert "Prepare" in refused["desc"]

    # Nothing was created by the refused Prepare.
    again = as_user(controlled, WRITER)
    ids = [p["id"] for p in again["procedures"]["value"]]
    assert ids == [pid], "a refused Prepare must leave nothing behind"
    assert again["prepare"]["ok"]


def test_the_check_is_the_clients_own(controlled: ControlledSystem) -> None:
    # Documented limit (docs/threat-model.md): Tango enforces access control in the client
    # library, so a client that sets SUPER_TANGO=true (or does not use it) is not held back.
    bypass = as_user(controlled, READER, super_tango=True)
    assert bypass["prepare"]["ok"], bypass


def test_without_the_access_control_service_everyone_is_read_only(
    controlled: ControlledSystem,
) -> None:
    # Fail closed: a service that is registered but not running leaves every client read-only.
    (service,) = [p for p in controlled.started if p.name == "TangoAccessControl"]
    assert not service.stop()
    controlled.started.remove(service)
    try:
        writer = as_user(controlled, WRITER)
        assert writer["state"]["ok"] and writer["procedures"]["ok"], writer
        assert writer["prepare"]["reason"] == "API_ReadOnlyMode", writer
        assert "Controlled Access Service" in writer["prepare"]["desc"]
    finally:
        _start_access_control(controlled.db, controlled.tmp, controlled.started)
    assert as_user(controlled, WRITER)["prepare"]["ok"]
