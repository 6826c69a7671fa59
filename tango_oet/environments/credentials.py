"""Hand a request's repository credentials to git through its environment, for one origin only.

git asks its credential helpers when a server wants authentication. We replace the configured
helpers (so the server user's own helper neither answers nor *stores* a request's password)
with one inline shell helper that prints the credentials from environment variables, and only
when git asks for the origin (scheme, host and port) of the requested URL: a redirect to
another host gets nothing. The configuration goes in `GIT_CONFIG_COUNT`/`GIT_CONFIG_KEY_n`
variables, not `-c` options, so nothing of it is on a command line; the secret itself is in
`OET_GIT_PASSWORD`, readable only by the server's user (and root) through /proc.
"""

from __future__ import annotations

from collections.abc import Mapping

from tango_oet.domain.urls import Credentials, parse_git_url

USERNAME_VAR = "OET_GIT_USERNAME"
PASSWORD_VAR = "OET_GIT_PASSWORD"
ORIGIN_VAR = "OET_GIT_ORIGIN"

# git runs a helper starting with "!" as a shell command with the action ("get", "store",
# "erase") appended; it writes `key=value` lines on the helper's stdin and reads its stdout.
HELPER = (
    '!f() { test "$1" = get || return 0; p=; h=; '
    'while IFS= read -r l; do case "$l" in '
    "protocol=*) p=${l#protocol=};; host=*) h=${l#host=};; esac; done; "
    f'test "$p://$h" = "${ORIGIN_VAR}" || return 0; '
    f'printf \'username=%s\\npassword=%s\\n\' "${USERNAME_VAR}" "${PASSWORD_VAR}"; }}; f'
)
_HTTP = ("http", "https")


def credential_env(repo: str, credentials: Credentials, base: Mapping[str, str]) -> dict[str, str]:
    """Variables to add to git's environment so it can authenticate to `repo` (http/https).

    Other schemes never consult credential helpers (ssh has its own keys), so for them the
    credentials are not handed over at all. `base` is the environment they are added to:
    configuration entries already given through GIT_CONFIG_COUNT are kept.
    """
    url = parse_git_url(repo)
    if url.scheme not in _HTTP:
        return {}
    start = _count(base)
    entries = [("credential.helper", ""), ("credential.helper", HELPER)]
    env = {
        f"GIT_CONFIG_{kind}_{start + i}": value
        for i, (key, helper) in enumerate(entries)
        for kind, value in (("KEY", key), ("VALUE", helper))
    }
    host = url.host if url.port is None else f"{url.host}:{url.port}"
    env.update(
        {
            "GIT_CONFIG_COUNT": str(start + len(entries)),
            ORIGIN_VAR: f"{url.scheme}://{host}",
            USERNAME_VAR: credentials.username,
            PASSWORD_VAR: credentials.password,
        }
    )
    return env


def _count(base: Mapping[str, str]) -> int:
    try:
        return max(0, int(base.get("GIT_CONFIG_COUNT", "0")))
    except ValueError:
        return 0
