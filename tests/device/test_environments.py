"""Environments through the device: disk usage is visible, garbage collection runs on command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tango

from tests.device.conftest import StartDevice
from tests.environments.repos import make_repos

pytestmark = pytest.mark.tango


def test_git_procedure_shows_in_environments_and_gc_removes_it(
    start_device: StartDevice, tmp_path: Path
) -> None:
    repos = make_repos(tmp_path / "repos")
    dev = start_device(GitAllowList=["file://*"])
    dev.events.subscribe("environments")
    pid = dev.prepare({"script": "git://scripts/hello.py", "git": {"repo": repos.scripts.url}})
    dev.wait_state(pid, "READY")
    dev.start(pid)
    dev.wait_state(pid, "COMPLETE")

    def usage() -> dict[str, object]:
        return json.loads(dev.proxy.read_attribute("environments").value)  # type: ignore[no-any-return]

    dev.events.wait(
        "environments",
        lambda values: any(json.loads(v)["entries"] for v in values),
        what="a clone in environments",
    )
    entries = usage()["entries"]
    assert isinstance(entries, list) and [e["kind"] for e in entries] == ["clone"]
    assert entries[0]["commit"] == repos.scripts.commits["second"]
    assert usage()["total_bytes"] > 0  # type: ignore[operator]

    dev.proxy.CollectGarbage(json.dumps({"keep": 0}))
    dev.events.wait(
        "environments",
        lambda values: bool(json.loads(values[-1])["removed"]),
        what="garbage collection",
    )
    assert usage()["entries"] == []

    with pytest.raises(tango.DevFailed) as err:
        dev.proxy.CollectGarbage('{"keep": -1}')
    assert err.value.args[0].reason == "OET_InvalidRequest"
    assert "keep" in err.value.args[0].desc
