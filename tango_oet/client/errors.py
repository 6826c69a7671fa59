"""Typed client exceptions: each Tango `DevFailed` becomes a subclass chosen by its reason code.

    try:
        oet.procedure(99)
    except UnknownProcedure as exc:
        print(exc.reason, exc.desc)      # OET_UnknownProcedure  no procedure with id 99

The OET reasons are the domain errors' `reason` values (tango_oet.domain.errors), so server and
client cannot drift apart. Connection problems (no database, unknown device, device not running,
timeout) get their own classes, so a CLI can say what to do instead of printing a CORBA stack.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import tango

from tango_oet.domain import errors as domain
from tango_oet.domain.states import ProcedureState
from tango_oet.domain.text import from_tango


@dataclass(frozen=True)
class ErrorItem:
    """One entry of a DevFailed's error stack."""

    reason: str
    desc: str
    origin: str


class ClientError(Exception):
    """Base of every exception this client raises."""


class DeviceError(ClientError):
    """A Tango call failed; `reason` and `desc` come from the most telling entry of the stack.

    Subclasses declare the reason codes they stand for in `reasons`; `from_devfailed` picks the
    class of the first stack entry whose reason is registered.
    """

    reasons: ClassVar[tuple[str, ...]] = ()
    _registry: ClassVar[dict[str, type[DeviceError]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for reason in cls.reasons:
            DeviceError._registry[reason] = cls

    def __init__(
        self,
        reason: str,
        desc: str,
        origin: str = "",
        stack: Sequence[ErrorItem] = (),
        device: str = "",
    ) -> None:
        self.reason = reason
        self.desc = " ".join(desc.split())  # one line: Tango descs often carry newlines
        self.origin = origin
        self.stack = tuple(stack)
        self.device = device
        super().__init__(self.message())

    def message(self) -> str:
        """What a person should read (the CLI prints exactly this)."""
        return f"{self.reason}: {self.desc}"

    @classmethod
    def for_reason(cls, reason: str) -> type[DeviceError]:
        return cls._registry.get(reason, DeviceError)

    @staticmethod
    def from_devfailed(exc: tango.DevFailed, device: str = "") -> DeviceError:
        stack = [
            ErrorItem(str(e.reason), from_tango(str(e.desc)), str(e.origin))
            for e in exc.args
            if e is not None
        ]
        if not stack:
            return DeviceError("API_Unknown", str(exc), device=device)
        chosen = next((e for e in stack if e.reason in DeviceError._registry), stack[0])
        kind = DeviceError.for_reason(chosen.reason)
        if kind is DeviceError and chosen.reason == "API_CorbaException":
            # A bare CORBA failure: its desc names the system exception.
            if "TIMEOUT" in chosen.desc.upper() or "CALLTIMEDOUT" in chosen.desc.upper():
                kind = CommunicationTimeout
            elif "TRANSIENT" in chosen.desc.upper() or "COMM_FAILURE" in chosen.desc.upper():
                kind = DeviceNotRunning
        return kind(chosen.reason, chosen.desc, chosen.origin, stack, device)


# ---- errors the OETScheduler raises (INTERFACE.md), one per domain reason --------------------
class InvalidRequest(DeviceError):
    """Malformed or inconsistent input; the desc names the offending field."""

    reasons = (domain.InvalidRequest.reason,)


class UnknownProcedure(DeviceError):
    """No procedure with this id is in the history."""

    reasons = (domain.UnknownProcedure.reason,)


class IllegalTransition(DeviceError):
    """The request is not allowed in the procedure's current state."""

    reasons = (domain.IllegalTransition.reason,)


class ScriptNotAllowed(DeviceError):
    """The script location is outside what the server allows (ScriptRoots, GitAllowList)."""

    reasons = (domain.ScriptNotAllowed.reason,)


class CapacityExceeded(DeviceError):
    """A configured limit (MaxRunning) would be exceeded."""

    reasons = (domain.CapacityExceeded.reason,)


class ServiceUnavailable(DeviceError):
    """The engine is shutting down or broken (the device is FAULT).

    Also raised for `OET_StoreUnavailable`: the durable store cannot be written (e.g. a
    Prepare could not reserve its id on a full disk); `reason` tells the two apart and `desc`
    names the store file and the error.
    """

    reasons = (domain.ServiceUnavailable.reason, domain.StoreUnavailable.reason)


class EnvironmentFailed(DeviceError):
    """Resolving a git reference, cloning or building an environment failed."""

    reasons = (domain.EnvironmentFailed.reason,)


#: Every OET reason of the interface and its class (tests check the table is complete).
OET_ERRORS: dict[str, type[DeviceError]] = {
    reason: cls
    for cls in (
        InvalidRequest,
        UnknownProcedure,
        IllegalTransition,
        ScriptNotAllowed,
        CapacityExceeded,
        ServiceUnavailable,
        EnvironmentFailed,
    )
    for reason in cls.reasons
}


# ---- reaching the device -----------------------------------------------------------------
class ConnectionFailed(DeviceError):
    """The device could not be reached at all (base of the more specific cases below)."""


_DB_DESC = re.compile(r"host\s+(\S+)\s+with\s+port\s+(\d+)")


class NoDatabase(ConnectionFailed):
    """No Tango database answers at TANGO_HOST (or TANGO_HOST is not set)."""

    reasons = ("API_CantConnectToDatabase", "API_TangoHostNotSet", "DB_SQLError")

    @property
    def tango_host(self) -> str | None:
        """host:port of the database that did not answer, when the error names it."""
        for item in (*self.stack, ErrorItem(self.reason, self.desc, "")):
            match = _DB_DESC.search(item.desc)
            if match:
                return f"{match.group(1)}:{match.group(2)}"
        return None

    def message(self) -> str:
        if self.reason == "API_TangoHostNotSet":
            return "TANGO_HOST is not set — set it, or start a database with `tango-oet up`"
        where = self.tango_host or "TANGO_HOST"
        return f"no Tango database at {where} — start one with `tango-oet up`"


class DeviceNotFound(ConnectionFailed):
    """The device name is not defined in the Tango database."""

    reasons = ("DB_DeviceNotDefined", "API_DeviceNotDefined")

    def message(self) -> str:
        return f"device {self.device or '?'} is not defined in the Tango database ({self.desc})"


class DeviceNotRunning(ConnectionFailed):
    """The device is defined but its server is not running, or does not answer."""

    reasons = (
        "API_DeviceNotExported",
        "API_CantConnectToDevice",
        "API_ServerNotRunning",
    )

    def message(self) -> str:
        return f"device {self.device or '?'} is not running or does not answer ({self.desc})"


class CommunicationTimeout(ConnectionFailed):
    """The device did not answer within the client timeout."""

    reasons = ("API_DeviceTimedOut",)

    def message(self) -> str:
        return f"device {self.device or '?'} did not answer in time ({self.desc})"


class AttributeNotFound(DeviceError):
    """The attribute does not exist (e.g. `procedure7State` after 7 left the history)."""

    reasons = ("API_AttrNotFound",)


# ---- waiting -----------------------------------------------------------------------------
class WaitTimeout(ClientError, TimeoutError):
    """A wait ran out of time; says what it waited for and the last state it saw."""

    def __init__(
        self,
        procedure_id: int,
        wanted: Sequence[ProcedureState],
        last_state: ProcedureState | None,
        timeout: float,
        detail: str = "",
    ) -> None:
        self.procedure_id = procedure_id
        self.wanted = tuple(wanted)
        self.last_state = last_state
        self.timeout = timeout
        names = "|".join(s.name for s in self.wanted) or "a final state"
        last = last_state.name if last_state is not None else "nothing (no state event received)"
        extra = f"; {detail}" if detail else ""
        super().__init__(
            f"procedure {procedure_id} did not reach {names} within {timeout:g} s;"
            f" last observed state: {last}{extra}"
        )


class UnexpectedFinalState(ClientError):
    """The procedure ended in a final state other than the one waited for."""

    def __init__(
        self, procedure_id: int, wanted: Sequence[ProcedureState], state: ProcedureState
    ) -> None:
        self.procedure_id = procedure_id
        self.wanted = tuple(wanted)
        self.state = state
        names = "|".join(s.name for s in self.wanted)
        super().__init__(f"procedure {procedure_id} ended {state.name}, not {names}")


@contextmanager
def translated(device: str = "") -> Iterator[None]:
    """Turn any DevFailed raised inside into the matching typed DeviceError."""
    try:
        yield
    except tango.DevFailed as exc:
        raise DeviceError.from_devfailed(exc, device) from None
