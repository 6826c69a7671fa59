"""Git repository URLs: one canonical form for matching and cloning, credentials kept apart.

A URL is normalised once, when a request is parsed, and that form is what the allow-list is
matched against, what git clones and what every summary shows: scheme and host lower-case,
default ports dropped, percent-escapes of unreserved characters decoded, `.`/`..` segments
resolved (a path that climbs above its root is refused), duplicate and trailing slashes removed.
Credentials (`https://user:secret@host/...`) are cut out of the URL into `Credentials`, whose
repr shows nothing; `redact_text` removes them from any text that might still carry them.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

SCHEMES = ("https", "http", "ssh", "git", "file")
_DEFAULT_PORTS = {"https": 443, "http": 80, "ssh": 22, "git": 9418}
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# Kept as they are in a path (RFC 3986 pchar minus '%'); anything else is percent-encoded.
_PATH_SAFE = _UNRESERVED | frozenset("!$&'()*+,;=:@/")
_URL_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_SCP_RE = re.compile(r"^(?:([^@/:\[\]]+)@)?([A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\]):(?!//)(.*)$")
_HOST_RE = re.compile(r"^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$")
_FORBIDDEN_ESCAPES = {"2F": "an encoded '/'", "5C": "an encoded '\\'", "00": "an encoded NUL"}
# `scheme://userinfo@` anywhere in a text (git, pip and uv echo URLs in their messages).
_USERINFO_RE = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s'\"<>]*@")
_REDACTED = "***"
_MIN_SECRET_LEN = 4  # shorter values are only removed from URLs: replacing them everywhere
# would garble every message ("a" is in most words) while hiding nothing


class GitUrlError(ValueError):
    """A repository URL that cannot be used; the message never holds its credentials."""


@dataclass(frozen=True)
class Credentials:
    """User name and password cut out of a repository URL; never shown, never compared."""

    username: str = field(repr=False)
    password: str = field(repr=False, default="")

    def __repr__(self) -> str:
        return "Credentials(<redacted>)"

    def secrets(self) -> tuple[str, ...]:
        """Every form the values could appear in (as given, and percent-encoded as in a URL)."""
        found: set[str] = set()
        for value in (self.username, self.password):
            if value:
                found.update({value, _quote(value, _UNRESERVED)})
        return tuple(sorted(found, key=len, reverse=True))


@dataclass(frozen=True)
class GitUrl:
    """A repository URL in canonical form without credentials, and the credentials it had."""

    url: str
    scheme: str  # one of SCHEMES, or "scp" for `[user@]host:path`
    host: str  # lower-case; empty for file://
    port: int | None  # None when absent or the scheme's default
    path: str  # canonical: no dot segments, no duplicate or trailing slash
    user: str | None = None  # ssh login kept in `url` (not a secret); None otherwise
    credentials: Credentials | None = field(default=None, repr=False, compare=False)

    @property
    def anonymous(self) -> str:
        """`url` without the ssh user: the form patterns without a scheme are matched to."""
        if self.scheme == "scp":
            return f"{self.host}:{self.path}"
        return f"{self.scheme}://{_netloc(None, self.host, self.port)}{self.path}"


def parse_git_url(text: str) -> GitUrl:
    """Normalise a repository URL (https, http, ssh, git, file, or scp-like `user@host:path`)."""
    if not isinstance(text, str) or not text:
        raise GitUrlError("must be a non-empty URL string")
    _check_characters(text)
    match = _URL_RE.match(text)
    if match:
        return _parse_url(text, match.group(1).lower())
    scp = _SCP_RE.match(text)
    if scp:
        return _parse_scp(scp.group(1), scp.group(2), scp.group(3))
    # Echoed only without '@': whatever precedes one could be a secret in a malformed URL.
    shown = f", got {text!r}" if "@" not in text else ""
    raise GitUrlError(
        f"must be a URL (https://, http://, ssh://, git://, file://) or user@host:path{shown}"
    )


def normalise_git_url(text: str) -> str:
    """The canonical, credential-free form of a repository URL (see `parse_git_url`)."""
    return parse_git_url(text).url


def git_url_allowed(url: str | GitUrl, patterns: Iterable[str]) -> bool:
    """Whether the normalised `url` matches one of the fnmatch `patterns`.

    A pattern with a scheme (`https://*.example.org/group/*`) is matched part by part: the
    scheme exactly, the host with fnmatch (so a `*` there cannot reach into the path), the port,
    and the path with fnmatch (a `*` there spans `/`, so `group/*` takes subgroups); a host of
    `*` takes any host and port, and a pattern without a path every repository of its host(s).
    Patterns are normalised like URLs; a trailing `.git` is ignored on both sides, and so is
    the ssh user. `*` alone allows everything; any other pattern is matched against the whole
    credential-free URL.
    """
    parsed = url if isinstance(url, GitUrl) else parse_git_url(url)
    return any(_matches(parsed, pattern) for pattern in patterns)


def check_pattern(pattern: str) -> str:
    """Return the pattern stripped, or raise GitUrlError if no normalised URL can match it.

    A `..` segment would never match (URLs have none once normalised), so it is a mistake;
    a password in a pattern would be shown wherever the allow-list is.
    """
    stripped = pattern.strip()
    if not stripped:
        raise GitUrlError("an allow-list pattern must not be empty")
    if any(segment == ".." for segment in re.split(r"[/:]", stripped)):
        raise GitUrlError(f"allow-list pattern {redact_text(stripped)!r} has a '..' segment")
    match = _URL_RE.match(stripped)
    if match and ":" in stripped[match.end() :].partition("/")[0].rpartition("@")[0]:
        raise GitUrlError(f"allow-list pattern {redact_text(stripped)!r} holds a password")
    return stripped


def redact_text(text: str, secrets: Sequence[str] = ()) -> str:
    """`text` without URL credentials (`scheme://user:pw@` becomes `scheme://***@`) and without
    the given secret values (those of at least 4 characters)."""
    out = _USERINFO_RE.sub(lambda m: f"{m.group(1)}{_REDACTED}@", text)
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= _MIN_SECRET_LEN:
            out = out.replace(secret, _REDACTED)
    return out


# ---- parsing ------------------------------------------------------------------------------
def _check_characters(text: str) -> None:
    for ch in text:
        if ord(ch) < 0x20 or ord(ch) == 0x7F:
            raise GitUrlError("must not contain control characters")
        if ch == " ":
            raise GitUrlError("must not contain spaces (percent-encode them as %20)")
        if ch == "\\":
            raise GitUrlError("must not contain '\\'")
        if ch in "?#":
            raise GitUrlError(f"must not contain {ch!r} (no query or fragment in a repository URL)")


def _parse_url(text: str, scheme: str) -> GitUrl:
    if scheme not in SCHEMES:
        raise GitUrlError(f"scheme {scheme!r} is not supported; use one of {list(SCHEMES)}")
    try:
        parts = urlsplit(text)
    except ValueError as exc:  # e.g. "Invalid IPv6 URL"
        raise GitUrlError(f"cannot be parsed: {exc}") from None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, password = _userinfo(userinfo)
    host, port = _host_port(scheme, hostport)
    path = _canonical_path(parts.path, absolute=True)
    if scheme == "file":
        if host not in ("", "localhost"):
            raise GitUrlError(f"file:// URLs name a local path; host {host!r} is not supported")
        host = ""
    if path == "/":
        raise GitUrlError("names no repository (empty path)")
    credentials: Credentials | None = None
    keep_user: str | None = None
    if scheme == "ssh":
        if password:
            raise GitUrlError("an ssh:// URL cannot carry a password; use an SSH key")
        keep_user = user
    elif user is not None or password is not None:
        credentials = Credentials(user or "", password or "")
    netloc = _netloc(keep_user, host, port)
    return GitUrl(
        url=f"{scheme}://{netloc}{path}",
        scheme=scheme,
        host=host,
        port=port,
        path=path,
        user=keep_user,
        credentials=credentials,
    )


def _parse_scp(user: str | None, host: str, path: str) -> GitUrl:
    if "@" in path or ":" in path:
        # `git:pw@host:r` would read as host `git`, path `pw@host:r`: a password in plain sight.
        raise GitUrlError("a [user@]host:path URL must have no '@' or ':' in its path")
    host = _canonical_host(host)
    if user is not None:
        user = _check_credential(unquote(user), "user name")
        if ":" in user:
            raise GitUrlError("a user@host:path URL cannot carry a password; use an SSH key")
    absolute = path.startswith("/")
    canonical = _canonical_path(path, absolute=absolute)
    if canonical in ("", "/"):
        raise GitUrlError("names no repository (empty path)")
    prefix = f"{_quote(user, _UNRESERVED)}@" if user else ""
    return GitUrl(
        url=f"{prefix}{host}:{canonical}",
        scheme="scp",
        host=host,
        port=None,
        path=canonical,
        user=user,
    )


def _userinfo(userinfo: str) -> tuple[str | None, str | None]:
    user_raw, colon, password_raw = userinfo.partition(":")
    user = _check_credential(unquote(user_raw), "user name") if user_raw else None
    password = _check_credential(unquote(password_raw), "password") if colon else None
    return user, password


def _check_credential(value: str, what: str) -> str:
    if any(ch in value for ch in "\r\n\0"):
        # git's credential protocol is line based: a newline would inject fields.
        raise GitUrlError(f"the {what} in the URL must not contain line breaks or NUL")
    return value


def _host_port(scheme: str, hostport: str) -> tuple[str, int | None]:
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise GitUrlError("has an unterminated IPv6 address")
        host, rest = hostport[: end + 1], hostport[end + 1 :]
    else:
        host, colon, port_text = hostport.partition(":")
        rest = colon + port_text
    port: int | None = None
    if rest:
        if not rest.startswith(":") or not rest[1:].isdigit() or not rest[1:].isascii():
            raise GitUrlError("has an invalid port")
        port = int(rest[1:])
        if not 0 < port < 65536:
            raise GitUrlError(f"port {port} is out of range")
    if scheme == "file":
        if port is not None:
            raise GitUrlError("a file:// URL has no port")
        return host.lower(), None
    if not host:
        raise GitUrlError(f"a {scheme}:// URL needs a host")
    if port == _DEFAULT_PORTS.get(scheme):
        port = None
    return _canonical_host(host), port


def _canonical_host(host: str) -> str:
    if host.startswith("["):
        try:
            address = ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise GitUrlError("has an invalid IPv6 address") from None
        return f"[{address.compressed}]"
    lowered = unquote(host).lower().rstrip(".")  # `example.org.` is `example.org`
    if not lowered.isascii() or not _HOST_RE.match(lowered):
        raise GitUrlError(f"host {lowered!r} is not a valid host name")
    return lowered


def _canonical_path(raw: str, *, absolute: bool) -> str:
    """Percent-escapes normalised, dot segments resolved, empty segments dropped."""
    decoded = _normalise_escapes(raw)
    stack: list[str] = []
    for segment in decoded.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if not stack:
                raise GitUrlError("its path climbs above the root with '..'")
            stack.pop()
            continue
        stack.append(segment)
    joined = "/".join(stack)
    return f"/{joined}" if absolute else joined


def _normalise_escapes(raw: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "%":
            code = raw[i + 1 : i + 3]
            if len(code) != 2 or not all(c in "0123456789abcdefABCDEF" for c in code):
                raise GitUrlError("has a '%' that does not start a percent-escape")
            code = code.upper()
            if code in _FORBIDDEN_ESCAPES or int(code, 16) < 0x20 or code == "7F":
                # git decodes escapes in file://, ssh:// and git:// paths: an encoded separator
                # or control character would mean something else after the check.
                what = _FORBIDDEN_ESCAPES.get(code, "an encoded control character")
                raise GitUrlError(f"its path holds {what}")
            char = chr(int(code, 16))
            out.append(char if char in _UNRESERVED else f"%{code}")
            i += 3
            continue
        out.append(ch if ch in _PATH_SAFE else _quote(ch, frozenset()))
        i += 1
    return "".join(out)


def _quote(value: str, safe: frozenset[str]) -> str:
    return "".join(
        ch if ch in safe else "".join(f"%{b:02X}" for b in ch.encode("utf-8")) for ch in value
    )


def _netloc(user: str | None, host: str, port: int | None) -> str:
    prefix = f"{_quote(user, _UNRESERVED)}@" if user else ""
    suffix = f":{port}" if port is not None else ""
    return f"{prefix}{host}{suffix}"


# ---- matching -----------------------------------------------------------------------------
def _strip_git(path: str) -> str:
    return path.removesuffix("/").removesuffix(".git")


def _same_repo_match(value: str, pattern: str) -> bool:
    """fnmatch where `r` and `r.git` name the same repository, in the value and the pattern."""
    bare, bare_pattern = _strip_git(value), _strip_git(pattern)
    return (
        fnmatch.fnmatchcase(bare, bare_pattern)
        or fnmatch.fnmatchcase(bare + ".git", pattern)  # `.../r.git*`, `.../*.git`
        or fnmatch.fnmatchcase(bare, pattern)
    )


def _matches(url: GitUrl, pattern: str) -> bool:
    pattern = pattern.strip()
    if pattern == "*":
        return True
    match = _URL_RE.match(pattern)
    if match:
        if url.scheme == "scp":
            return False
        scheme = match.group(1).lower()
        rest = pattern[match.end() :]
        netloc, slash, path = rest.partition("/")
        hostport = netloc.rpartition("@")[2]
        if scheme != url.scheme:
            return False
        if hostport != "*":  # `https://*`, `file://*`: any host, any port
            host, port = _pattern_host_port(hostport, scheme)
            if not fnmatch.fnmatchcase(url.host, host) or port != url.port:
                return False
        # No path in the pattern (`https://git.example.org`): every repository of the host.
        return not slash or _same_repo_match(url.path, _pattern_path(slash + path))
    scp = _SCP_RE.match(pattern)
    if scp and url.scheme == "scp":
        host = scp.group(2).lower().rstrip(".")
        return fnmatch.fnmatchcase(url.host, host) and _same_repo_match(
            url.path, _pattern_path(scp.group(3))
        )
    return _same_repo_match(url.anonymous, pattern)


def _pattern_host_port(hostport: str, scheme: str) -> tuple[str, int | None]:
    if hostport.startswith("["):
        host, _, rest = hostport.partition("]")
        host += "]"
        port_text = rest.removeprefix(":")
    else:
        host, _, port_text = hostport.partition(":")
    port = int(port_text) if port_text.isdigit() else None
    if port == _DEFAULT_PORTS.get(scheme):
        port = None
    host = host.lower().rstrip(".")
    if scheme == "file" and host == "localhost":
        host = ""
    return host, port


def _pattern_path(path: str) -> str:
    """A pattern's path canonicalised like a URL's, keeping its wildcards."""
    decoded = _normalise_pattern_escapes(path)
    segments = [s for s in decoded.split("/") if s not in ("", ".")]
    joined = "/".join(segments)
    return f"/{joined}" if path.startswith("/") else joined


def _normalise_pattern_escapes(path: str) -> str:
    def decode(m: re.Match[str]) -> str:
        char = chr(int(m.group(1), 16))
        return char if char in _UNRESERVED else f"%{m.group(1).upper()}"

    return re.sub(r"%([0-9A-Fa-f]{2})", decode, path)
