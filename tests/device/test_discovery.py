"""ListScripts: what may be prepared, described from the source, through a real device."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tango

from tests.device.conftest import StartDevice
from tests.device.harness import TEST_SCRIPTS

pytestmark = pytest.mark.tango


def test_list_scripts_describes_every_script_under_the_roots_without_running_it(
    start_device: StartDevice, tmp_path: Path
) -> None:
    root = tmp_path / "obs"
    root.mkdir()
    marker = tmp_path / "ran"
    (root / "field.py").write_text(
        '"""Observe one field."""\n'
        f"open({str(marker)!r}, 'w').close()\n"
        "def main(field: str, repeats: int = 2):\n    '''Point and integrate.'''\n"
    )
    (root / "broken.py").write_text("def main(:\n")
    oet = start_device(ScriptRoots=[str(root), str(TEST_SCRIPTS)])
    entries = json.loads(oet.proxy.ListScripts("{}"))
    by_uri = {e["uri"]: e for e in entries}
    field = by_uri[(root / "field.py").resolve().as_uri()]
    assert field["doc"] == "Observe one field."
    assert field["functions"]["main"]["parameters"][1] == {
        "name": "repeats",
        "kind": "POSITIONAL_OR_KEYWORD",
        "required": False,
        "annotation": "int",
        "default": 2,
    }
    assert "SyntaxError" in by_uri[(root / "broken.py").resolve().as_uri()]["error"]
    assert any(uri.startswith(TEST_SCRIPTS.resolve().as_uri()) for uri in by_uri)
    assert not marker.exists()

    only = json.loads(oet.proxy.ListScripts(json.dumps({"root": str(root)})))
    assert {e["uri"] for e in only} == {
        (root / n).resolve().as_uri() for n in ("broken.py", "field.py")
    }


@pytest.mark.parametrize(
    ("request_text", "field"),
    [('{"root": "/etc"}', "root"), ('{"roots": []}', "roots"), ("[", "request")],
)
def test_list_scripts_refuses_what_it_cannot_list(
    start_device: StartDevice, request_text: str, field: str
) -> None:
    oet = start_device()
    with pytest.raises(tango.DevFailed) as info:
        oet.proxy.ListScripts(request_text)
    assert info.value.args[0].reason == "OET_InvalidRequest"
    assert field in info.value.args[0].desc
