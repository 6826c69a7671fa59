"""Build one virtual environment: create the venv and install a repository's project into it.

uv is preferred (a cold build of a small project takes a fraction of a second instead of
seconds); `python -m venv` + pip is the fallback. The venv is created from the server's own
interpreter (so the worker's standard library matches the runtime copy of tango_oet) and never
sees the server's site-packages.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tango_oet.domain.errors import EnvironmentError_
from tango_oet.environments.model import ProgressSink
from tango_oet.environments.procs import Completed, clean_env, run

Installer = Literal["uv", "pip"]
BUILD_SRC = "oet-build-src"  # the project is copied here during the build, then removed


def find_uv() -> str | None:
    """The uv binary: the one the `uv` Python package ships, else the first on PATH."""
    try:
        import uv  # the PyPI package only locates its binary

        found: str | None = uv.find_uv_bin()
    except (ImportError, FileNotFoundError):
        found = None
    return found or shutil.which("uv")


def choose_installer(requested: str) -> tuple[Installer, str | None]:
    """Map the `installer` option ("auto", "uv", "pip") to an installer and uv's path."""
    if requested not in ("auto", "uv", "pip"):
        raise ValueError(f"installer must be 'auto', 'uv' or 'pip', got {requested!r}")
    uv = find_uv() if requested != "pip" else None
    if requested == "uv" and uv is None:
        raise ValueError("installer='uv' but no uv binary was found")
    return ("uv", uv) if uv is not None else ("pip", None)


def server_pip_usable() -> bool:
    """Whether our own pip can install into another venv (`pip --python`, pip >= 22.3).

    Then a venv needs no pip of its own, which spares the ~5 s ensurepip takes per build.
    """
    try:
        major, minor, *_ = (int(p) for p in importlib.metadata.version("pip").split(".")[:2])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return False
    return (major, minor) >= (22, 3)


@dataclass(frozen=True)
class BuildOptions:
    """How packages are installed; the same for every environment of one manager."""

    installer: Installer = "pip"
    uv: str | None = None
    find_links: tuple[str, ...] = ()
    no_index: bool = False
    index_url: str | None = None
    timeout_s: float = 900.0
    python: str = sys.executable
    server_pip: bool = False  # installer "pip": run our pip with --python instead of the venv's

    def index_args(self) -> list[str]:
        args = ["--no-index"] if self.no_index else []
        if self.index_url:
            args += ["--index-url", self.index_url]
        for link in self.find_links:
            args += ["--find-links", link]
        return args


def install_args(project: Path) -> list[str] | None:
    """What to install from a checkout: the project itself, else its requirements, else nothing."""
    if (project / "pyproject.toml").is_file() or (project / "setup.py").is_file():
        return [str(project)]
    if (project / "requirements.txt").is_file():
        return ["-r", str(project / "requirements.txt")]
    return None


def build_venv(
    venv: Path,
    final: Path,
    checkout: Path,
    options: BuildOptions,
    progress: ProgressSink,
    cancel: threading.Event,
) -> dict[str, Any]:
    """Create a venv at `venv` (later renamed to `final`) with `checkout`'s project installed.

    Returns metadata for the cache entry. The caller removes `venv` if this raises.
    """
    started = time.monotonic()
    progress("creating", 0, None, f"creating a virtual environment ({options.installer})")
    done = _create(venv, options, cancel)
    if done.returncode != 0:
        raise EnvironmentError_(f"creating the virtual environment failed:\n{done.tail()}")
    python = venv / "bin" / "python"

    # Build from a copy: setuptools writes build/ and *.egg-info into the source tree, and the
    # clone cache must stay exactly the commit (scripts are loaded from it).
    src = venv / BUILD_SRC
    shutil.copytree(checkout, src, symlinks=True)
    args = install_args(src)
    target = "nothing" if args is None else " ".join(args).replace(str(src), "<checkout>")
    output = ""
    try:
        if args is not None:
            progress("installing", 0, None, f"installing {target} ({options.installer})")
            done = _install(python, args, src, options, cancel)
            output = done.output
            if done.returncode != 0:
                raise EnvironmentError_(
                    f"installing {target} with {options.installer} failed "
                    f"(exit code {done.returncode}):\n{done.tail()}"
                )
    finally:
        shutil.rmtree(src, ignore_errors=True)
    _relocate_scripts(venv, final)
    return {
        "installer": options.installer,
        "installed": target,
        "python": str(final / "bin" / "python"),
        "build_seconds": round(time.monotonic() - started, 3),
        "install_output_tail": Completed(0, output).tail(1000),
    }


def _create(venv: Path, options: BuildOptions, cancel: threading.Event) -> Completed:
    env = clean_env({"PYTHONNOUSERSITE": "1"})
    if options.installer == "uv":
        assert options.uv is not None
        # The directory exists (it is the claimed temporary directory): --allow-existing.
        cmd = [options.uv, "venv", "--quiet", "--allow-existing", "--python", options.python]
        return run([*cmd, venv], cancel=cancel, timeout=options.timeout_s, cwd=venv, env=env)
    without_pip = ["--without-pip"] if options.server_pip else []
    return run(
        [options.python, "-m", "venv", *without_pip, venv],
        cancel=cancel,
        timeout=options.timeout_s,
        cwd=venv,
        env=env,
    )


def _install(
    python: Path, args: list[str], cwd: Path, options: BuildOptions, cancel: threading.Event
) -> Completed:
    # cwd = the project copy: relative paths in a requirements file mean the repository.
    env = clean_env({"PYTHONNOUSERSITE": "1", "PIP_NO_INPUT": "1"})
    if options.installer == "uv":
        assert options.uv is not None
        cmd = [options.uv, "pip", "install", "--no-progress", "--color", "never"]
        cmd += ["--python", str(python), *options.index_args(), *args]
    else:
        if options.server_pip:
            cmd = [options.python, "-m", "pip", "--python", str(python), "install"]
        else:
            cmd = [str(python), "-m", "pip", "install"]
        cmd += ["--disable-pip-version-check", "--no-input", "--progress-bar", "off"]
        cmd += [*options.index_args(), *args]
    return run(cmd, cancel=cancel, timeout=options.timeout_s, cwd=cwd, env=env)


def _relocate_scripts(venv: Path, final: Path) -> None:
    """Point bin/ scripts (shebangs, activate) at the final location.

    `<venv>/bin/python` itself survives the rename (Python finds pyvenv.cfg next to it), but
    console scripts and activate files embed the build path.
    """
    old, new = str(venv).encode(), str(final).encode()
    for path in (venv / "bin").iterdir():
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        if old in data:
            path.write_bytes(data.replace(old, new))
    cfg = venv / "pyvenv.cfg"
    data = cfg.read_bytes()
    if old in data:
        cfg.write_bytes(data.replace(old, new))
