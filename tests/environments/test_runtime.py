"""The runtime copy of tango_oet that workers under foreign interpreters put on PYTHONPATH."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tango_oet.environments.runtime import content_hash, publish_runtime
from tests.environments.conftest import MakeManager


def test_runtime_holds_only_what_workers_need(make_manager: MakeManager) -> None:
    runtime = make_manager().runtime_dir()
    package = runtime / "tango_oet"
    assert (package / "scripting" / "__init__.py").is_file()
    assert (package / "execution" / "worker.py").is_file()
    assert (package / "domain" / "errors.py").is_file()
    for excluded in ("device", "client", "cli"):
        assert not (package / excluded).exists()
    assert [p.name for p in runtime.parent.iterdir()] == [runtime.name]  # no temp dirs left
    # Precompiled, so a worker start does not compile the runtime every time.
    assert list((package / "execution" / "__pycache__").glob("worker.*.pyc"))


def test_runtime_is_content_addressed(tmp_path: Path) -> None:
    pkg = tmp_path / "src" / "tango_oet"
    (pkg / "scripting").mkdir(parents=True)
    (pkg / "device").mkdir()
    (pkg / "__pycache__").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "scripting" / "__init__.py").write_text("X = 1\n")
    (pkg / "device" / "server.py").write_text("import tango\n")
    (pkg / "__pycache__" / "junk.pyc").write_bytes(b"junk")
    root = tmp_path / "runtime"
    first = publish_runtime(root, pkg)
    assert publish_runtime(root, pkg) == first
    (pkg / "device" / "server.py").write_text("import tango  # changed\n")
    assert publish_runtime(root, pkg) == first, "excluded files do not change the runtime"
    (pkg / "scripting" / "__init__.py").write_text("X = 2\n")
    second = publish_runtime(root, pkg)
    assert second != first
    assert second.name == content_hash(pkg)
    assert (second / "tango_oet" / "scripting" / "__init__.py").read_text() == "X = 2\n"
    assert (first / "tango_oet" / "scripting" / "__init__.py").read_text() == "X = 1\n"


def test_concurrent_publishers_agree(tmp_path: Path) -> None:
    barrier = threading.Barrier(4)
    root = tmp_path / "runtime"

    def one(_: int) -> Path:
        barrier.wait()
        return publish_runtime(root)

    with ThreadPoolExecutor(4) as pool:
        paths = set(pool.map(one, range(4)))
    assert len(paths) == 1
    assert [p.name for p in root.iterdir()] == [paths.pop().name]
