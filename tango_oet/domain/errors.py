"""Typed domain errors, each with a stable reason code that the device maps to DevFailed."""

from __future__ import annotations


class OETError(Exception):
    """Base of every error a client can cause or see; `reason` is stable API."""

    reason = "OET_Error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(OETError):
    """Malformed or inconsistent input; the message names the offending field."""

    reason = "OET_InvalidRequest"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class UnknownProcedure(OETError):
    """No procedure with this id is in the history."""

    reason = "OET_UnknownProcedure"

    def __init__(self, procedure_id: int) -> None:
        super().__init__(f"no procedure with id {procedure_id}")
        self.procedure_id = procedure_id


class IllegalTransition(OETError):
    """The request is not allowed in the procedure's current state."""

    reason = "OET_IllegalTransition"

    def __init__(self, procedure_id: int, state: str, action: str) -> None:
        super().__init__(f"procedure {procedure_id} is {state}: cannot {action}")
        self.procedure_id = procedure_id
        self.state = state
        self.action = action


class ScriptNotAllowed(OETError):
    """The script location is outside what the server's configuration allows.

    `rule` is the property that refused it (ScriptRoots, GitAllowList, AllowEmbedded), when
    one did; the message names it too.
    """

    reason = "OET_ScriptNotAllowed"

    def __init__(self, message: str, rule: str | None = None) -> None:
        super().__init__(message)
        self.rule = rule


class CapacityExceeded(OETError):
    """A configured limit (e.g. max running procedures) would be exceeded."""

    reason = "OET_CapacityExceeded"


class ServiceUnavailable(OETError):
    """The engine is shutting down or broken."""

    reason = "OET_ServiceUnavailable"


class StoreUnavailable(OETError):
    """The durable store (history, ids, queue) cannot be opened or written; names the file."""

    reason = "OET_StoreUnavailable"


class EnvironmentFailed(OETError):
    """Resolving a git reference, cloning or building an environment failed."""

    reason = "OET_EnvironmentFailed"


# Transitional alias (the environments package was written against this name).
EnvironmentError_ = EnvironmentFailed
