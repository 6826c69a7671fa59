"""Git procedures end to end through the service: refs, environments, failures, stop in PREP_ENV."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from tango_oet.domain import GitRef, GitScript, PrepareRequest, ScriptNotAllowed, StopRequest
from tango_oet.domain import ProcedureState as S
from tango_oet.environments import EnvironmentManager
from tango_oet.service import ScriptExecutionService, ServiceConfig
from tests.environments.repos import Repos, make_repos, make_wheelhouse
from tests.execution.conftest import Engine, assert_pid_gone


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> Repos:
    return make_repos(tmp_path_factory.mktemp("repos"))


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_wheelhouse(tmp_path_factory.mktemp("wheels") / "wheelhouse")


@pytest.fixture
def git_engine(
    tmp_path: Path, wheelhouse: Path
) -> Iterator[Callable[..., tuple[Engine, EnvironmentManager]]]:
    made: list[ScriptExecutionService] = []

    def make(**overrides: object) -> tuple[Engine, EnvironmentManager]:
        manager = EnvironmentManager(
            tmp_path / "data",
            git_allow=overrides.pop("git_allow", ("file://*",)),  # type: ignore[arg-type]
            find_links=[str(wheelhouse)],
            no_index=True,
        )
        overrides.setdefault("pool_size", 1)
        config = ServiceConfig(data_dir=tmp_path / "data", **overrides)  # type: ignore[arg-type]
        service = ScriptExecutionService(config, git=manager)
        made.append(service)
        engine = Engine(service)
        service.open()
        return engine, manager

    yield make
    for service in made:
        pids = [s.pid for s in service.list()]
        service.shutdown()
        for pid in pids:
            assert_pid_gone(pid)


def git_request(
    repo: str, path: str = "scripts/hello.py", create_env: bool = False, **ref: str
) -> PrepareRequest:
    return PrepareRequest(GitScript(path=path, git=GitRef(repo=repo, **ref), create_env=create_env))


def run_main(engine: Engine, pid: int) -> object:
    engine.wait_state(pid, S.READY, timeout=60)
    engine.start(pid)
    summary = engine.wait_state(pid, S.COMPLETE, S.FAILED)
    assert summary.state is S.COMPLETE, summary.error
    return summary.calls[0].result


@pytest.mark.parametrize(
    ("ref", "version", "label"),
    [({}, 2, "second"), ({"branch": "feature"}, 3, "feature"), ({"tag": "v1"}, 1, "first")],
    ids=["default-branch-trunk", "branch", "tag"],
)
def test_git_refs_resolve_to_the_right_code(
    git_engine: Callable[..., tuple[Engine, EnvironmentManager]],
    repos: Repos,
    ref: dict[str, str],
    version: int,
    label: str,
) -> None:
    engine, _ = git_engine()
    pid = engine.service.prepare(git_request(repos.scripts.url, "scripts/hello.py", False, **ref))
    assert run_main(engine, pid) == version
    summary = engine.service.describe(pid)
    assert summary.git_commit == repos.scripts.commits[label]
    assert engine.states(pid)[:2] == [S.PREP_ENV, S.IDLE]
    assert summary.to_json()["script"]["git"]["commit"] == repos.scripts.commits[label]


def test_unknown_branch_is_failed_with_gits_message(
    git_engine: Callable[..., tuple[Engine, EnvironmentManager]], repos: Repos
) -> None:
    engine, _ = git_engine()
    pid = engine.service.prepare(git_request(repos.scripts.url, branch="nope"))
    summary = engine.wait_state(pid, S.FAILED)
    assert summary.error is not None and summary.error.type == "EnvironmentFailed"
    assert "nope" in summary.error.message
    assert summary.git_commit is None


def test_repository_outside_the_allow_list_is_refused(
    git_engine: Callable[..., tuple[Engine, EnvironmentManager]], repos: Repos
) -> None:
    engine, _ = git_engine(git_allow=("https://gitlab.example/*",))
    with pytest.raises(ScriptNotAllowed):
        engine.service.prepare(git_request(repos.scripts.url))
    assert engine.service.list() == []


@pytest.mark.slow
def test_environment_runs_its_own_interpreter_with_pinned_version(
    git_engine: Callable[..., tuple[Engine, EnvironmentManager]], repos: Repos
) -> None:
    engine, manager = git_engine(pool_size=0)
    pids = [
        engine.service.prepare(git_request(repos.project.url, "scripts/obs.py", True))
        for _ in range(5)
    ]
    for pid in pids:
        summary = engine.wait_state(pid, S.READY, timeout=120)
        assert summary.pid is not None
        python = psutil.Process(summary.pid).cmdline()[0]
        assert summary.environment is not None and summary.environment in python
    assert manager.stats["env_builds"] == 1
    for pid in pids:
        assert run_main(engine, pid) == "1.0"  # the server has no oet_pinned_lib at all
    assert S.PREP_ENV in engine.states(pids[0])


@pytest.mark.slow
def test_broken_project_fails_with_installer_output(
    git_engine: Callable[..., tuple[Engine, EnvironmentManager]], repos: Repos
) -> None:
    engine, _ = git_engine()
    pid = engine.service.prepare(git_request(repos.broken.url, "scripts/obs.py", True))
    summary = engine.wait_state(pid, S.FAILED, timeout=120)
    assert summary.error is not None and summary.error.type == "EnvironmentFailed"
    assert "pyproject.toml" in summary.error.message


@pytest.mark.slow
def test_stop_during_prep_env_kills_the_build(
    git_engine: Callable[..., tuple[Engine, EnvironmentManager]], repos: Repos
) -> None:
    engine, _ = git_engine()
    backend: list[int] = []
    reader = threading.Thread(target=lambda: backend.append(int(repos.fifo.read_text().split()[0])))
    reader.start()
    pid = engine.service.prepare(git_request(repos.slow.url, "scripts/obs.py", True))
    reader.join(timeout=120)  # the hanging build backend writes its pid to the FIFO
    assert backend, "build backend never started"
    assert engine.service.describe(pid).state is S.PREP_ENV
    engine.service.stop(StopRequest(pid))
    engine.wait_state(pid, S.STOPPED)
    try:
        psutil.Process(backend[0]).wait(timeout=10)
    except psutil.NoSuchProcess:
        pass
    assert (
        not psutil.pid_exists(backend[0])
        or psutil.Process(backend[0]).status() == psutil.STATUS_ZOMBIE
    )
