"""Local bare git repositories and wheels made on the fly for the environment tests (no network)."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.environments import oet_backend

BACKEND_SOURCE = Path(oet_backend.__file__).read_text(encoding="utf-8")
PINNED_LIB = "oet-pinned-lib"

_GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "OET Test",
    "GIT_AUTHOR_EMAIL": "oet@example.invalid",
    "GIT_COMMITTER_NAME": "OET Test",
    "GIT_COMMITTER_EMAIL": "oet@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "LC_ALL": "C",
}


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        ["git", "-c", "gc.auto=0", *args],
        cwd=cwd,
        env=_GIT_ENV,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {done.stderr}")
    return done.stdout.strip()


@dataclass
class Repo:
    """A bare repository (`url` is file://) and the working copy it was pushed from."""

    name: str
    work: Path
    bare: Path
    commits: dict[str, str] = field(default_factory=dict)  # label -> full sha

    @property
    def url(self) -> str:
        return self.bare.as_uri()

    def write(self, files: dict[str, str]) -> None:
        for rel, text in files.items():
            path = self.work / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")

    def symlink(self, rel: str, target: str | Path) -> None:
        path = self.work / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target)

    def commit(self, label: str) -> str:
        git("add", "-A", cwd=self.work)
        git("commit", "--quiet", "-m", label, cwd=self.work)
        sha = git("rev-parse", "HEAD", cwd=self.work)
        self.commits[label] = sha
        return sha

    def push(self) -> None:
        """(Re)create the bare repository from the working copy: all branches and tags."""
        if not self.bare.exists():
            git("clone", "--quiet", "--bare", str(self.work), str(self.bare), cwd=self.work.parent)
        git("push", "--quiet", "--force", "--all", str(self.bare), cwd=self.work)
        git("push", "--quiet", "--force", "--tags", str(self.bare), cwd=self.work)


def new_repo(root: Path, name: str, default_branch: str) -> Repo:
    work = root / "work" / name
    work.mkdir(parents=True)
    git("init", "--quiet", "--initial-branch", default_branch, cwd=work)
    return Repo(name, work, root / "bare" / f"{name}.git")


def pyproject(name: str, dependencies: list[str], extra: str = "") -> str:
    deps = ", ".join(f'"{d}"' for d in dependencies)
    return (
        "[build-system]\n"
        "requires = []\n"
        'build-backend = "oet_backend"\n'
        'backend-path = ["_backend"]\n\n'
        "[project]\n"
        f'name = "{name}"\n'
        'version = "0.1"\n'
        f"dependencies = [{deps}]\n" + extra
    )


OBS_SCRIPT = "import oet_pinned_lib\n\n\ndef main():\n    return oet_pinned_lib.__version__\n"


def make_wheelhouse(path: Path) -> Path:
    path.mkdir(parents=True)
    for version in ("1.0", "2.0"):
        oet_backend.write_wheel(
            path,
            PINNED_LIB,
            version,
            {"oet_pinned_lib/__init__.py": f'__version__ = "{version}"\n'.encode()},
        )
    return path


@dataclass
class Repos:
    scripts: Repo  # no project files; default branch `trunk`, branch `feature`, tags
    project: Repo  # pyproject.toml pinning oet-pinned-lib==1.0
    reqs: Repo  # requirements.txt pinning oet-pinned-lib==2.0
    broken: Repo  # a pyproject.toml that is not TOML
    slow: Repo  # a build that hangs in the backend (for cancel), reporting its pid on `fifo`
    outside: Path  # a file outside every repository (symlink escape target)
    fifo: Path


def make_repos(root: Path) -> Repos:
    outside_dir = root / "outside"
    outside_dir.mkdir(parents=True)
    outside = outside_dir / "secret.py"
    outside.write_text("def main():\n    return 'escaped'\n", encoding="utf-8")

    scripts = new_repo(root, "scripts", "trunk")
    scripts.write({"scripts/hello.py": "VERSION = 1\n\n\ndef main():\n    return VERSION\n"})
    scripts.symlink("scripts/alias.py", "hello.py")  # a link that stays inside: allowed
    scripts.symlink("scripts/escape.py", outside)  # a link out of the tree: refused
    scripts.symlink("linkdir", outside_dir)
    scripts.commit("first")
    git("tag", "-a", "v1", "-m", "release 1", cwd=scripts.work)
    scripts.write({"scripts/hello.py": "VERSION = 2\n\n\ndef main():\n    return VERSION\n"})
    scripts.commit("second")
    git("tag", "light", cwd=scripts.work)
    git("checkout", "--quiet", "-b", "feature", cwd=scripts.work)
    scripts.write({"scripts/hello.py": "VERSION = 3\n\n\ndef main():\n    return VERSION\n"})
    scripts.commit("feature")
    git("checkout", "--quiet", "trunk", cwd=scripts.work)
    scripts.push()

    project = new_repo(root, "project", "main")
    project.write(
        {
            "pyproject.toml": pyproject("oet-test-project", [f"{PINNED_LIB}==1.0"]),
            "_backend/oet_backend.py": BACKEND_SOURCE,
            "oet_test_project/__init__.py": "NAME = 'oet-test-project'\n",
            "scripts/obs.py": OBS_SCRIPT,
        }
    )
    project.commit("project")
    project.push()

    reqs = new_repo(root, "reqs", "main")
    reqs.write({"requirements.txt": f"{PINNED_LIB}==2.0\n", "scripts/obs.py": OBS_SCRIPT})
    reqs.commit("requirements")
    reqs.push()

    broken = new_repo(root, "broken", "main")
    broken.write(
        {
            "pyproject.toml": '[project\nname = "oops"\n',
            "scripts/obs.py": OBS_SCRIPT,
        }
    )
    broken.commit("broken")
    broken.push()

    fifo = root / "build.fifo"
    os.mkfifo(fifo)
    slow = new_repo(root, "slow", "main")
    slow.write(
        {
            "pyproject.toml": pyproject(
                "oet-test-slow", [], f'\n[tool.oet-test]\nfifo = "{fifo}"\n'
            ),
            "_backend/oet_backend.py": BACKEND_SOURCE,
            "oet_test_slow/__init__.py": "",
            "scripts/obs.py": "def main():\n    return 0\n",
        }
    )
    slow.commit("slow")
    slow.push()
    return Repos(scripts, project, reqs, broken, slow, outside, fifo)
