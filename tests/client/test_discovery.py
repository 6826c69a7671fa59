"""The typed client lists what may be prepared (ListScripts), as the device describes it."""

from __future__ import annotations

from pathlib import Path

from tests.client.conftest import StartClient


def test_list_scripts_gives_each_script_with_its_functions(
    start_client: StartClient, tmp_path: Path
) -> None:
    (tmp_path / "obs.py").write_text('"""Observe."""\ndef main(n: int = 1):\n    pass\n')
    oet = start_client(ScriptRoots=[str(tmp_path)])
    [entry] = oet.list_scripts()
    assert entry["uri"] == (tmp_path / "obs.py").resolve().as_uri()
    assert entry["doc"] == "Observe."
    assert [p["name"] for p in entry["functions"]["main"]["parameters"]] == ["n"]
    assert oet.list_scripts(root=str(tmp_path)) == [entry]
