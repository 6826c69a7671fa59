"""Service layer: the ScriptExecutionService that owns procedure state, history and events."""

from tango_oet.service.admission import Admission
from tango_oet.service.config import ServiceConfig
from tango_oet.service.events import (
    EnvironmentsChanged,
    OutputAppended,
    ProcedureAdded,
    ProcedureRemoved,
    ServiceEvent,
    ServiceStatusChanged,
    StateChanged,
    SummaryChanged,
    UserEventPublished,
)
from tango_oet.service.service import ScriptExecutionService, make_service

__all__ = [
    "Admission",
    "EnvironmentsChanged",
    "OutputAppended",
    "ProcedureAdded",
    "ProcedureRemoved",
    "ScriptExecutionService",
    "ServiceConfig",
    "ServiceEvent",
    "ServiceStatusChanged",
    "StateChanged",
    "SummaryChanged",
    "UserEventPublished",
    "make_service",
]
