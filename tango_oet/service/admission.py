"""Admission: a validated Prepare with its id, before anything is created (two-phase Prepare)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from tango_oet.domain.requests import PrepareRequest


@dataclass(frozen=True, eq=False)
class Admission:
    """What `ScriptExecutionService.admit` returns: `commit` it, or `abandon` it.

    Holds nothing but the request and an id that is never given again (an abandoned id stays
    unused). Either `commit` or `abandon` consumes it, once.
    """

    procedure_id: int
    request: PrepareRequest
    owner: object = field(repr=False)  # the service that admitted it
    _spent: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def spend(self) -> bool:
        """True the first time only (atomic: commit and abandon may race)."""
        return self._spent.acquire(blocking=False)
