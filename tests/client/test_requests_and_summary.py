"""Pure parts of the client: request building, the Summary view, state names (no Tango)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tango_oet.client import Git, ProcedureState, Summary, as_state
from tango_oet.client.requests import prepare_request, script_uri, start_request


def test_script_uris(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert script_uri("obs.py") == f"file://{tmp_path / 'obs.py'}"
    assert script_uri(Path("sub/obs.py")) == f"file://{tmp_path / 'sub' / 'obs.py'}"
    assert script_uri("file:///abs/obs.py") == "file:///abs/obs.py"
    assert script_uri("scripts/obs.py", git=Git("https://x/r.git")) == "git://scripts/obs.py"
    assert script_uri("hello", source="def main(): pass") == "embedded://hello"
    assert script_uri(Path("/a/hello.py"), source="") == "embedded://hello.py"


def test_prepare_request_carries_every_option() -> None:
    request = prepare_request(
        "scripts/obs.py",
        init_args=[1, "a"],
        init_kwargs={"k": True},
        git=Git("file:///r", tag="v1"),
        create_env=True,
    )
    assert request == {
        "script": "git://scripts/obs.py",
        "git": {"repo": "file:///r", "tag": "v1"},
        "create_env": True,
        "init": {"args": [1, "a"], "kwargs": {"k": True}},
    }
    embedded = prepare_request("e", source="x = 1", git=None)
    assert embedded == {
        "script": "embedded://e",
        "source": "x = 1",
        "init": {"args": [], "kwargs": {}},
    }
    assert prepare_request("s.py", git={"repo": "r", "branch": "b"})["git"] == {
        "repo": "r",
        "branch": "b",
    }
    assert start_request(3, "f", (1,), {"a": 2}, True) == {
        "id": 3,
        "function": "f",
        "args": [1],
        "kwargs": {"a": 2},
        "force": True,
    }


def test_summary_view_of_a_failed_procedure() -> None:
    raw = {
        "id": 4,
        "state": "FAILED",
        "script": {
            "kind": "git",
            "uri": "git://a.py",
            "git": {"commit": "abc"},
            "environment": None,
        },
        "init": {"args": [1], "kwargs": {}},
        "calls": [
            {
                "function": "main",
                "args": [],
                "kwargs": {},
                "time": "2025-01-01T00:00:01.000000Z",
                "finished": None,
                "result": None,
            }
        ],
        "history": [
            ["CREATING", "2025-01-01T00:00:00.000000Z"],
            ["RUNNING", "2025-01-01T00:00:01.000000Z"],
            ["FAILED", "2025-01-01T00:00:03.500000Z"],
        ],
        "progress": {"done": 1, "total": None, "message": "x"},
        "error": {
            "type": "WorkerDied",
            "message": "killed",
            "traceback": "",
            "exitcode": -9,
            "signal": "SIGKILL",
        },
        "pid": None,
    }
    s = Summary.from_json(raw)
    assert s.state is ProcedureState.FAILED and s.is_final
    assert s.git_commit == "abc"
    assert s.started == datetime(2025, 1, 1, 0, 0, 1, tzinfo=UTC)
    assert s.duration() == timedelta(seconds=2.5)
    assert s.result is None
    assert s.outcome() == "WorkerDied: killed (SIGKILL)"
    assert str(s.progress) == "1 x"
    assert s.raw is raw
    assert str(s) == "procedure 4 FAILED git://a.py"


def test_summary_tolerates_missing_fields_and_unknown_states() -> None:
    s = Summary.from_json({"id": 1, "state": "SOMETHING_NEW", "history": [["X", "garbage"]]})
    assert s.state is ProcedureState.UNKNOWN
    assert s.history == ((ProcedureState.UNKNOWN, None),)
    assert s.started is None and s.duration() is None and s.outcome() == ""


def test_state_names() -> None:
    assert as_state("ready") is ProcedureState.READY
    assert as_state(9) is ProcedureState.COMPLETE
    assert as_state(ProcedureState.PAUSED) is ProcedureState.PAUSED
    with pytest.raises(ValueError, match="unknown procedure state 'DONE'; one of CREATING"):
        as_state("DONE")
