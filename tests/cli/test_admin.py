"""`probe`, `register`, `envs` and the messages for a missing database or device."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import tango

from tango_oet.cli import connect
from tango_oet.environments.store import Store, iso
from tango_oet.service import ScriptExecutionService, ServiceConfig
from tests.cli.conftest import Cli
from tests.client.conftest import trl
from tests.device.conftest import StartDevice


# ---- probe -----------------------------------------------------------------------------------
@pytest.mark.tango
def test_probe_a_healthy_device(cli: Cli, device: str) -> None:
    live = cli("probe", "--device", device)
    assert live.code == 0
    assert live.out.startswith(f"{device} is ON: Idle")
    assert len(live.out.splitlines()) == 1
    assert cli("probe", "--device", device, "--ready").code == 0
    as_json = cli("probe", "--device", device, "--json").json()
    assert as_json["ok"] is True and as_json["device"] == device


@pytest.mark.tango
def test_probe_a_broken_or_unreachable_device(
    cli: Cli, start_device: StartDevice, free_port: int
) -> None:
    def broken(config: ServiceConfig) -> ScriptExecutionService:
        raise RuntimeError("no engine")

    faulty = trl(start_device(service_factory=broken).proxy)
    result = cli("probe", "--device", faulty)
    assert result.code == 1
    assert f"tango-oet: {faulty} is FAULT: The script execution engine is broken" in result.err
    assert cli("probe", "--device", faulty, "--ready").code == 1

    nowhere = f"tango://127.0.0.1:{free_port}/oet/scheduler/1#dbase=no"
    gone = cli("probe", "--device", nowhere)
    assert gone.code == 1
    line = next(e for e in gone.err.splitlines() if e.startswith("tango-oet:"))
    assert line.startswith(f"tango-oet: {nowhere} does not answer: API_CantConnectToDevice")


# ---- no database, unknown device -------------------------------------------------------------
@pytest.mark.tango
def test_no_database_says_how_to_start_one(
    cli: Cli, free_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TANGO_HOST", f"127.0.0.1:{free_port}")
    result = cli("list", "--device", "oet/scheduler/1")
    assert result.code == 1
    assert result.out == ""
    assert result.err == (
        f"tango-oet: no Tango database at 127.0.0.1:{free_port} — start one with `tango-oet up`\n"
    )
    assert "Traceback" not in result.err


def test_without_tango_host_the_quick_start_database_is_assumed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TANGO_HOST", raising=False)
    monkeypatch.setattr(tango.ApiUtil, "get_env_var", staticmethod(lambda name: None))
    with connect.default_tango_host() as host:
        assert host == os.environ["TANGO_HOST"] == "127.0.0.1:10000"
    assert "TANGO_HOST" not in os.environ


DEFINITION = {
    "servers": {
        "OETScheduler": {
            "a": {"OETScheduler": {"test/oet/a": {"properties": {"PoolSize": ["1"]}}}},
            "b": {"OETScheduler": {"test/oet/b": {}}},
        }
    }
}


@pytest.mark.tango
def test_register_an_instance_idempotently(cli: Cli, tango_db: str, tmp_path: Path) -> None:
    path = tmp_path / "devices.json"
    path.write_text(json.dumps(DEFINITION))
    first = cli("register", str(path), "--instance", "a")
    assert first.code == 0, first.err
    assert first.out == (
        "registered test/oet/a: added test/oet/a to OETScheduler/a;"
        " test/oet/a properties ['PoolSize']\n"
    )
    again = cli("register", str(path), "--instance", "a", "--json")
    assert again.json() == {"tango_host": tango_db, "devices": ["test/oet/a"], "changes": []}

    db = tango.Database()
    assert db.get_device_info("test/oet/a").ds_full_name == "OETScheduler/a"
    assert list(db.get_device_property("test/oet/a", ["PoolSize"])["PoolSize"]) == ["1"]
    with pytest.raises(tango.DevFailed):
        db.get_device_info("test/oet/b")  # another instance: left alone

    missing = cli("register", str(path), "--instance", "zzz")
    assert missing.code == 1
    assert "no device of instance 'zzz' in the definition" in missing.err
    assert cli("register", str(tmp_path / "none.json")).code == 2


@pytest.mark.tango
def test_unknown_and_stopped_devices_are_named(cli: Cli, tango_db: str, tmp_path: Path) -> None:
    path = tmp_path / "devices.json"
    path.write_text(json.dumps(DEFINITION))
    assert cli("register", str(path)).code == 0

    unknown = cli("list", "--device", "test/oet/nothing")
    assert unknown.code == 1
    assert "tango-oet: device test/oet/nothing is not defined in the Tango database" in unknown.err

    stopped = cli("describe", "1", "--device", "test/oet/b")
    assert stopped.code == 1
    assert "tango-oet: device test/oet/b is not running or does not answer" in stopped.err


# ---- envs ------------------------------------------------------------------------------------
def _entry(data_dir: Path, kind: str, entry_id: str, last_used: float) -> None:
    path = data_dir / f"{kind}s" / entry_id
    (path / "src").mkdir(parents=True)
    (path / "src" / "script.py").write_text("x = 1\n" * 100)
    meta = {
        "repo": "file:///repo",
        "commit": "a" * 40,
        "created": iso(0),
        "last_used": iso(last_used),
    }
    (path / "oet-entry.json").write_text(json.dumps(meta))


def test_envs_lists_usage_and_collects_garbage(cli: Cli, tmp_path: Path) -> None:
    data = tmp_path / "data"
    empty = cli("envs", "--data-dir", str(data))
    assert empty.code == 0
    assert f"no clones or environments in {data}" in empty.err
    assert cli("envs", "--data-dir", str(data), "--json").json() == {
        "data_dir": str(data),
        "entries": [],
        "removed": [],
    }

    Store(data).create_dirs()
    _entry(data, "clone", "repo-old", 1_000_000)
    _entry(data, "clone", "repo-new", 2_000_000)
    listed = cli("envs", "--data-dir", str(data))
    assert listed.code == 0
    lines = listed.out.splitlines()
    assert lines[0].split() == ["KIND", "ID", "REPO", "COMMIT", "SIZE", "LAST", "USED", "IN", "USE"]
    assert sorted(line.split()[:4] for line in lines[1:3]) == [
        ["clone", "repo-new", "file:///repo", "a" * 12],
        ["clone", "repo-old", "file:///repo", "a" * 12],
    ]
    assert lines[-1].startswith("2 entries, ")

    assert cli("envs", "--keep", "1", "--data-dir", str(data)).code == 2  # --keep needs --gc
    collected = cli("envs", "--gc", "--keep", "1", "--data-dir", str(data), "--json").json()
    assert collected["removed"] == ["clones/repo-old"]
    assert [e["id"] for e in collected["entries"]] == ["repo-new"]
    assert collected["entries"][0]["bytes"] > 600


def test_up_is_the_quick_start_command_line(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    helped = cli("up", "--help")
    assert helped.code == 0
    assert helped.out.startswith("usage: tango-oet up [-h] [--devices DEVICES")
    missing = cli("up", "--devices", str(tmp_path / "missing.json"))
    assert missing.code == 1
    assert "tango-oet up: " in missing.err and "missing.json" in missing.err
    monkeypatch.chdir(tmp_path)  # no devices/*.json here
    assert cli("up").code == 2
