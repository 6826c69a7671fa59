"""Pure domain model: states, script descriptors, requests, summaries and errors (no I/O)."""

from tango_oet.domain.errors import (
    CapacityExceeded,
    EnvironmentError_,
    EnvironmentFailed,
    IllegalTransition,
    InvalidRequest,
    OETError,
    ScriptNotAllowed,
    ServiceUnavailable,
    UnknownProcedure,
)
from tango_oet.domain.policy import check_embedded_allowed, check_file_allowed
from tango_oet.domain.requests import (
    PrepareRequest,
    ProcedureInput,
    StartRequest,
    StopRequest,
    parse_id,
    parse_prepare,
    parse_start,
    parse_stop,
)
from tango_oet.domain.scripts import EmbeddedScript, FilesystemScript, GitRef, GitScript, Script
from tango_oet.domain.states import (
    FINAL_STATES,
    STOPPABLE_STATES,
    TRANSITIONS,
    ProcedureState,
    Trigger,
    is_final,
    next_state,
)
from tango_oet.domain.summary import CallRecord, ErrorInfo, ProcedureSummary, Progress

__all__ = [
    "FINAL_STATES",
    "STOPPABLE_STATES",
    "TRANSITIONS",
    "CallRecord",
    "CapacityExceeded",
    "EmbeddedScript",
    "EnvironmentError_",
    "EnvironmentFailed",
    "ErrorInfo",
    "FilesystemScript",
    "GitRef",
    "GitScript",
    "IllegalTransition",
    "InvalidRequest",
    "OETError",
    "PrepareRequest",
    "ProcedureInput",
    "ProcedureState",
    "ProcedureSummary",
    "Progress",
    "Script",
    "ScriptNotAllowed",
    "ServiceUnavailable",
    "StartRequest",
    "StopRequest",
    "Trigger",
    "UnknownProcedure",
    "check_embedded_allowed",
    "check_file_allowed",
    "is_final",
    "next_state",
    "parse_id",
    "parse_prepare",
    "parse_start",
    "parse_stop",
]
