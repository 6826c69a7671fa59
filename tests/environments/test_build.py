"""Building environments: real venvs (uv, and pip as fallback) from local repos, offline."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

import tango_oet
from tango_oet.domain.errors import EnvironmentError_
from tango_oet.environments import Environment, EnvironmentManager, ResolvedSource, no_progress
from tango_oet.environments.locks import FileLock
from tango_oet.environments.model import env_id
from tango_oet.execution import messages as m
from tests.environments.conftest import MakeManager, Progress, script
from tests.environments.repos import Repo, Repos
from tests.environments.test_procs import assert_gone, live_children

pytestmark = pytest.mark.slow

NEVER = threading.Event()


def source_of(
    manager: EnvironmentManager, repo: Repo, path: str = "scripts/obs.py"
) -> ResolvedSource:
    return manager.resolve(script(repo.url, path), no_progress, NEVER)


def build(manager: EnvironmentManager, repo: Repo, path: str = "scripts/obs.py") -> Environment:
    return manager.ensure_environment(source_of(manager, repo, path), no_progress, NEVER)


def run_python(env: Environment, code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run code under the environment's interpreter the way the launcher starts a worker."""
    child_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    child_env.update(PYTHONPATH=str(env.sys_path_runtime), PYTHONNOUSERSITE="1")
    # cwd matters: `python -c` puts it on sys.path, and the repository root would expose tango_oet.
    return subprocess.run(
        [str(env.python), "-c", code],
        cwd=cwd,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def installed_version(env: Environment, cwd: Path) -> str:
    done = run_python(env, "import oet_pinned_lib; print(oet_pinned_lib.__version__)", cwd)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


# ---- what gets installed --------------------------------------------------------------------
def test_project_with_pinned_dependency(
    repos: Repos, shared_manager: EnvironmentManager, tmp_path: Path
) -> None:
    progress = Progress()
    source = source_of(shared_manager, repos.project)
    env = shared_manager.ensure_environment(source, progress, NEVER)
    assert progress.stages == ["creating", "installing", "ready"]
    assert env.python == env.path / "bin" / "python"
    assert env.path.parent == shared_manager.data_dir / "envs"
    assert installed_version(env, tmp_path) == "1.0"  # 2.0 is in the wheelhouse too
    done = run_python(env, "import oet_test_project; print(oet_test_project.NAME)", tmp_path)
    assert done.stdout.strip() == "oet-test-project"
    # The build copied the project: the cached checkout stays exactly the commit.
    status = subprocess.run(
        ["git", "status", "--porcelain", "--ignored"],
        cwd=source.checkout,
        capture_output=True,
        text=True,
        check=True,
    )
    assert status.stdout == ""


def test_requirements_file(
    repos: Repos, shared_manager: EnvironmentManager, tmp_path: Path
) -> None:
    assert installed_version(build(shared_manager, repos.reqs), tmp_path) == "2.0"


def test_environment_is_isolated_from_the_server(
    repos: Repos, shared_manager: EnvironmentManager, tmp_path: Path
) -> None:
    env = build(shared_manager, repos.scripts, "scripts/hello.py")  # nothing to install
    done = run_python(
        env,
        "import sys, tango_oet, tango_oet.scripting, tango_oet.execution.worker\n"
        "print(sys.prefix); print(tango_oet.__file__)",
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    prefix, package = done.stdout.split()
    assert Path(prefix) == env.path
    assert Path(package).is_relative_to(env.sys_path_runtime)
    for module in ("numpy", "git", "tango", "tango_oet.device", "pytest"):
        done = run_python(env, f"import {module}", tmp_path)
        assert done.returncode != 0, f"{module} leaked into the environment"
        assert "ModuleNotFoundError" in done.stderr


def test_worker_runs_under_the_environment(
    repos: Repos, shared_manager: EnvironmentManager, tmp_path: Path
) -> None:
    """`<venv python> -m tango_oet.execution.worker FD` loads a script that imports its deps."""
    source = source_of(shared_manager, repos.project)
    env = shared_manager.ensure_environment(source, no_progress, NEVER)
    ours, theirs = socket.socketpair()
    child_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    child_env.update(PYTHONPATH=str(env.sys_path_runtime), PYTHONNOUSERSITE="1")
    proc = subprocess.Popen(
        [str(env.python), "-m", "tango_oet.execution.worker", str(theirs.fileno())],
        pass_fds=[theirs.fileno()],
        cwd=tmp_path,
        env=child_env,
        start_new_session=True,
    )
    theirs.close()
    conn = Connection(ours.detach())
    try:
        ready = m.decode_worker(conn.recv_bytes()) if conn.poll(30) else None
        assert isinstance(ready, m.WorkerReady)
        assert Path(ready.python) == env.python
        conn.send(
            m.LoadScript(1, 1, "obs", str(source.script_path), None, cwd=str(source.checkout))
        )
        conn.send(m.CallFunction(2, 1, "main"))
        result = None
        while conn.poll(30):
            msg = m.decode_worker(conn.recv_bytes())
            assert not isinstance(msg, m.ScriptFailed), msg
            if isinstance(msg, m.CallReturned):
                result = msg.result
                break
        assert result == "1.0"
        assert proc.wait(30) == 0
    finally:
        conn.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("server_pip", [True, False])
def test_pip_fallback(
    repos: Repos, make_manager: MakeManager, tmp_path: Path, server_pip: bool
) -> None:
    manager = make_manager(installer="pip")
    assert manager.build_options.installer == "pip"
    assert manager.build_options.server_pip  # this venv's pip is recent enough
    # Without a usable server pip, each venv gets its own (ensurepip: slower, same result).
    manager.build_options = replace(manager.build_options, server_pip=server_pip)
    env = build(manager, repos.project)
    assert installed_version(env, tmp_path) == "1.0"
    # bin/ scripts embed the build directory; they were pointed at the final one.
    for path in (env.path / "bin").iterdir():
        if path.is_file() and not path.is_symlink():
            assert b"/.tmp-" not in path.read_bytes(), path
    assert f'VIRTUAL_ENV="{env.path}"' in (env.path / "bin" / "activate").read_text()
    if not server_pip:
        done = subprocess.run(
            [str(env.path / "bin" / "pip"), "--version"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0 and str(env.path) in done.stdout, done.stderr


# ---- one build, shared ------------------------------------------------------------------------
def test_ten_concurrent_calls_build_once(repos: Repos, make_manager: MakeManager) -> None:
    manager = make_manager()
    source = source_of(manager, repos.project)
    barrier = threading.Barrier(10)
    progresses = [Progress() for _ in range(10)]

    def one(i: int) -> Environment:
        barrier.wait()
        return manager.ensure_environment(source, progresses[i], NEVER)

    with ThreadPoolExecutor(10) as pool:
        envs = list(pool.map(one, range(10)))
    assert len(set(envs)) == 1
    assert manager.stats["env_builds"] == 1
    assert all(p.stages[-1] == "ready" for p in progresses)
    assert [p.name for p in (manager.data_dir / "envs").iterdir()] == [envs[0].env_id]
    assert all(row["in_use"] for row in manager.usage())
    for env in envs:
        manager.release(env)
    manager.release(source)
    assert not any(row["in_use"] for row in manager.usage())


def test_failed_build_fails_every_waiter_with_the_installer_output(
    repos: Repos, make_manager: MakeManager
) -> None:
    manager = make_manager()
    source = source_of(manager, repos.broken)
    barrier = threading.Barrier(10)

    def one(_: int) -> str:
        barrier.wait()
        try:
            manager.ensure_environment(source, no_progress, NEVER)
        except EnvironmentError_ as exc:
            return exc.message
        return "built?!"

    with ThreadPoolExecutor(10) as pool:
        messages = list(pool.map(one, range(10)))
    assert manager.stats["env_builds"] == 1
    for message in messages:
        assert "installing <checkout> with uv failed" in message
        assert "TOML parse error" in message  # uv's own words
    envs = manager.data_dir / "envs"
    assert not list(envs.iterdir()), "nothing published, no temporary directory left"
    # A failure is not cached: the next call tries again (and fails again).
    with pytest.raises(EnvironmentError_, match="TOML parse error"):
        manager.ensure_environment(source, no_progress, NEVER)
    assert manager.stats["env_builds"] == 2


def test_cancel_during_the_install(repos: Repos, make_manager: MakeManager) -> None:
    manager = make_manager()
    source = source_of(manager, repos.slow)
    cancel = threading.Event()
    backend_pid: list[int] = []

    def cancel_when_backend_runs() -> None:
        with open(repos.fifo) as fifo:  # the hanging build backend writes its pid here
            backend_pid.append(int(fifo.read().split()[0]))
        cancel.set()

    watcher = threading.Thread(target=cancel_when_backend_runs)

    def progress(stage: str, done: float, total: float | None, message: str) -> None:
        if stage == "installing" and not watcher.is_alive():
            watcher.start()

    before = live_children()
    t0 = time.monotonic()
    with pytest.raises(EnvironmentError_, match=r"^cancelled$"):
        manager.ensure_environment(source, progress, cancel)
    elapsed = time.monotonic() - t0
    watcher.join(30)
    assert backend_pid, "the build backend never started"
    assert elapsed < 30
    assert_gone(backend_pid[0])
    assert live_children() <= before
    assert not list((manager.data_dir / "envs").iterdir())
    assert manager.usage()[0]["kind"] == "clone"  # only the clone is left


# ---- restart and reuse ------------------------------------------------------------------------
def test_restart_reuses_clones_and_environments(
    repos: Repos, make_manager: MakeManager, tmp_path: Path
) -> None:
    first = make_manager()
    env = build(first, repos.project)
    commit = repos.project.commits["project"]
    first.close()
    second = make_manager()
    t0 = time.monotonic()
    source = second.resolve(
        script(repos.project.url, "scripts/obs.py", commit=commit), no_progress, NEVER
    )
    again = second.ensure_environment(source, no_progress, NEVER)
    warm = time.monotonic() - t0
    assert again == env
    assert second.stats == {"clone_reuses": 1, "env_reuses": 1}
    assert warm < 2.0
    assert installed_version(again, tmp_path) == "1.0"
    rows = {row["kind"]: row for row in second.usage()}
    assert rows["env"]["id"] == env.env_id and rows["env"]["commit"] == commit
    assert rows["env"]["in_use"] and rows["env"]["bytes"] > 0


_OTHER_SERVER = """
import json, sys, threading
from pathlib import Path
from tango_oet.domain.scripts import GitRef, GitScript
from tango_oet.environments import EnvironmentManager
from tango_oet.execution.messages import decode_worker

args = json.loads(sys.argv[1])
manager = EnvironmentManager(Path(args["data_dir"]), find_links=[args["wheels"]], no_index=True)
progress = lambda stage, done, total, message: print(stage, message, flush=True)
script = GitScript("scripts/obs.py", GitRef(args["repo"], commit=args["commit"]))
source = manager.resolve(script, progress, threading.Event())
env = manager.ensure_environment(source, progress, threading.Event())
print("RESULT", json.dumps({"builds": manager.stats.get("env_builds", 0), "env": env.env_id}))
manager.close()
"""


def test_two_server_processes_build_once(
    repos: Repos, make_manager: MakeManager, wheelhouse: Path
) -> None:
    manager = make_manager()
    source = source_of(manager, repos.project)  # cloned here; the servers reuse the clone
    lock = FileLock(manager.data_dir / "locks" / f"env-{env_id(source.repo, source.commit)}.lock")
    lock.acquire()  # hold both servers at the lock so that they really compete
    args = {
        "data_dir": str(manager.data_dir),
        "wheels": str(wheelhouse),
        "repo": source.repo,
        "commit": source.commit,
    }
    root = Path(tango_oet.__file__).resolve().parents[1]
    servers = [
        subprocess.Popen(
            [sys.executable, "-c", _OTHER_SERVER, json.dumps(args)],
            cwd=root,
            env={**os.environ, "PYTHONPATH": str(root)},
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for server in servers:
            assert server.stdout is not None
            for line in server.stdout:
                if "waiting for another process" in line:
                    break
            else:
                pytest.fail("a server never waited for the lock")
        lock.release()
        results = []
        for server in servers:
            out, _ = server.communicate(timeout=60)
            assert server.returncode == 0
            results.append(json.loads(out.split("RESULT", 1)[1]))
    finally:
        lock.release()
        for server in servers:
            if server.poll() is None:
                server.kill()
                server.communicate()
    assert sum(r["builds"] for r in results) == 1
    assert {r["env"] for r in results} == {env_id(source.repo, source.commit)}
