"""The per-procedure dynamic attributes, described once.

Each procedure in the history has `procedure<ID>State` (DevEnum, labels = ProcedureState names
in value order) and `procedure<ID>Summary` (DevString JSON). This table is the only place that
says what they are; the device creates and removes them through two helpers that use it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import tango
from tango.server import attribute

from tango_oet.device.model import state_attribute, summary_attribute
from tango_oet.domain.states import ProcedureState

STATE_LABELS: tuple[str, ...] = tuple(s.name for s in sorted(ProcedureState))

_NAME_RE = re.compile(r"^procedure([1-9][0-9]*)(State|Summary)$", re.IGNORECASE)


@dataclass(frozen=True)
class ProcedureAttribute:
    """One kind of per-procedure attribute."""

    kind: str  # "State" or "Summary"
    dtype: Any
    enum_labels: tuple[str, ...] | None
    archive: bool
    doc: str

    def name(self, procedure_id: int) -> str:
        return (
            state_attribute(procedure_id)
            if self.kind == "State"
            else summary_attribute(procedure_id)
        )

    def build(self, procedure_id: int) -> Any:
        """The pytango attribute definition for one procedure (read-only, events pushed)."""
        kwargs: dict[str, Any] = {}
        if self.enum_labels is not None:
            kwargs["enum_labels"] = list(self.enum_labels)
        return attribute(
            name=self.name(procedure_id),
            dtype=self.dtype,
            access=tango.AttrWriteType.READ,
            doc=self.doc.format(id=procedure_id),
            **kwargs,
        )


PROCEDURE_ATTRIBUTES: tuple[ProcedureAttribute, ...] = (
    ProcedureAttribute(
        kind="State",
        dtype=tango.CmdArgType.DevEnum,
        enum_labels=STATE_LABELS,
        archive=True,
        doc="Lifecycle state of procedure {id}",
    ),
    ProcedureAttribute(
        kind="Summary",
        dtype=tango.CmdArgType.DevString,
        enum_labels=None,
        archive=False,
        doc="JSON summary of procedure {id} (state, script, calls, history, progress, error)",
    ),
)


def parse_attribute_name(name: str) -> tuple[int, str] | None:
    """`procedure7State` -> (7, "State"); None for any other attribute name."""
    match = _NAME_RE.match(name)
    if match is None:
        return None
    kind = "State" if match.group(2).lower() == "state" else "Summary"
    return int(match.group(1)), kind
