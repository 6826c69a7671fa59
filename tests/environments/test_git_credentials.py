"""Git URLs through the environment manager: normalised before the allow-list, and credentials
that reach git (over a real authenticated HTTP server on 127.0.0.1) but nothing else."""

from __future__ import annotations

import logging
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tango_oet.domain.errors import EnvironmentError_, ScriptNotAllowed
from tango_oet.domain.scripts import GitRef, GitScript, parse_git_ref
from tango_oet.domain.urls import Credentials
from tango_oet.environments.credentials import HELPER, credential_env
from tango_oet.environments.procs import run
from tests.environments.conftest import MakeManager, Progress
from tests.environments.git_http import GitHttpServer, serve_git_http
from tests.environments.repos import Repos

NEVER = threading.Event()
USER = "oet-reader"
PASSWORD = "s3cr3t-Pa55word"


@pytest.fixture
def http_repos(repos: Repos) -> Iterator[GitHttpServer]:
    with serve_git_http(repos.scripts.bare.parent, USER, PASSWORD) as server:
        yield server


def git_script(repo: str, **ref: str) -> GitScript:
    # As a request arrives: parsed, so the credentials are cut out of the URL.
    return GitScript(path="scripts/hello.py", git=parse_git_ref({"repo": repo, **ref}))


def files_holding(root: Path, secret: str) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and secret.encode() in path.read_bytes():
            found.append(str(path))
    return found


def test_dot_segments_cannot_reach_a_repository_the_allow_list_refuses(
    repos: Repos, make_manager: MakeManager
) -> None:
    # The bypass: `<allowed>/../<forbidden>` matched the pattern `<allowed>*` as a string, and
    # git then fetched the forbidden repository.
    manager = make_manager(git_allow=[repos.scripts.url + "*"])
    sneaky = f"{repos.scripts.url}/../{repos.project.bare.name}"
    with pytest.raises(ScriptNotAllowed, match="not allowed by GitAllowList") as info:
        manager.resolve(git_script(sneaky), Progress(), NEVER)
    assert repos.project.url in info.value.message  # the normalised URL is what was judged
    assert manager.stats == {}, "refused before any git"
    allowed = manager.resolve(git_script(f"{repos.scripts.url}/./x/..//"), Progress(), NEVER)
    assert allowed.repo == repos.scripts.url


def test_an_empty_allow_list_refuses_everything(repos: Repos, make_manager: MakeManager) -> None:
    with pytest.raises(ScriptNotAllowed, match="GitAllowList is empty"):
        make_manager(git_allow=[]).check_allowed(repos.scripts.url)


def test_allow_list_patterns_that_can_never_match_are_refused(make_manager: MakeManager) -> None:
    with pytest.raises(ValueError, match=r"GitAllowList: .*'\.\.' segment"):
        make_manager(git_allow=["https://example.org/a/../*"])
    with pytest.raises(ValueError, match=r"GitAllowList: .*password") as info:
        make_manager(git_allow=["https://u:hunter2secret@example.org/*"])
    assert "hunter2secret" not in str(info.value)


def test_credentials_reach_git_over_http_and_nothing_else(
    repos: Repos,
    make_manager: MakeManager,
    http_repos: GitHttpServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    manager = make_manager()
    progress = Progress()
    script = git_script(http_repos.url("scripts.git", f"{USER}:{PASSWORD}"))
    assert script.git.repo == http_repos.url("scripts.git")
    source = manager.resolve(script, progress, NEVER)
    assert source.commit == repos.scripts.commits["second"]
    assert http_repos.authorised > 0, http_repos.requests
    assert http_repos.leaked_cmdlines == [], "the password was on a command line"
    seen = [repr(script), repr(source), str(progress.calls), caplog.text, str(manager.usage())]
    assert not [text for text in seen if PASSWORD in text or USER in text]
    assert files_holding(manager.data_dir, PASSWORD) == []  # meta, .git/config, logs
    # Pinned to a commit the clone is reused, still without the password anywhere.
    again = manager.resolve(
        git_script(http_repos.url("scripts.git", f"{USER}:{PASSWORD}"), commit=source.commit),
        progress,
        NEVER,
    )
    assert again.checkout == source.checkout


@pytest.mark.parametrize(
    ("userinfo", "secret"),
    [(f"{USER}:wrong-Pa55word", "wrong-Pa55word"), (None, PASSWORD)],
    ids=["wrong-password", "none"],
)
def test_refused_credentials_fail_without_showing_them(
    make_manager: MakeManager,
    http_repos: GitHttpServer,
    caplog: pytest.LogCaptureFixture,
    userinfo: str | None,
    secret: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    manager = make_manager()
    with pytest.raises(EnvironmentError_, match="cannot read repository") as info:
        manager.resolve(git_script(http_repos.url("scripts.git", userinfo)), Progress(), NEVER)
    message = info.value.message
    assert http_repos.url("scripts.git") in message
    assert "Authentication failed" in message or "could not read Username" in message, message
    assert secret not in message and secret not in caplog.text
    assert http_repos.authorised == 0


def test_the_server_users_credential_helper_neither_answers_nor_stores(
    make_manager: MakeManager,
    http_repos: GitHttpServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An operator's ~/.gitconfig with `credential.helper store` would have written a request's
    # password to disk once git succeeded with it (git "approves" working credentials).
    home = tmp_path / "home"
    home.mkdir()
    store = home / "stored-credentials"
    (home / ".gitconfig").write_text(f"[credential]\n\thelper = store --file {store}\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    manager = make_manager()
    manager.resolve(
        git_script(http_repos.url("scripts.git", f"{USER}:{PASSWORD}")), Progress(), NEVER
    )
    assert http_repos.authorised > 0
    assert not store.exists() or PASSWORD not in store.read_text()


def _helper(action: str, request: str, env: dict[str, str]) -> str:
    # As git runs a "!" helper: through the shell, with the action appended.
    done = subprocess.run(
        ["sh", "-c", f"{HELPER[1:]} {action}"],
        input=request,
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def test_the_credential_helper_answers_only_the_requested_origin() -> None:
    env = credential_env("https://git.example.org:8443/o/r.git", Credentials("me", "pw"), {})
    ok = "protocol=https\nhost=git.example.org:8443\npath=o/r.git\n\n"
    assert _helper("get", ok, env) == "username=me\npassword=pw\n"
    for other in (
        "protocol=https\nhost=evil.example.org\n\n",  # a redirect elsewhere
        "protocol=http\nhost=git.example.org:8443\n\n",  # a downgrade to plain http
        "protocol=https\nhost=git.example.org\n\n",  # another port
    ):
        assert _helper("get", other, env) == ""
    assert _helper("store", ok, env) == ""
    assert _helper("erase", ok, env) == ""


def test_credential_env_keeps_configuration_given_by_the_environment() -> None:
    env = credential_env("https://h.example/r", Credentials("u", "p"), {"GIT_CONFIG_COUNT": "1"})
    assert env["GIT_CONFIG_COUNT"] == "3"
    assert (env["GIT_CONFIG_KEY_1"], env["GIT_CONFIG_VALUE_1"]) == ("credential.helper", "")
    assert env["GIT_CONFIG_KEY_2"] == "credential.helper"
    assert "GIT_CONFIG_KEY_0" not in env
    # ssh and file:// never ask credential helpers: nothing is handed over.
    assert credential_env("ssh://git@h.example/r", Credentials("u", "p"), {}) == {}
    assert credential_env("file:///srv/r.git", Credentials("u", "p"), {}) == {}


def test_file_urls_with_credentials_resolve_and_keep_them_out_of_everything(
    repos: Repos, make_manager: MakeManager, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    manager = make_manager()
    url = repos.scripts.url.replace("file://", f"file://{USER}:{PASSWORD}@")
    source = manager.resolve(git_script(url), Progress(), NEVER)
    assert source.repo == repos.scripts.url
    missing = url.replace("scripts.git", "missing.git")
    with pytest.raises(EnvironmentError_) as info:
        manager.resolve(git_script(missing), Progress(), NEVER)
    assert PASSWORD not in info.value.message and PASSWORD not in caplog.text
    assert files_holding(manager.data_dir, PASSWORD) == []


def test_a_url_with_credentials_is_never_handed_to_git_on_its_own(
    repos: Repos, make_manager: MakeManager, tmp_path: Path
) -> None:
    # GitRef always holds the clean URL; a caller bypassing it must not get the secret stored
    # in the checkout's .git/config.
    manager = make_manager()
    git = manager._git_tool()
    raw = repos.scripts.url.replace("file://", f"file://{USER}:{PASSWORD}@")
    with pytest.raises(EnvironmentError_, match="pass them apart") as info:
        git.checkout_commit(raw, repos.scripts.commits["first"], tmp_path / "co", NEVER)
    assert PASSWORD not in info.value.message
    assert GitRef(repo=raw).repo == repos.scripts.url


def test_command_output_is_redacted_before_anyone_sees_it() -> None:
    done = run(
        ["sh", "-c", "echo 'fatal: https://me:tok3n-value@h.example/r'; echo tok3n-value"],
        cancel=NEVER,
        timeout=30,
        secrets=("tok3n-value",),
    )
    assert done.output.split() == ["fatal:", "https://***@h.example/r", "***"]
    plain = run(["sh", "-c", "echo pip: git+https://x:y@h.example/p"], cancel=NEVER, timeout=30)
    assert "x:y" not in plain.output and "https://***@h.example/p" in plain.output
