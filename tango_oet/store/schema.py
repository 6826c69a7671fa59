"""The store's sqlite schema, versioned by PRAGMA user_version, with one migration per version."""

from __future__ import annotations

import sqlite3

#: MIGRATIONS[n] takes a file at version n to version n + 1. Append; never edit a released one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE counters (
        name  TEXT PRIMARY KEY,           -- 'procedure', 'queue_item'
        value INTEGER NOT NULL            -- every id below it has been handed out (or reserved)
    );
    CREATE TABLE procedures (
        id      INTEGER PRIMARY KEY,
        state   TEXT NOT NULL,            -- ProcedureState name, as in the summary
        script  TEXT NOT NULL,            -- the script URI
        created TEXT NOT NULL,            -- ISO-8601 UTC of the first history entry
        updated TEXT NOT NULL,            -- ISO-8601 UTC of the last write
        summary TEXT NOT NULL             -- the whole Summary JSON of INTERFACE.md
    );
    CREATE INDEX procedures_state ON procedures (state);
    CREATE TABLE output (
        seq          INTEGER PRIMARY KEY, -- global order of lines, across procedures
        procedure_id INTEGER NOT NULL,
        line         TEXT NOT NULL
    );
    CREATE INDEX output_procedure ON output (procedure_id, seq);
    CREATE TABLE user_events (
        seq          INTEGER PRIMARY KEY,
        procedure_id INTEGER NOT NULL,
        event        TEXT NOT NULL        -- {"id", "topic", "payload", "time", "seq"}
    );
    CREATE INDEX user_events_procedure ON user_events (procedure_id, seq);
    CREATE TABLE queue_state (
        one   INTEGER PRIMARY KEY CHECK (one = 1),
        state TEXT NOT NULL               -- IDLE | RUNNING | STOPPING
    );
    CREATE TABLE queue_items (
        id                  INTEGER PRIMARY KEY,
        position            INTEGER,      -- run order among pending items; NULL once taken
        name                TEXT NOT NULL,
        state               TEXT NOT NULL, -- PENDING WAITING RUNNING COMPLETE FAILED STOPPED
        procedure_id        INTEGER,
        at                  TEXT,
        continue_on_failure INTEGER NOT NULL DEFAULT 0,
        request             TEXT NOT NULL, -- the Enqueue argin, credentials removed
        added               TEXT NOT NULL,
        started             TEXT,
        ended               TEXT,
        note                TEXT          -- e.g. "started late: its time had passed"
    );
    """,
)

VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the file to VERSION; returns the version it had. Refuses a newer file."""
    (found,) = conn.execute("PRAGMA user_version").fetchone()
    if found > VERSION:
        raise sqlite3.DatabaseError(
            f"schema version {found} is newer than this tango-oet understands ({VERSION})"
        )
    for version in range(found, VERSION):
        with conn:
            conn.executescript(
                f"BEGIN; {MIGRATIONS[version]}; PRAGMA user_version = {version + 1};"
            )
    return int(found)
