"""How long the store keeps things and how its writer trades latency for fewer commits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class StoreOptions:
    """Every knob of a Store; the defaults are what a device uses (docs/store.md)."""

    # Retention. 0 = no limit. Summaries are small (a few kB): kept for ever by default, so an
    # operator can always answer "what ran, with which arguments, at which commit".
    keep_procedures: int = 0
    output_lines: int = 1000  # per procedure
    user_events: int = 1000  # per procedure
    # Output and user-event tails are dropped for procedures older than the newest this many.
    tails_of_procedures: int = 10_000
    finished_queue_items: int = 10_000

    # Writing. A change is committed at most `commit_interval` s after it was enqueued (this is
    # what a kill -9 can lose); `flush`, `allocate_id` and recovery commit at once.
    commit_interval: float = 0.02
    max_batch: int = 20_000  # changes absorbed before a commit is forced
    # FULL: every commit is on disk before it counts (a power cut loses nothing committed).
    # NORMAL: a commit survives a crash of the server, not a power cut. One fsync per batch.
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    id_block: int = 64  # ids reserved per durable write; 1 = every id is its own commit
    retry_interval: float = 1.0  # first wait after a failed write; doubles up to the next
    max_retry_interval: float = 30.0
    busy_timeout_ms: int = 5000  # how long a commit waits for a sqlite3 CLI user's write lock

    def __post_init__(self) -> None:
        for name in (
            "keep_procedures",
            "output_lines",
            "user_events",
            "tails_of_procedures",
            "finished_queue_items",
            "busy_timeout_ms",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"StoreOptions.{name} must be an integer >= 0, got {value!r}")
        for name in ("max_batch", "id_block"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"StoreOptions.{name} must be an integer >= 1, got {value!r}")
        for name in ("commit_interval", "retry_interval", "max_retry_interval"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value < 0:
                raise ValueError(f"StoreOptions.{name} must be a number >= 0, got {value!r}")
        if self.synchronous not in ("FULL", "NORMAL"):
            raise ValueError(
                f"StoreOptions.synchronous must be FULL or NORMAL: {self.synchronous!r}"
            )
