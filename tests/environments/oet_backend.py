"""A dependency-free PEP 517 build backend for the test projects, so builds work offline.

Test repositories carry a copy of this file as their in-tree backend (`backend-path`); the test
fixtures also call `write_wheel` directly to make the `oet-pinned-lib` wheels.
Standard library only: it runs inside uv's or pip's isolated build environment.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
import tomllib
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def write_wheel(
    directory: str | Path,
    name: str,
    version: str,
    files: Mapping[str, bytes],
    requires: Sequence[str] = (),
) -> str:
    """Write a pure-Python wheel holding `files` (archive path -> content); return its file name."""
    dist = f"{name.replace('-', '_')}-{version}"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    metadata += "".join(f"Requires-Dist: {req}\n" for req in requires)
    entries = dict(files)
    entries[f"{dist}.dist-info/METADATA"] = metadata.encode()
    entries[f"{dist}.dist-info/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: oet-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = []
    wheel_name = f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(Path(directory) / wheel_name, "w") as wheel:
        for path, data in entries.items():
            wheel.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            record.append(f"{path},sha256={digest.decode()},{len(data)}")
        record.append(f"{dist}.dist-info/RECORD,,")
        wheel.writestr(f"{dist}.dist-info/RECORD", "\n".join(record) + "\n")
    return wheel_name


def _package_files(package: str) -> dict[str, bytes]:
    files = {}
    for root, dirs, names in os.walk(package):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in names:
            path = os.path.join(root, name)
            files[Path(path).as_posix()] = Path(path).read_bytes()
    return files


def build_wheel(
    wheel_directory: str,
    config_settings: Mapping[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    with open("pyproject.toml", "rb") as f:
        data = tomllib.load(f)
    project = data["project"]
    test = data.get("tool", {}).get("oet-test", {})
    if "fifo" in test:
        # Tell the test we are running (it blocks reading the FIFO until we open it), then hang
        # until killed: the test cancels the build at this point.
        with open(test["fifo"], "w") as fifo:
            fifo.write(f"{os.getpid()}\n")
        time.sleep(600)
    files: dict[str, bytes] = {}
    for package in test.get("packages", [project["name"].replace("-", "_")]):
        files.update(_package_files(package))
    return write_wheel(
        wheel_directory, project["name"], project["version"], files, project.get("dependencies", [])
    )
