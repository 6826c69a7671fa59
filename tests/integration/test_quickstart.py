"""Registration, probes and the quick start (`tango-oet up`) against real processes."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import tango

from tango_oet.device import quickstart
from tango_oet.device.registration import iter_devices, probe, register
from tests.integration.conftest import DEFINITION, REPO
from tests.integration.processes import TangoDatabase, free_port, start_pytango_db

pytestmark = [pytest.mark.integration, pytest.mark.tango]


@pytest.fixture(scope="module")
def sqlite_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TangoDatabase]:
    db = start_pytango_db(tmp_path_factory.mktemp("quickstart-db"))
    yield db
    assert not db.process.stop()


def devices_file(tmp_path: Path, instance: str, device: str) -> Path:
    text = DEFINITION.read_text().replace('"itest"', f'"{instance}"')
    path = tmp_path / f"{instance}.json"
    path.write_text(text.replace("test/oet/1", device))
    return path


def _descendants() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def test_register_is_idempotent(sqlite_db: TangoDatabase, tmp_path: Path) -> None:
    db = sqlite_db.database()
    path = devices_file(tmp_path, "reg", "test/oet/reg")
    first = register(db, path)
    assert [d.name for d in first.devices] == ["test/oet/reg"]
    assert first.changes[0] == "added test/oet/reg to OETScheduler/reg"
    assert list(db.get_device_property("test/oet/reg", ["PoolSize"])["PoolSize"]) == ["1"]
    info = db.get_device_info("test/oet/reg")
    assert (info.class_name, info.ds_full_name) == ("OETScheduler", "OETScheduler/reg")

    again = register(db, path)
    assert again.changes == []
    assert again.summary() == "test/oet/reg: already up to date"

    changed = json.loads(path.read_text())
    device = changed["servers"]["OETScheduler"]["reg"]["OETScheduler"]["test/oet/reg"]
    device["properties"]["PoolSize"] = ["3"]
    assert register(db, changed).changes == ["test/oet/reg properties ['PoolSize']"]
    # An empty list is "not set" (the chart's `gitAllowList: []`): a set property is deleted.
    device["properties"]["GitAllowList"] = ["https://a.example/*"]
    assert register(db, changed).changes == ["test/oet/reg properties ['GitAllowList']"]
    device["properties"]["GitAllowList"] = []
    assert register(db, changed).changes == ["test/oet/reg properties ['GitAllowList']"]
    assert list(db.get_device_property("test/oet/reg", ["GitAllowList"])["GitAllowList"]) == []
    assert register(db, changed).changes == []
    with pytest.raises(ValueError, match="no device of instance 'other'"):
        register(db, path, instance="other")


@pytest.mark.parametrize(
    ("definition", "message"),
    [
        ({"server": {}}, "unknown top-level key"),
        ({"servers": {"S": {"1": {"C": {"not-a-name": {}}}}}}, "servers.S.1.C.not-a-name"),
        ({"servers": {"S": {"1": {"C": {"a/b/c": {"props": {}}}}}}}, "unknown key"),
        ({"servers": {"S": {"1": {"C": {"a/b/c": {"properties": {"P": {}}}}}}}}, "P"),
        ({"servers": {"S": []}}, "servers.S"),
    ],
)
def test_bad_definitions_name_the_place(definition: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as info:
        list(iter_devices(definition))
    assert message in str(info.value)


def test_the_project_definition_is_valid() -> None:
    for path in (REPO / "devices").glob("*.json"):
        devices = list(iter_devices(json.loads(path.read_text())))
        assert devices, path
        assert all(d.device_class == "OETScheduler" for d in devices)


def test_quick_start_brings_everything_up_and_down(tmp_path: Path) -> None:
    before = _descendants()
    port = free_port()
    path = devices_file(tmp_path, "qs", "test/oet/qs")
    data_dir = tmp_path / "oet-data"
    mine = tmp_path / "my-scripts"  # `up --scripts DIR`: the newcomer's own folder
    mine.mkdir()
    (mine / "mine.py").write_text("def main():\n    return 'mine'\n")
    (tmp_path / "elsewhere.py").write_text("def main():\n    pass\n")
    examples = REPO / "resources" / "scripts"
    lines: list[str] = []
    policy = quickstart.Policy(scripts=(mine,))
    stack = quickstart.start([path], data_dir, f"127.0.0.1:{port}", lines.append, policy)
    try:
        assert stack.database is not None and len(stack.servers) == 1
        assert stack.devices == ["test/oet/qs"]
        # It says what the device allows.
        assert f"test/oet/qs allows file:// scripts under: {examples}, {mine}" in lines
        assert "test/oet/qs allows embedded:// scripts: yes (AllowEmbedded)" in lines
        trl = f"tango://127.0.0.1:{port}/test/oet/qs"
        assert probe(trl, ready=True)[0]
        proxy = tango.DeviceProxy(trl)
        roots = proxy.get_property(["ScriptRoots", "DataDirectory"])
        assert list(roots["ScriptRoots"]) == [str(examples), str(mine)]
        assert list(roots["DataDirectory"]) == [str(data_dir.resolve() / "engine")]
        pid = proxy.Prepare(json.dumps({"script": f"file://{examples / 'hello_world.py'}"}))
        assert pid == 1
        assert proxy.Prepare(json.dumps({"script": f"file://{mine / 'mine.py'}"})) == 2
        with pytest.raises(tango.DevFailed) as refused:
            proxy.Prepare(json.dumps({"script": f"file://{tmp_path / 'elsewhere.py'}"}))
        assert refused.value.args[0].reason == "OET_ScriptNotAllowed"
        assert "outside ScriptRoots" in refused.value.args[0].desc
        assert (data_dir / "tango_database.db").exists()
    finally:
        stack.stop(out=lines.append)
    assert _descendants() <= before, lines
    assert probe(f"tango://127.0.0.1:{port}/test/oet/qs")[0] is False

    # Again on the same data directory: the sqlite database kept the registration.
    lines.clear()
    stack = quickstart.start([path], data_dir, f"127.0.0.1:{port}", out=lines.append)
    try:
        assert "registered test/oet/qs: already up to date" in lines
    finally:
        stack.stop(out=lines.append)
    assert _descendants() <= before, lines


def test_quick_start_uses_a_database_that_answers(sqlite_db: TangoDatabase, tmp_path: Path) -> None:
    before = _descendants() - {sqlite_db.process.pid}
    path = devices_file(tmp_path, "qs2", "test/oet/qs2")
    lines: list[str] = []
    stack = quickstart.start([path], tmp_path / "d", sqlite_db.tango_host, out=lines.append)
    try:
        assert stack.database is None
        assert lines[0] == f"using the Tango database at {sqlite_db.tango_host}"
        ok, message = probe(f"tango://{sqlite_db.tango_host}/test/oet/qs2", ready=True)
        assert ok, message
    finally:
        stack.stop(out=lines.append)
    assert _descendants() - {sqlite_db.process.pid} <= before


def test_up_runs_until_told_to_stop(tmp_path: Path) -> None:
    before = _descendants()
    path = devices_file(tmp_path, "up", "test/oet/up")
    stop = threading.Event()
    lines: list[str] = []

    def out(line: str) -> None:
        lines.append(line)
        if line.startswith("ready"):
            stop.set()

    code = quickstart.up([path], tmp_path / "d", f"127.0.0.1:{free_port()}", out, stop)
    assert code == 0
    assert lines[-1] == "stopped"
    assert any(line.startswith("TANGO_HOST=127.0.0.1:") for line in lines)
    assert "device test/oet/up" in lines
    assert _descendants() <= before
    # The dashboard copy for this quick start: its own device, the example's real path.
    written = tmp_path / "d" / quickstart.DASHBOARD
    assert any(line.startswith(f"Taranta dashboard for test/oet/up: {written}") for line in lines)
    dashboard = json.loads(written.read_text())
    text = json.dumps(dashboard)
    assert quickstart.DASHBOARD_DEVICE not in text and "/usr/share/" not in text
    assert f"file://{REPO / 'resources' / 'scripts' / 'hello_world.py'}" in text
    assert '"attribute": "procedure1state"' in text  # a fresh history: the next id is 1


def test_probe_of_a_missing_device(sqlite_db: TangoDatabase) -> None:
    ok, message = probe(f"tango://{sqlite_db.tango_host}/no/such/device", ready=True)
    assert not ok
    assert "no/such/device does not answer" in message


def test_main_rejects_a_broken_devices_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"servers": {"S": {"1": {"C": {"x": {}}}}}}')
    assert quickstart.main(["--devices", str(broken), "--data-dir", str(tmp_path)]) == 1
    assert "domain/family/member" in capsys.readouterr().err
