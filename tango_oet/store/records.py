"""What the store gives back: restored procedures, output, user events, the queue, recoveries."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from tango_oet.domain.scripts import EmbeddedScript
from tango_oet.domain.summary import ProcedureSummary, summary_from_json

#: The id sequences a store keeps; each is monotonic and never reuses an id, across restarts.
IdKind = Literal["procedure", "queue_item"]
ID_KINDS: tuple[IdKind, ...] = ("procedure", "queue_item")

QUEUE_STATES = ("IDLE", "RUNNING", "STOPPING")
LIVE_ITEM_STATES = ("PENDING", "WAITING", "RUNNING")
FINAL_ITEM_STATES = ("COMPLETE", "FAILED", "STOPPED")


@dataclass(frozen=True)
class UserEventRecord:
    """One user event as `lastEvent` shows it: `{"id", "topic", "payload", "time", "seq"}`."""

    procedure_id: int
    event: dict[str, Any]


@dataclass(frozen=True)
class StoredProcedure:
    """One procedure as it was last recorded (or as recovery rewrote it)."""

    id: int
    state: str
    summary: dict[str, Any]  # the Summary JSON object of INTERFACE.md
    created: str  # ISO-8601 UTC of its first history entry
    updated: str  # ISO-8601 UTC of the last write
    output: tuple[str, ...] = ()  # its output tail, oldest first, without the "<id> " prefix
    events: tuple[dict[str, Any], ...] = ()  # its user-event tail, oldest first
    embedded_source: str | None = None  # the source text an embedded:// script ran

    def to_summary(self) -> ProcedureSummary:
        """The domain read model (raises ValueError naming the record if it cannot be read).

        The summary JSON does not hold an embedded script's source; the store keeps it apart
        (`embedded_sources`), so it is put back here.
        """
        try:
            summary = summary_from_json(dict(self.summary))
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            raise ValueError(
                f"stored procedure {self.id} is unreadable: {type(exc).__name__}: {exc}"
            ) from exc
        if self.embedded_source is not None and isinstance(summary.script, EmbeddedScript):
            script = EmbeddedScript(summary.script.name, self.embedded_source)
            summary = dataclasses.replace(summary, script=script)
        return summary


@dataclass(frozen=True)
class QueueItemRecord:
    """One queue item (INTERFACE.md "Queue"); `request` must already be free of credentials."""

    id: int
    name: str
    state: str  # PENDING | WAITING | RUNNING | COMPLETE | FAILED | STOPPED
    request: Mapping[str, Any]  # {"prepare": ..., "calls": [...], ...} as accepted
    added: str  # ISO-8601 UTC
    position: int | None = None  # run order among live items (0 = next); None once finished
    at: str | None = None
    continue_on_failure: bool = False
    procedure_id: int | None = None
    started: str | None = None
    ended: str | None = None
    note: str | None = None  # e.g. "started late: its time had passed"
    extra: Mapping[str, Any] = field(default_factory=dict)  # fields a later release adds

    def to_json(self) -> dict[str, Any]:
        """The item as the `queue` attribute shows it."""
        out: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "procedure": self.procedure_id,
            "at": self.at,
            "request": dict(self.request),
            "added": self.added,
            "started": self.started,
            "ended": self.ended,
            "continue_on_failure": self.continue_on_failure,
        }
        if self.note is not None:
            out["note"] = self.note
        out.update(self.extra)
        return out


@dataclass(frozen=True)
class QueueRecord:
    state: str = "IDLE"
    items: tuple[QueueItemRecord, ...] = ()  # pending, waiting and running, in run order
    finished: tuple[QueueItemRecord, ...] = ()  # the last finished items, newest last


@dataclass(frozen=True)
class Restored:
    """What a new server starts from (`Store.load`)."""

    procedures: tuple[StoredProcedure, ...]  # the last `limit`, oldest first
    output: tuple[str, ...]  # the device's last output lines, "<id> <line>", oldest first
    next_id: int  # the first procedure id this store will hand out
    next_queue_item_id: int
    queue: QueueRecord
    last_event: dict[str, Any] | None  # the newest user event of any procedure

    @property
    def summaries(self) -> list[dict[str, Any]]:
        """The Summary JSON of each restored procedure, oldest first."""
        return [p.summary for p in self.procedures]

    @property
    def last_procedure_id(self) -> int:
        """No id above it was ever handed out (0: none ever was)."""
        return self.next_id - 1


@dataclass(frozen=True)
class InterruptedProcedure:
    """A procedure that was not final when the server went away."""

    id: int
    state: str  # its state as last recorded, before recovery
    pid: int | None  # its worker's pid as last recorded (never kill by pid alone)
    summary: dict[str, Any]  # as recorded, or after `mark_interrupted` as rewritten


@dataclass(frozen=True)
class Recovery:
    """What `Store.mark_interrupted` changed."""

    time: str
    procedures: tuple[InterruptedProcedure, ...] = ()
    queue_items: tuple[int, ...] = ()  # items that were RUNNING and are now FAILED
    queue_was: str = "IDLE"


@dataclass(frozen=True)
class StoreStats:
    """Counters of the writer, for benchmarks and tests."""

    enqueued: int
    commits: int
    written_summaries: int
    written_lines: int
    failures: int
    rejected: int
