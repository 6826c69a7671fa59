"""`tango-oet up`'s script policy: the options, and what it writes and prints per device.

The device allows nothing by default, so the quick start configures it explicitly; these
tests drive the option parsing and `configure_policy` against an in-memory stand-in for the
Tango database (the full `up` runs in tests/integration/test_quickstart.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from tango_oet.device import quickstart
from tango_oet.device.quickstart import Policy, configure_policy

DEVICE = "oet/scheduler/1"


class FakeDatabase:
    """The two calls configure_policy makes, on a dict; records the writes."""

    def __init__(self, properties: Mapping[str, Sequence[str]] | None = None) -> None:
        self.properties = {k: list(v) for k, v in (properties or {}).items()}
        self.writes: list[dict[str, list[str]]] = []

    def get_device_property(self, device: str, names: Sequence[str]) -> dict[str, list[str]]:
        assert device == DEVICE
        return {n: list(self.properties.get(n, [])) for n in names}

    def put_device_property(self, device: str, values: Mapping[str, Sequence[str]]) -> None:
        assert device == DEVICE
        self.writes.append({k: list(v) for k, v in values.items()})
        self.properties.update({k: list(v) for k, v in values.items()})


def test_options_add_folders_patterns_and_embedded(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    argv = ["--scripts", str(first), "--scripts", str(second), "--allow-embedded"]
    args = quickstart.parser().parse_args([*argv, "--allow-git", " https://g.example/obs/* "])
    assert quickstart.policy_of(args) == Policy(
        scripts=(first, second), git=("https://g.example/obs/*",), embedded=True
    )
    assert quickstart.policy_of(quickstart.parser().parse_args([])) == Policy()


def test_a_scripts_folder_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "obs").mkdir()
    monkeypatch.chdir(tmp_path)
    args = quickstart.parser().parse_args(["--scripts", "obs"])
    assert args.scripts == [tmp_path.resolve() / "obs"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--scripts", "/no/such/folder"], "'/no/such/folder' is not a directory"),
        (["--allow-git", "https://x.example/a/../*"], "'..' segment"),
    ],
)
def test_bad_options_are_refused_before_anything_starts(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        quickstart.main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_new_device_gets_the_example_scripts_and_nothing_else(tmp_path: Path) -> None:
    db = FakeDatabase()
    lines = configure_policy(db, DEVICE, tmp_path / "examples", Policy())
    assert db.properties == {"ScriptRoots": [str(tmp_path / "examples")]}
    assert lines == [
        f"{DEVICE} allows file:// scripts under: {tmp_path / 'examples'}",
        f"{DEVICE} allows git repositories matching: nothing (GitAllowList is empty;"
        " add --allow-git PATTERN)",
        f"{DEVICE} allows embedded:// scripts: no (AllowEmbedded is false; add --allow-embedded)",
    ]


def test_scripts_folders_are_added_to_the_example_scripts(tmp_path: Path) -> None:
    db = FakeDatabase({"AllowEmbedded": ["true"]})
    examples, obs = tmp_path / "examples", tmp_path / "obs"
    policy = Policy(scripts=(obs,), git=("https://g.example/obs/*",))
    lines = configure_policy(db, DEVICE, examples, policy)
    assert db.properties["ScriptRoots"] == [str(examples), str(obs)]
    assert db.properties["GitAllowList"] == ["https://g.example/obs/*"]
    assert lines == [
        f"{DEVICE} allows file:// scripts under: {examples}, {obs}",
        f"{DEVICE} allows git repositories matching: https://g.example/obs/*",
        f"{DEVICE} allows embedded:// scripts: yes (AllowEmbedded)",
    ]
    # Again with the same options: nothing to write.
    db.writes.clear()
    assert configure_policy(db, DEVICE, examples, policy) == lines
    assert db.writes == []


def test_a_configured_device_keeps_its_roots_and_only_gains(tmp_path: Path) -> None:
    # A shared database's configuration is never replaced: the operator's roots stay, the
    # example scripts are not added to them, and --scripts only appends.
    db = FakeDatabase({"ScriptRoots": ["/srv/obs"], "GitAllowList": ["https://a.example/*"]})
    lines = configure_policy(
        db, DEVICE, tmp_path / "examples", Policy(scripts=(Path("/srv/obs"), tmp_path))
    )
    assert db.properties["ScriptRoots"] == ["/srv/obs", str(tmp_path)]
    assert db.properties["GitAllowList"] == ["https://a.example/*"]
    assert lines[0] == f"{DEVICE} allows file:// scripts under: /srv/obs, {tmp_path}"


def test_allow_embedded_sets_the_property(tmp_path: Path) -> None:
    db = FakeDatabase({"AllowEmbedded": ["false"]})
    lines = configure_policy(db, DEVICE, None, Policy(embedded=True))
    assert db.properties["AllowEmbedded"] == ["true"]
    assert lines[0] == (
        f"{DEVICE} allows file:// scripts under: nothing (ScriptRoots is empty; add --scripts DIR)"
    )
    assert lines[2] == f"{DEVICE} allows embedded:// scripts: yes (AllowEmbedded)"
