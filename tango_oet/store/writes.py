"""One batch of pending changes written in one transaction: rows, tails trimmed, old data pruned."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tango_oet.domain.scripts import EmbeddedScript
from tango_oet.domain.states import ProcedureState, is_final
from tango_oet.domain.summary import ProcedureSummary, iso, utc_now
from tango_oet.domain.urls import redact_text
from tango_oet.store.options import StoreOptions
from tango_oet.store.pending import Parsed, Pending
from tango_oet.store.records import FINAL_ITEM_STATES, LIVE_ITEM_STATES, QUEUE_STATES

log = logging.getLogger(__name__)

_UPSERT_PROCEDURE = """
    INSERT INTO procedures (id, state, script, created, updated, summary,
                            final, script_kind, git_repo, git_commit, error_type)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (id) DO UPDATE SET
        state = excluded.state, script = excluded.script, updated = excluded.updated,
        summary = excluded.summary, final = excluded.final, script_kind = excluded.script_kind,
        git_repo = excluded.git_repo, git_commit = excluded.git_commit,
        error_type = excluded.error_type"""

_UPSERT_ITEM = """
    INSERT INTO queue_items (id, position, name, state, procedure_id, at, continue_on_failure,
                             request, added, started, ended, note, extra)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (id) DO UPDATE SET
        position = excluded.position, name = excluded.name, state = excluded.state,
        procedure_id = excluded.procedure_id, at = excluded.at,
        continue_on_failure = excluded.continue_on_failure, request = excluded.request,
        added = excluded.added, started = excluded.started, ended = excluded.ended,
        note = excluded.note, extra = excluded.extra"""


class Rejected(ValueError):
    """A record that can never be written (not a summary, not JSON); dropped and reported."""


@dataclass
class Written:
    summaries: int = 0
    lines: int = 0
    sources: list[int] = field(default_factory=list)  # embedded sources written


def summary_row(summary: Any, now: str) -> tuple[tuple[Any, ...], tuple[int, str, str] | None]:
    """(procedures row, embedded source or None) of a summary in any of its accepted forms."""
    source: tuple[int, str, str] | None = None
    if isinstance(summary, ProcedureSummary):
        obj = summary.to_json()
        text = json.dumps(obj, separators=(",", ":"))
        if isinstance(summary.script, EmbeddedScript):
            source = (summary.id, summary.script.name, summary.script.source)
    elif isinstance(summary, Parsed):
        if summary.obj is None:
            raise Rejected(f"a summary that is not JSON: {summary.text[:200]!r}")
        obj, text = summary.obj, summary.text
    elif isinstance(summary, Mapping):
        obj = dict(summary)
        try:
            text = json.dumps(obj, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise Rejected(f"a summary that cannot be JSON ({exc}): {obj!r:.200}") from exc
    else:
        raise Rejected(f"not a summary: {type(summary).__name__} {summary!r:.200}")
    try:
        pid = obj["id"]
        state = obj["state"]
        script = obj["script"]
        if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
            raise ValueError(f"id must be an integer > 0, got {pid!r}")
        final = is_final(ProcedureState[state])
        git = script.get("git") or {}
        error = obj.get("error") or {}
        history = obj.get("history") or ()
        created = history[0][1] if history else now
        row = (
            pid,
            state,
            str(script["uri"]),
            created,
            now,
            text,
            int(final),
            script.get("kind"),
            git.get("repo"),
            git.get("commit"),
            error.get("type"),
        )
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise Rejected(f"a summary without a readable {exc}: {text[:200]!r}") from exc
    return row, source


class BatchWriter:
    """Owns the write connection's bookkeeping; used only by the writer thread."""

    def __init__(self, conn: sqlite3.Connection, options: StoreOptions) -> None:
        self.conn = conn
        self.options = options
        self._lines: dict[int, int] = {}  # stored output lines per procedure, once counted
        self._events: dict[int, int] = {}
        self._sources: set[int] = set()  # procedures whose embedded source is stored
        (highest,) = conn.execute("SELECT COALESCE(MAX(id), 0) FROM procedures").fetchone()
        self._newest = int(highest)
        self._pruned_below = -1  # force one pruning pass at the first new procedure
        self._before = (self._newest, self._pruned_below)
        self._rejected: list[str] = []

    def write(self, pending: Pending) -> Written:
        """Apply `pending` in the transaction the caller opened; the caller commits."""
        now = iso(utc_now())
        done = Written()
        self._before = (self._newest, self._pruned_below)
        conn = self.conn
        rows = []
        sources = []
        for key, summary in list(pending.summaries.items()):
            try:
                row, source = summary_row(summary, now)
            except Rejected as exc:
                del pending.summaries[key]  # it would fail again on every retry
                self._rejected.append(str(exc))
                continue
            rows.append(row)
            if source is not None and source[0] not in self._sources:
                sources.append(source)
                done.sources.append(source[0])
        for pid in pending.removed:
            for sql in (
                "DELETE FROM procedures WHERE id = ?",
                "DELETE FROM embedded_sources WHERE procedure_id = ?",
                "DELETE FROM output WHERE procedure_id = ?",
                "DELETE FROM user_events WHERE procedure_id = ?",
            ):
                conn.execute(sql, (pid,))
        conn.executemany(_UPSERT_PROCEDURE, rows)
        conn.executemany(
            "INSERT OR IGNORE INTO embedded_sources (procedure_id, name, source) VALUES (?, ?, ?)",
            sources,
        )
        done.summaries = len(rows)
        lines = self._append_tails(pending)
        done.lines = lines
        self._write_queue(pending, now)
        newest = max((r[0] for r in rows), default=0)
        if newest > self._newest:
            self._newest = newest
            self._prune()
        return done

    def take_rejected(self) -> list[str]:
        rejected, self._rejected = self._rejected, []
        return rejected

    def committed(self, pending: Pending, done: Written) -> None:
        """Bookkeeping that holds only once the transaction is durable."""
        self._sources.update(done.sources)
        for pid in pending.removed:
            self._lines.pop(pid, None)
            self._events.pop(pid, None)
            self._sources.discard(pid)

    def rolled_back(self) -> None:
        """What was remembered during the failed transaction may be ahead of the file."""
        self._lines.clear()
        self._events.clear()
        self._newest, self._pruned_below = self._before

    # ---- tails -----------------------------------------------------------------------------
    def _append_tails(self, pending: Pending) -> int:
        conn = self.conn
        opt = self.options
        lines = [(pid, line) for pid, tail in pending.output.items() for line in tail]
        if opt.output_lines:
            conn.executemany("INSERT INTO output (procedure_id, line) VALUES (?, ?)", lines)
        events = [
            (pid, json.dumps(_event_record(event), default=repr, separators=(",", ":")))
            for pid, tail in pending.events.items()
            for event in tail
        ]
        if opt.user_events:
            conn.executemany("INSERT INTO user_events (procedure_id, event) VALUES (?, ?)", events)
        for table, counts, keep, added in (
            ("output", self._lines, opt.output_lines, pending.output),
            ("user_events", self._events, opt.user_events, pending.events),
        ):
            for pid, tail in added.items():
                count = counts.get(pid)
                if count is None:
                    (count,) = conn.execute(
                        f"SELECT count(*) FROM {table} WHERE procedure_id = ?", (pid,)
                    ).fetchone()
                else:
                    count += len(tail)
                if count > keep:
                    conn.execute(
                        f"DELETE FROM {table} WHERE procedure_id = ? AND seq <= "
                        f"(SELECT seq FROM {table} WHERE procedure_id = ? "
                        "ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                        (pid, pid, keep),
                    )
                    count = keep
                counts[pid] = count
        return len(lines) if opt.output_lines else 0

    def _prune(self) -> None:
        """Retention (StoreOptions): run when a new procedure appears, so it is amortised."""
        conn = self.conn
        opt = self.options
        if opt.tails_of_procedures:
            below = self._newest - opt.tails_of_procedures
            if below > self._pruned_below:
                conn.execute("DELETE FROM output WHERE procedure_id <= ?", (below,))
                conn.execute("DELETE FROM user_events WHERE procedure_id <= ?", (below,))
                for counts in (self._lines, self._events):
                    for pid in [p for p in counts if p <= below]:
                        del counts[pid]
                self._pruned_below = below
        if opt.keep_procedures:
            below = self._newest - opt.keep_procedures
            if below > 0:
                conn.execute("DELETE FROM procedures WHERE id <= ?", (below,))
                conn.execute("DELETE FROM embedded_sources WHERE procedure_id <= ?", (below,))
                self._sources = {p for p in self._sources if p > below}

    # ---- queue -----------------------------------------------------------------------------
    def _write_queue(self, pending: Pending, now: str) -> None:
        conn = self.conn
        if pending.queue_removed:
            conn.executemany(
                "DELETE FROM queue_items WHERE id = ?", [(i,) for i in pending.queue_removed]
            )
        rows = []
        finished = False
        for item in pending.queue_items.values():
            finished = finished or item.state in FINAL_ITEM_STATES
            rows.append(
                (
                    item.id,
                    item.position,
                    item.name,
                    item.state,
                    item.procedure_id,
                    item.at,
                    int(item.continue_on_failure),
                    redact_text(json.dumps(dict(item.request), separators=(",", ":"))),
                    item.added,
                    item.started,
                    item.ended,
                    item.note,
                    json.dumps(dict(item.extra), default=repr, separators=(",", ":")),
                )
            )
        conn.executemany(_UPSERT_ITEM, rows)
        if pending.queue_state is not None:
            conn.execute(
                "UPDATE queue_state SET state = ?, updated = ? WHERE one = 1",
                (pending.queue_state, now),
            )
        keep = self.options.finished_queue_items
        if finished and keep:
            states = ", ".join(f"'{s}'" for s in FINAL_ITEM_STATES)
            conn.execute(
                f"DELETE FROM queue_items WHERE state IN ({states}) AND id NOT IN "
                f"(SELECT id FROM queue_items WHERE state IN ({states}) "
                "ORDER BY id DESC LIMIT ?)",
                (keep,),
            )


def check_queue_change(state: str | None, items: Any) -> None:
    """Refuse, at the caller, a queue change the schema would not mean anything by."""
    if state is not None and state not in QUEUE_STATES:
        raise ValueError(f"queue state must be one of {QUEUE_STATES}, got {state!r}")
    for item in items:
        if item.state not in (*LIVE_ITEM_STATES, *FINAL_ITEM_STATES):
            raise ValueError(f"queue item {item.id}: unknown state {item.state!r}")
        if isinstance(item.id, bool) or not isinstance(item.id, int) or item.id <= 0:
            raise ValueError(f"queue item id must be an integer > 0, got {item.id!r}")


def _event_record(event: Any) -> Any:
    """The engine hands over its event objects; only those kept are turned into records."""
    to_json = getattr(event, "to_json", None)
    return to_json() if callable(to_json) else event
