"""Scripts see only the allow-listed environment (INTERFACE v2 `WorkerEnvironment`): a secret
of the server's environment never reaches them, whichever launcher started the worker."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tango_oet.domain import ProcedureState as S
from tango_oet.execution.environment import (
    DEFAULT_WORKER_ENVIRONMENT,
    check_entries,
    worker_environment,
)
from tango_oet.execution.launcher import ContextLauncher
from tests.execution.conftest import Engine

READ_ENV = "import os\n\ndef main():\n    return dict(os.environ)\n"


def test_names_prefixes_and_fixed_values() -> None:
    server = {"PATH": "/bin", "LC_ALL": "C", "LC_TIME": "en", "SECRET": "x", "LANG": "C.UTF-8"}
    env = worker_environment(server, ("PATH", "LC_*", "SITE=north"))
    assert env == {"PATH": "/bin", "LC_ALL": "C", "LC_TIME": "en", "SITE": "north"}
    assert "SECRET" not in worker_environment(server, DEFAULT_WORKER_ENVIRONMENT)


@pytest.mark.parametrize("bad", ["", "1X", "A-B", "X*=1", "=value"])
def test_a_bad_entry_is_refused_naming_it(bad: str) -> None:
    with pytest.raises(ValueError, match="WorkerEnvironment entry"):
        check_entries([bad])


def test_a_script_sees_only_the_allowed_variables(
    make_engine: Callable[..., Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OET_TEST_SECRET", "hunter2")
    monkeypatch.setenv("LC_OET_TEST", "kept")
    # spawn: the worker inherits this process's environment now, secret included.
    engine = make_engine(
        launcher=ContextLauncher("spawn", environment=("PATH", "LC_*", "OBSERVATORY=test")),
        allow_embedded=True,
    )
    pid = engine.prepare_source(READ_ENV)
    engine.wait_state(pid, S.READY)
    engine.start(pid)
    env = engine.wait_state(pid, S.COMPLETE).calls[-1].result
    assert isinstance(env, dict)
    assert "OET_TEST_SECRET" not in env
    assert env["LC_OET_TEST"] == "kept" and env["OBSERVATORY"] == "test"
    assert set(env) <= {"PATH", "OBSERVATORY"} | {k for k in env if k.startswith("LC_")}
