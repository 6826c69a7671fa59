"""The file that runs is the file that was checked (INTERFACE v2 "Safe by default"): a symlink
re-pointed after Prepare, outside ScriptRoots, does not change what the worker runs."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tango_oet.domain import FilesystemScript, InvalidRequest, PrepareRequest, ScriptNotAllowed
from tango_oet.domain import ProcedureState as S
from tests.device.harness import GatedLauncher
from tests.execution.conftest import Engine


def _prepare(engine: Engine, path: Path) -> int:
    return engine.service.prepare(PrepareRequest(script=FilesystemScript(str(path))))


def test_a_symlink_repointed_after_prepare_still_runs_the_checked_file(
    make_engine: Callable[..., Engine], tmp_path: Path
) -> None:
    roots, outside = tmp_path / "roots", tmp_path / "outside"
    roots.mkdir()
    outside.mkdir()
    (roots / "good.py").write_text("def main():\n    return 'the checked file'\n")
    marker = tmp_path / "evil-ran"
    (outside / "evil.py").write_text(
        f"def main():\n    open({str(marker)!r}, 'w').close()\n    return 'evil'\n"
    )
    link = roots / "observe.py"
    link.symlink_to(roots / "good.py")
    gate = threading.Event()  # holds the worker back: the gap between the check and the load
    engine = make_engine(
        script_roots=(roots,), pool_size=0, launcher=GatedLauncher("forkserver", gate)
    )
    pid = _prepare(engine, link)
    link.unlink()
    link.symlink_to(outside / "evil.py")  # re-pointed outside the roots after Prepare
    gate.set()
    engine.wait_state(pid, S.READY)
    engine.start(pid)
    summary = engine.wait_state(pid, S.COMPLETE)
    assert summary.calls[-1].result == "the checked file"
    assert not marker.exists()


def test_a_symlink_out_of_the_roots_is_refused_by_where_the_open_file_is(
    make_engine: Callable[..., Engine], tmp_path: Path
) -> None:
    roots = tmp_path / "roots"
    roots.mkdir()
    (tmp_path / "evil.py").write_text("def main():\n    pass\n")
    (roots / "link.py").symlink_to(tmp_path / "evil.py")
    engine = make_engine(script_roots=(roots,))
    with pytest.raises(ScriptNotAllowed, match="outside ScriptRoots"):
        _prepare(engine, roots / "link.py")
    (roots / "latin1.py").write_bytes(b"x = '\xe9'\n")
    with pytest.raises(InvalidRequest, match="not UTF-8"):
        _prepare(engine, roots / "latin1.py")
    assert engine.service.list() == []
