"""Every `*.py` under the allowed roots, each described once per version of the file.

Bounded (at most MAX_FILES files, each at most MAX_FILE_BYTES; larger ones are listed with an
error) and cached by path, size and modification time, so a listing of a few thousand
unchanged files reads only their directory entries and one `stat` each.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tango_oet.discovery.signatures import ScriptDescription, describe_source

__all__ = ["MAX_FILES", "MAX_FILE_BYTES", "ScriptCatalog", "describe_source"]

MAX_FILES = 5000
MAX_FILE_BYTES = 1 << 20


class ScriptCatalog:
    """The scripts under `roots`, described without executing them; thread-safe."""

    def __init__(
        self,
        roots: Iterable[Path],
        max_files: int = MAX_FILES,
        max_file_bytes: int = MAX_FILE_BYTES,
    ) -> None:
        self.roots = tuple(Path(r).resolve() for r in roots)
        self._max_files = max_files
        self._max_bytes = max_file_bytes
        self._lock = threading.Lock()
        self._cache: dict[Path, tuple[tuple[int, int], ScriptDescription]] = {}

    def list(self, root: Path | None = None) -> tuple[list[dict[str, Any]], bool]:
        """([{"uri", "doc", "functions"[, "error"]}, …] sorted by uri, truncated).

        `root` must be one of the roots (ValueError otherwise); None lists them all.
        """
        roots = self.roots
        if root is not None:
            wanted = Path(root).resolve()
            if wanted not in self.roots:
                raise ValueError(f"{root} is not one of ScriptRoots {[str(r) for r in roots]}")
            roots = (wanted,)
        entries: list[dict[str, Any]] = []
        seen: set[Path] = set()
        truncated = False
        for base in roots:
            for path in _python_files(base):
                if len(seen) >= self._max_files:
                    truncated = True
                    break
                real = path.resolve()
                # A symlink out of the roots is not listed: it could not be prepared either.
                if real in seen or not any(real.is_relative_to(r) for r in self.roots):
                    continue
                seen.add(real)
                entries.append({"uri": real.as_uri(), **self._describe(real).to_json()})
        with self._lock:  # forget files that are gone
            for gone in set(self._cache) - seen:
                if not any(gone.is_relative_to(r) for r in roots):
                    continue
                del self._cache[gone]
        entries.sort(key=lambda e: str(e["uri"]))
        return entries, truncated

    def _describe(self, path: Path) -> ScriptDescription:
        try:
            st = path.stat()
        except OSError as exc:
            return ScriptDescription(error=f"cannot read: {exc.strerror}")
        version = (st.st_size, st.st_mtime_ns)
        with self._lock:
            cached = self._cache.get(path)
        if cached is not None and cached[0] == version:
            return cached[1]
        if st.st_size > self._max_bytes:
            described = ScriptDescription(
                error=f"{st.st_size} bytes: larger than the {self._max_bytes} bytes listed"
            )
        else:
            try:
                source = path.read_bytes().decode("utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                described = ScriptDescription(error=f"cannot read: {exc}")
            else:
                described = describe_source(source, str(path))
        with self._lock:
            self._cache[path] = (version, described)
        return described


def _python_files(base: Path) -> Iterable[Path]:
    """`*.py` below `base`, skipping hidden and cache directories, in a stable order."""
    for top, dirs, files in os.walk(base):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py") and not name.startswith("."):
                yield Path(top) / name
