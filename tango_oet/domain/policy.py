"""Which script locations a server accepts: nothing unless a property allows it.

Deny by default (INTERFACE.md, "Safe by default"): an empty `ScriptRoots` refuses every
`file://` script, `AllowEmbedded` false refuses every `embedded://` script (and an empty
`GitAllowList` every git repository, checked by the environment manager). A refusal is
`ScriptNotAllowed` whose message names the property to set, so an operator who meets one knows
what to change. Pure: the caller resolves paths (symlinks, `..`) before asking.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tango_oet.domain.errors import ScriptNotAllowed


def check_file_allowed(requested: str, resolved: Path, roots: Sequence[Path]) -> None:
    """Raise ScriptNotAllowed unless `resolved` lies under one of the (resolved) `roots`.

    `requested` is the path as the client gave it, for the message.
    """
    if not roots:
        raise ScriptNotAllowed(
            f"script {requested} is not allowed: ScriptRoots is empty, so no file:// script "
            "may run; set the ScriptRoots property to the directories whose scripts may run",
            rule="ScriptRoots",
        )
    if not any(resolved.is_relative_to(r) for r in roots):
        allowed = ", ".join(str(r) for r in roots)
        raise ScriptNotAllowed(
            f"script {requested} is outside ScriptRoots ({allowed})", rule="ScriptRoots"
        )


def check_embedded_allowed(allowed: bool) -> None:
    """Raise ScriptNotAllowed unless embedded scripts are enabled."""
    if not allowed:
        raise ScriptNotAllowed(
            "embedded:// scripts are not allowed: AllowEmbedded is false; set the AllowEmbedded "
            "property to true to accept them",
            rule="AllowEmbedded",
        )
