"""Reading the record back (at start): procedures with their tails, output, the queue, ids."""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tango_oet.store.records import (
    FINAL_ITEM_STATES,
    QueueItemRecord,
    QueueRecord,
    Restored,
    StoredProcedure,
)


def connect_reader(path: Path) -> sqlite3.Connection:
    """A read-only connection: WAL lets it read beside the writer without blocking it."""
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)


def load(
    conn: sqlite3.Connection,
    *,
    limit: int,
    output_lines: int,
    finished_items: int,
    next_ids: Mapping[str, int],
) -> Restored:
    rows = conn.execute(
        "SELECT id, state, summary, created, updated FROM procedures ORDER BY id DESC LIMIT ?",
        (limit,),
    ).fetchall()
    rows.reverse()
    tails: dict[int, list[str]] = defaultdict(list)
    events: dict[int, list[dict[str, Any]]] = defaultdict(list)
    sources: dict[int, str] = {}
    if rows:
        # Tails are trimmed as they are written, so a range read is exactly the kept tails.
        low, high = rows[0][0], rows[-1][0]
        for pid, line in conn.execute(
            "SELECT procedure_id, line FROM output WHERE procedure_id BETWEEN ? AND ? "
            "ORDER BY procedure_id, seq",
            (low, high),
        ):
            tails[pid].append(line)
        for pid, text in conn.execute(
            "SELECT procedure_id, event FROM user_events WHERE procedure_id BETWEEN ? AND ? "
            "ORDER BY procedure_id, seq",
            (low, high),
        ):
            events[pid].append(_obj(text))
        for pid, source in conn.execute(
            "SELECT procedure_id, source FROM embedded_sources WHERE procedure_id BETWEEN ? AND ?",
            (low, high),
        ):
            sources[pid] = source
    procedures = tuple(
        StoredProcedure(
            id=int(pid),
            state=str(state),
            summary=_obj(text),
            created=str(created),
            updated=str(updated),
            output=tuple(tails.get(pid, ())),
            events=tuple(events.get(pid, ())),
            embedded_source=sources.get(pid),
        )
        for pid, state, text, created, updated in rows
    )
    recent = conn.execute(
        "SELECT procedure_id, line FROM output ORDER BY seq DESC LIMIT ?", (output_lines,)
    ).fetchall()
    last = conn.execute("SELECT event FROM user_events ORDER BY seq DESC LIMIT 1").fetchone()
    return Restored(
        procedures=procedures,
        output=tuple(f"{pid} {line}" for pid, line in reversed(recent)),
        next_id=next_ids["procedure"],
        next_queue_item_id=next_ids["queue_item"],
        queue=load_queue(conn, finished_items),
        last_event=_obj(last[0]) if last else None,
    )


_ITEM_COLUMNS = (
    "id, name, state, position, request, at, continue_on_failure, procedure_id, added, "
    "started, ended, note, extra"
)


def load_queue(conn: sqlite3.Connection, finished_items: int) -> QueueRecord:
    row = conn.execute("SELECT state FROM queue_state WHERE one = 1").fetchone()
    final = ", ".join(f"'{s}'" for s in FINAL_ITEM_STATES)
    live = conn.execute(
        f"SELECT {_ITEM_COLUMNS} FROM queue_items WHERE state NOT IN ({final}) "
        "ORDER BY position IS NULL, position, id"
    ).fetchall()
    done = conn.execute(
        f"SELECT {_ITEM_COLUMNS} FROM queue_items WHERE state IN ({final}) "
        "ORDER BY COALESCE(ended, added) DESC, id DESC LIMIT ?",
        (finished_items,),
    ).fetchall()
    return QueueRecord(
        state=str(row[0]) if row else "IDLE",
        items=tuple(_item(r) for r in live),
        finished=tuple(_item(r) for r in reversed(done)),
    )


def _item(row: tuple[Any, ...]) -> QueueItemRecord:
    (iid, name, state, position, request, at, cof, pid, added, started, ended, note, extra) = row
    return QueueItemRecord(
        id=int(iid),
        name=str(name),
        state=str(state),
        position=position,
        request=_obj(request),
        at=at,
        continue_on_failure=bool(cof),
        procedure_id=pid,
        added=str(added),
        started=started,
        ended=ended,
        note=note,
        extra=_obj(extra),
    )


def next_ids(conn: sqlite3.Connection) -> dict[str, int]:
    """The first id of each kind never handed out: the counter, or above the highest stored."""
    found = {name: int(value) for name, value in conn.execute("SELECT name, value FROM counters")}
    (procedures,) = conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM procedures").fetchone()
    (items,) = conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM queue_items").fetchone()
    return {
        "procedure": max(found.get("procedure", 1), int(procedures)),
        "queue_item": max(found.get("queue_item", 1), int(items)),
    }


def _obj(text: str) -> dict[str, Any]:
    try:
        obj = json.loads(text)
    except (TypeError, ValueError):
        return {}
    return obj if isinstance(obj, dict) else {}
