"""Git URL normalisation and allow-list matching (domain/urls.py), by example and by property."""

from __future__ import annotations

import posixpath
import re
from urllib.parse import quote, unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tango_oet.domain.urls import (
    Credentials,
    GitUrlError,
    check_pattern,
    git_url_allowed,
    normalise_git_url,
    parse_git_url,
    redact_text,
)


@pytest.mark.parametrize(
    ("given_url", "normal"),
    [
        ("HTTPS://GitHub.COM:443/Org//Repo.git/", "https://github.com/Org/Repo.git"),
        ("http://example.org:80/a/./b/../c", "http://example.org/a/c"),
        ("http://example.org:8080/r", "http://example.org:8080/r"),
        ("https://example.org./r", "https://example.org/r"),
        ("https://example.org/%7Euser/%2e/r%2Egit", "https://example.org/~user/r.git"),
        ("https://example.org/a%2fb", None),  # an encoded separator: refused, not decoded
        ("https://example.org/caf\u00e9", "https://example.org/caf%C3%A9"),
        ("https://example.org/r%c3%a9", "https://example.org/r%C3%A9"),
        ("https://[0:0::1]:8443/r", "https://[::1]:8443/r"),
        ("file:///srv/git/allowed.git/../forbidden.git", "file:///srv/git/forbidden.git"),
        ("file://localhost/srv/git/r.git", "file:///srv/git/r.git"),
        ("ssh://git@Host.example:22/~/r.git", "ssh://git@host.example/~/r.git"),
        ("git://host.example:9418/r", "git://host.example/r"),
        ("git@GitHub.com:org/repo.git", "git@github.com:org/repo.git"),
        ("git@github.com:org//x/../repo.git/", "git@github.com:org/repo.git"),
        ("host.example:/abs/r.git", "host.example:/abs/r.git"),
        ("https://user:pw@example.org/r", "https://example.org/r"),
        ("https://tok3n@example.org/r", "https://example.org/r"),
    ],
)
def test_normalisation(given_url: str, normal: str | None) -> None:
    if normal is None:
        with pytest.raises(GitUrlError):
            normalise_git_url(given_url)
    else:
        assert normalise_git_url(given_url) == normal
        assert normalise_git_url(normal) == normal


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://example.org/../r", "climbs above the root"),
        ("https://example.org/a/%2E%2e/../r", "climbs above the root"),
        ("git@github.com:../r", "climbs above the root"),
        ("https://example.org/a%5Cb", "encoded '\\'"),
        ("https://example.org/a%00b", "encoded NUL"),
        ("https://example.org/a%0ab", "encoded control"),
        ("https://example.org/a\nb", "control characters"),
        ("https://example.org/a b", "spaces"),
        ("https://example.org\\r", "must not contain '\\'"),
        ("https://example.org/r?x=1", "no query"),
        ("https://example.org/r#frag", "no query or fragment"),
        ("https://example.org:99999/r", "out of range"),
        ("https://example.org:x/r", "invalid port"),
        ("https://example.org", "empty path"),
        ("https:///r", "needs a host"),
        ("https://ex ample.org/r", "spaces"),
        ("https://ex_am!ple.org/r", "not a valid host name"),
        ("ftp://example.org/r", "not supported"),
        ("file://otherhost/r", "local path"),
        ("ssh://git:pw@example.org/r", "cannot carry a password"),
        ("git:pw@example.org:r", "no '@' or ':' in its path"),
        ("https://example.org/%zz", "percent-escape"),
        ("/srv/git/r.git", "must be a URL"),
        ("", "non-empty"),
        ("https://u:p%0Aw@example.org/r", "line breaks"),
    ],
)
def test_refusals(url: str, problem: str) -> None:
    with pytest.raises(GitUrlError) as info:
        parse_git_url(url)
    assert problem in str(info.value)


@pytest.mark.parametrize(
    ("url", "pattern", "allowed"),
    [
        # The bypass of issue 10: a string match saw the allowed prefix.
        ("file:///srv/allowed.git/../forbidden.git", "file:///srv/allowed.git*", False),
        ("https://h.example/allowed.git/../forbidden.git", "https://h.example/allowed.git*", False),
        ("https://h.example/allowed/x/../../forbidden", "https://h.example/allowed/*", False),
        ("https://h.example/allowed.git", "https://h.example/allowed.git*", True),
        # `r` and `r.git`, a trailing slash: the same repository either way round.
        ("https://h.example/o/r.git/", "https://h.example/o/r", True),
        ("https://h.example/o/r", "https://h.example/o/r.git", True),
        ("https://h.example/o/r", "https://h.example/o/*.git", True),
        ("https://h.example/o/r2", "https://h.example/o/r", False),
        # Case of scheme and host, default ports, duplicate slashes, in both.
        ("HTTPS://H.Example:443//o/r", "https://h.example/o/*", True),
        ("https://h.example/o/r", "HTTPS://H.EXAMPLE:443/o//*", True),
        ("https://h.example:8443/o/r", "https://h.example/o/*", False),
        ("https://h.example/O/r", "https://h.example/o/*", False),  # paths are case-sensitive
        # A host wildcard stays in the host.
        ("https://evil.example/x.good.example/r", "https://*.good.example/*", False),
        ("https://git.good.example/r", "https://*.good.example/*", True),
        ("http://git.good.example/r", "https://*.good.example/*", False),
        # Subgroups: a path `*` spans `/`.
        ("https://gitlab.example/grp/sub/r.git", "https://gitlab.example/grp/*", True),
        # Credentials are not part of what is matched, on either side.
        ("https://u:pw@h.example/o/r", "https://h.example/o/*", True),
        ("https://h.example/o/r", "https://someone@h.example/o/*", True),
        ("ssh://git@h.example/o/r", "ssh://h.example/o/*", True),
        # scp-like.
        ("git@github.com:org/r.git", "git@github.com:org/*", True),
        ("git@github.com:org/../other/r.git", "git@github.com:org/*", False),
        ("git@github.com:org/r.git", "https://github.com/org/*", False),
        # A host of `*` takes any host and port; no path takes every repository of the host.
        ("file:///srv/git/r.git", "file://*", True),
        ("https://h.example:8443/o/r", "https://*", True),
        ("https://h.example/o/r", "http://*", False),
        ("https://git.good.example/o/r", "https://*.good.example", True),
        ("https://evil.example/x.good.example", "https://*.good.example", False),
        ("https://h.example:8443/o/r", "https://h.example", False),
        # Patterns without a scheme match the whole credential-free URL.
        ("https://h.example/o/r", "*", True),
        ("https://u:secret@h.example/o/r", "*secret*", False),
        ("git@github.com:org/r.git", "github.com:org/*", True),
    ],
)
def test_allow_list_matching(url: str, pattern: str, allowed: bool) -> None:
    assert git_url_allowed(url, [pattern]) is allowed


def test_no_pattern_allows_nothing() -> None:
    assert not git_url_allowed("https://h.example/r", [])


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [("", "empty"), ("https://h.example/a/../*", "'..'"), ("https://u:p@h/*", "password")],
)
def test_patterns_that_cannot_match_are_refused(pattern: str, problem: str) -> None:
    with pytest.raises(GitUrlError) as info:
        check_pattern(pattern)
    assert problem in str(info.value)
    assert check_pattern("  https://h.example/*  ") == "https://h.example/*"


def test_credentials_are_kept_apart_and_never_shown() -> None:
    parsed = parse_git_url("https://me%40corp:p%3Ass%20word@h.example/r")
    assert parsed.url == "https://h.example/r"
    assert parsed.credentials == Credentials("me@corp", "p:ss word")
    for text in (repr(parsed), str(parsed), repr(parsed.credentials)):
        assert "p:ss" not in text and "me@corp" not in text and "ss%20word" not in text
    assert set(parsed.credentials.secrets()) >= {"p:ss word", "p%3Ass%20word", "me@corp"}


def test_redaction() -> None:
    text = "fatal: 'https://me:hunter22@h.example/r' and ssh://git@h/x; token hunter22 ok a"
    out = redact_text(text, ["hunter22", "a"])
    assert out == "fatal: 'https://***@h.example/r' and ssh://***@h/x; token *** ok a"
    assert redact_text("no url here: user@example.org") == "no url here: user@example.org"
    assert redact_text("https://u:p@ss@h.example/r") == "https://***@h.example/r"


def test_error_messages_never_hold_credentials() -> None:
    for bad in (
        "https://me:hunter22@h.example/r?x",
        "ftp://me:hunter22@h.example/r",
        "notaurl://me:hunter22@",
        "https://me:hunter22@h.example/../r",
        "ssh://me:hunter22@h.example/r",
    ):
        with pytest.raises(GitUrlError) as info:
            parse_git_url(bad)
        assert "hunter22" not in str(info.value), bad


# ---- properties -----------------------------------------------------------------------------
_SEGMENTS = st.sampled_from(
    ["", ".", "..", "%2e", "%2E%2e", ".%2E", "allowed", "forbidden", "x", "x.git", "%7E", "-"]
)
_PATTERNS = [
    "https://h.example/allowed/*",
    "https://h.example/allowed",
    "https://h.example/allowed.git*",
    "https://h.example/*/x",
    "https://h.example/x*",
    "*allowed*",
]


def _resolve_independently(segments: list[str]) -> str | None:
    """The path a server would see, by posixpath: None when it climbs above the root."""
    depth = 0
    for seg in segments:
        name = unquote(seg)
        if name == "..":
            depth -= 1
            if depth < 0:
                return None
        elif name not in ("", "."):
            depth += 1
    joined = "/" + "/".join(unquote(s) for s in segments)
    return posixpath.normpath(re.sub("/+", "/", joined))  # normpath keeps a leading `//`


@settings(max_examples=400, deadline=None)
@given(st.lists(_SEGMENTS, min_size=1, max_size=8))
def test_dot_segments_never_widen_what_the_allow_list_allows(segments: list[str]) -> None:
    url = "https://h.example/" + "/".join(segments)
    expected = _resolve_independently(segments)
    if expected is None:
        with pytest.raises(GitUrlError, match="climbs above the root"):
            parse_git_url(url)
        return
    if expected == "/":
        with pytest.raises(GitUrlError, match="empty path"):
            parse_git_url(url)
        return
    normal = normalise_git_url(url)
    assert normal == "https://h.example" + quote(expected, safe="/~")
    assert "/./" not in normal + "/" and "/../" not in normal + "/" and "//" not in normal[8:]
    for pattern in _PATTERNS:
        # A URL with `..` matches exactly what its normalised form matches...
        assert git_url_allowed(url, [pattern]) == git_url_allowed(normal, [pattern])
    # ...and so lands inside `allowed/` whenever that pattern lets it through.
    if git_url_allowed(url, ["https://h.example/allowed/*"]):
        assert expected.startswith("/allowed/")


_HOSTS = st.sampled_from(["h.example", "H.Example", "h.example.", "127.0.0.1", "[::1]"])
_PORTS = st.sampled_from(["", ":443", ":8443"])
_SCHEMES = st.sampled_from(["https", "HTTPS", "http", "ssh", "git"])
_PATH = st.lists(st.sampled_from(["a", "b.git", ".", "", "%41", "caf\u00e9", "~x"]), max_size=5)


@settings(max_examples=300, deadline=None)
@given(_SCHEMES, _HOSTS, _PORTS, _PATH)
def test_normalisation_is_idempotent(scheme: str, host: str, port: str, path: list[str]) -> None:
    url = f"{scheme}://{host}{port}/r/" + "/".join(path)
    normal = normalise_git_url(url)
    assert normalise_git_url(normal) == normal
    assert git_url_allowed(url, ["*"])
    assert normal == normal.strip() and ("%41" not in normal)  # unreserved escapes decoded


_SECRET_TEXT = st.text(
    st.characters(exclude_characters="\r\n\0", exclude_categories=["Cs"]),
    min_size=1,
    max_size=20,
)


@settings(max_examples=300, deadline=None)
@given(_SECRET_TEXT, _SECRET_TEXT, st.sampled_from(["https", "http", "file"]))
def test_credentials_never_survive_in_the_url(user: str, password: str, scheme: str) -> None:
    host = "" if scheme == "file" else "h.example"
    userinfo = f"{quote(user, safe='')}:{quote(password, safe='')}@"
    with_credentials = parse_git_url(f"{scheme}://{userinfo}{host}/srv/r.git")
    without = parse_git_url(f"{scheme}://{host}/srv/r.git")
    assert with_credentials.url == without.url
    assert with_credentials == without  # credentials take no part in comparisons
    assert with_credentials.credentials == Credentials(user, password)
    assert password not in repr(with_credentials) or password in repr(without)
