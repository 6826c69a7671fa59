"""A content-addressed copy of the parts of tango_oet a worker needs, for foreign interpreters.

A worker under an environment's own Python must import `tango_oet.scripting` and
`tango_oet.execution.worker`, but putting the server's site-packages on its path would leak
every server dependency (numpy, pytango, GitPython...) into the script's environment. Copying our
own (standard-library-only) package tree to a directory that holds nothing else, and putting
that directory on the worker's PYTHONPATH, gives it tango_oet and nothing more.
"""

from __future__ import annotations

import compileall
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import tango_oet

# The Tango-facing layers import `tango`; a worker never needs them.
EXCLUDED_SUBPACKAGES = frozenset({"device", "client", "cli"})
_HASH_CHARS = 16


def package_files(package_dir: Path) -> Iterator[tuple[str, Path]]:
    """(relative posix path, path) of every file to copy, in a stable order."""
    for root, dirs, files in os.walk(package_dir):
        rel_root = Path(root).relative_to(package_dir)
        dirs[:] = sorted(
            d
            for d in dirs
            if d != "__pycache__" and not (rel_root == Path(".") and d in EXCLUDED_SUBPACKAGES)
        )
        for name in sorted(files):
            if name.endswith((".pyc", ".pyo")):
                continue
            path = Path(root) / name
            yield (rel_root / name).as_posix(), path


def content_hash(package_dir: Path) -> str:
    digest = hashlib.sha256()
    for rel, path in package_files(package_dir):
        digest.update(rel.encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:_HASH_CHARS]


def publish_runtime(runtime_root: Path, package_dir: Path | None = None) -> Path:
    """Return `<runtime_root>/<hash>`, holding `tango_oet/`, creating it if needed.

    No lock is needed: the name is the content hash, so racing publishers produce identical
    trees and the loser of the rename simply discards its copy.
    """
    package_dir = package_dir or Path(tango_oet.__file__).resolve().parent
    final = runtime_root / content_hash(package_dir)
    if (final / "tango_oet" / "__init__.py").is_file():
        return final
    runtime_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=runtime_root))
    try:
        tmp.chmod(0o755)
        for rel, path in package_files(package_dir):
            dest = tmp / "tango_oet" / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
        # The environments' interpreters are built from ours, so these .pyc files are valid
        # for them and spare every worker start the compile.
        compileall.compile_dir(tmp / "tango_oet", quiet=2, ddir=final / "tango_oet")
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "tango_oet" / "__init__.py").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
