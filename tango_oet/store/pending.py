"""Changes enqueued but not yet committed, coalesced so that what is kept stays bounded.

The engine enqueues small tuples (cheap); the writer folds them in here. Only the latest
summary of a procedure matters (a summary holds its whole history), and only the tail of
output and user events is ever kept, so a failing disk cannot make this grow without bound.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from tango_oet.store.options import StoreOptions
from tango_oet.store.records import QueueItemRecord

# Operation tags: the first element of each enqueued tuple.
SUMMARY = 0  # (SUMMARY, summary)
OUTPUT = 1  # (OUTPUT, procedure_id, lines)
EVENT = 2  # (EVENT, procedure_id, event)
REMOVE = 3  # (REMOVE, procedure_id)
QUEUE = 4  # (QUEUE, QueueChange)
SYNC = 5  # (SYNC, Sync)
STOP = 6  # (STOP,)


@dataclass(frozen=True)
class QueueChange:
    """One atomic change of the queue: applied in the same transaction, or not at all."""

    state: str | None
    items: tuple[QueueItemRecord, ...]
    removed: tuple[int, ...]


@dataclass
class Sync:
    """Someone waits for this: committed with everything enqueued before it, then `done` is set.

    `counter` is a durable id reservation (`max`) or a return of unused ids at close (`set`);
    `call` runs inside the transaction (recovery) and its value becomes the result.
    """

    done: Future[Any] = field(default_factory=Future)
    counter: tuple[str, int, str] | None = None  # (kind, value, "max" | "set")
    call: Callable[[Any], Any] | None = None


class Pending:
    """Guarded by the writer thread: nothing else touches it."""

    def __init__(self, options: StoreOptions) -> None:
        self._options = options
        self.summaries: dict[int, Any] = {}
        self.removed: set[int] = set()
        self.output: dict[int, collections.deque[str]] = {}
        self.events: dict[int, collections.deque[dict[str, Any]]] = {}
        self.queue_state: str | None = None
        self.queue_items: dict[int, QueueItemRecord] = {}
        self.queue_removed: set[int] = set()
        self.syncs: list[Sync] = []
        self.stop = False
        self.changes = 0  # absorbed since the last successful commit

    def empty(self) -> bool:
        return not (
            self.summaries
            or self.removed
            or self.output
            or self.events
            or self.queue_state is not None
            or self.queue_items
            or self.queue_removed
            or self.syncs
            or self.stop
        )

    @property
    def urgent(self) -> bool:
        """Someone waits: commit now instead of gathering more."""
        return bool(self.syncs) or self.stop

    def absorb(self, op: tuple[Any, ...]) -> None:
        self.changes += 1
        tag = op[0]
        if tag == SUMMARY:
            summary = op[1]
            if isinstance(summary, str):
                summary = Parsed.of(summary)
            pid = _summary_id(summary)
            self.summaries[pid] = summary
            self.removed.discard(pid)
        elif tag == OUTPUT:
            tail = self.output.get(op[1])
            if tail is None:
                tail = self.output[op[1]] = collections.deque(maxlen=self._options.output_lines)
            tail.extend(op[2])
        elif tag == EVENT:
            events = self.events.get(op[1])
            if events is None:
                events = self.events[op[1]] = collections.deque(maxlen=self._options.user_events)
            events.append(op[2])
        elif tag == REMOVE:
            pid = op[1]
            self.summaries.pop(pid, None)
            self.output.pop(pid, None)
            self.events.pop(pid, None)
            self.removed.add(pid)
        elif tag == QUEUE:
            change: QueueChange = op[1]
            if change.state is not None:
                self.queue_state = change.state
            for item in change.items:
                self.queue_items[item.id] = item
                self.queue_removed.discard(item.id)
            for item_id in change.removed:
                self.queue_items.pop(item_id, None)
                self.queue_removed.add(item_id)
        elif tag == SYNC:
            self.syncs.append(op[1])
        elif tag == STOP:
            self.stop = True
        else:  # a bug in the Store facade, not in the data
            raise ValueError(f"unknown store operation {op!r}")

    def take_syncs(self) -> list[Sync]:
        syncs, self.syncs = self.syncs, []
        return syncs

    def clear_data(self) -> None:
        """After a successful commit: everything but `stop` is on disk."""
        self.summaries.clear()
        self.removed.clear()
        self.output.clear()
        self.events.clear()
        self.queue_state = None
        self.queue_items.clear()
        self.queue_removed.clear()
        self.changes = 0


@dataclass(frozen=True)
class Parsed:
    """A summary that arrived as JSON text: parsed once, stored as the text it came as."""

    obj: Any  # None when the text is not JSON
    text: str

    @classmethod
    def of(cls, text: str) -> Parsed:
        try:
            return cls(json.loads(text), text)
        except ValueError:
            return cls(None, text)


def _summary_id(summary: Any) -> int:
    """The procedure id of a summary given as an object, a JSON object or JSON text."""
    if isinstance(summary, Parsed):
        pid = summary.obj.get("id") if isinstance(summary.obj, dict) else None
    elif isinstance(summary, dict):
        pid = summary.get("id")
    else:
        pid = getattr(summary, "id", None)
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        # Keyed apart so it is reported at commit time (with its text) instead of here.
        return -id(summary)
    return pid
