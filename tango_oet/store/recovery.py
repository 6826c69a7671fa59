"""After a restart: what was live when the server went away becomes final, in the record itself."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection
from typing import Any

from tango_oet.store.records import InterruptedProcedure, Recovery

SERVER_RESTARTED = "ServerRestarted"


def live_procedures(conn: sqlite3.Connection) -> list[InterruptedProcedure]:
    """Procedures recorded in a state that is not final, oldest first."""
    found = []
    for pid, state, text in conn.execute(
        "SELECT id, state, summary FROM procedures WHERE final = 0 ORDER BY id"
    ):
        summary = _loads(text)
        pid_ = summary.get("pid")
        found.append(
            InterruptedProcedure(
                id=int(pid),
                state=str(state),
                pid=pid_ if isinstance(pid_, int) and not isinstance(pid_, bool) else None,
                summary=summary,
            )
        )
    return found


def mark_interrupted(conn: sqlite3.Connection, now: str, unaccounted: Collection[int]) -> Recovery:
    """Inside a transaction: FAILED (UNKNOWN for `unaccounted`) with error ServerRestarted.

    The summary gains `[state, now]` in its history, as the engine would have written it. A
    queue item that was RUNNING becomes FAILED, WAITING ones PENDING, and the queue IDLE.
    """
    changed = []
    for live in live_procedures(conn):
        lost = live.id in unaccounted
        state = "UNKNOWN" if lost else "FAILED"
        summary = dict(live.summary)
        history = list(summary.get("history") or [])
        history.append([state, now])
        summary["history"] = history
        summary["state"] = state
        summary["error"] = {
            "type": SERVER_RESTARTED,
            "message": (
                f"the server went away while procedure {live.id} was {live.state}; found at "
                f"the restart at {now}"
                + (", its processes could not be accounted for" if lost else "")
            ),
            "traceback": "",
            "exitcode": None,
            "signal": None,
        }
        conn.execute(
            "UPDATE procedures SET state = ?, final = 1, error_type = ?, updated = ?, "
            "summary = ? WHERE id = ?",
            (state, SERVER_RESTARTED, now, json.dumps(summary, separators=(",", ":")), live.id),
        )
        changed.append(InterruptedProcedure(live.id, live.state, live.pid, summary))
    (queue_was,) = conn.execute("SELECT state FROM queue_state WHERE one = 1").fetchone() or (
        "IDLE",
    )
    items = []
    for item_id, extra in conn.execute(
        "SELECT id, extra FROM queue_items WHERE state = 'RUNNING' ORDER BY id"
    ).fetchall():
        detail = _loads(extra)
        detail["error"] = {
            "type": SERVER_RESTARTED,
            "message": f"the server went away while this item ran; found at the restart at {now}",
        }
        conn.execute(
            "UPDATE queue_items SET state = 'FAILED', position = NULL, ended = ?, extra = ? "
            "WHERE id = ?",
            (now, json.dumps(detail, separators=(",", ":")), item_id),
        )
        items.append(int(item_id))
    conn.execute("UPDATE queue_items SET state = 'PENDING' WHERE state = 'WAITING'")
    conn.execute("UPDATE queue_state SET state = 'IDLE', updated = ? WHERE one = 1", (now,))
    return Recovery(
        time=now, procedures=tuple(changed), queue_items=tuple(items), queue_was=str(queue_was)
    )


def _loads(text: str) -> dict[str, Any]:
    try:
        obj = json.loads(text)
    except (TypeError, ValueError):
        return {}
    return obj if isinstance(obj, dict) else {}
