"""The store's sqlite schema as an ordered list of migrations; `PRAGMA user_version` says which ran.

Released migrations are never edited, only appended to: a file written by any release opens in
every later one. Version 1 is the first layout that reached main; version 2 adds the indexed
columns, the views for plain-sqlite3 queries, embedded sources and the queue's extras.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass

#: `PRAGMA application_id` of a store file ("OETS"), so a foreign sqlite file is recognised.
#: Set by migration 2 (a version 1 file has 0).
APPLICATION_ID = 0x4F455453

#: Oldest sqlite library the schema works with: the views use the `->` / `->>` JSON operators.
MIN_SQLITE = (3, 38, 0)


@dataclass(frozen=True)
class Migration:
    """Takes a store from `version - 1` to `version`; runs inside one transaction."""

    version: int
    description: str
    apply: Callable[[sqlite3.Connection], None]


def statements(*sql: str) -> Callable[[sqlite3.Connection], None]:
    """A migration step that executes each statement in order."""

    def run(conn: sqlite3.Connection) -> None:
        for statement in sql:
            conn.execute(statement)

    return run


_V1 = statements(
    """CREATE TABLE counters (
        name  TEXT PRIMARY KEY,           -- 'procedure', 'queue_item'
        value INTEGER NOT NULL            -- every id below it has been handed out (or reserved)
    )""",
    """CREATE TABLE procedures (
        id      INTEGER PRIMARY KEY,
        state   TEXT NOT NULL,            -- ProcedureState name, as in the summary
        script  TEXT NOT NULL,            -- the script URI
        created TEXT NOT NULL,            -- ISO-8601 UTC of the first history entry
        updated TEXT NOT NULL,            -- ISO-8601 UTC of the last write
        summary TEXT NOT NULL             -- the whole Summary JSON of INTERFACE.md
    )""",
    "CREATE INDEX procedures_state ON procedures (state)",
    """CREATE TABLE output (
        seq          INTEGER PRIMARY KEY, -- global order of lines, across procedures
        procedure_id INTEGER NOT NULL,
        line         TEXT NOT NULL
    )""",
    "CREATE INDEX output_procedure ON output (procedure_id, seq)",
    """CREATE TABLE user_events (
        seq          INTEGER PRIMARY KEY,
        procedure_id INTEGER NOT NULL,
        event        TEXT NOT NULL        -- {"id", "topic", "payload", "time", "seq"}
    )""",
    "CREATE INDEX user_events_procedure ON user_events (procedure_id, seq)",
    """CREATE TABLE queue_state (
        one   INTEGER PRIMARY KEY CHECK (one = 1),
        state TEXT NOT NULL               -- IDLE | RUNNING | STOPPING
    )""",
    """CREATE TABLE queue_items (
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
    )""",
)

# The final states as of version 2; a migration is frozen, so they are spelled out here.
_FINAL = "('COMPLETE', 'STOPPED', 'FAILED', 'UNKNOWN')"

_V2 = statements(
    f"PRAGMA application_id = {APPLICATION_ID}",
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # Copies of summary fields, for indexes and for queries that need no JSON.
    "ALTER TABLE procedures ADD COLUMN final INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE procedures ADD COLUMN script_kind TEXT",
    "ALTER TABLE procedures ADD COLUMN git_repo TEXT",
    "ALTER TABLE procedures ADD COLUMN git_commit TEXT",
    "ALTER TABLE procedures ADD COLUMN error_type TEXT",
    f"""UPDATE procedures SET
        final = state IN {_FINAL},
        script_kind = summary ->> '$.script.kind',
        git_repo = summary ->> '$.script.git.repo',
        git_commit = summary ->> '$.script.git.commit',
        error_type = summary ->> '$.error.type'""",
    "CREATE INDEX procedures_live ON procedures (id) WHERE final = 0",
    "CREATE INDEX procedures_commit ON procedures (git_commit) WHERE git_commit IS NOT NULL",
    "CREATE INDEX procedures_script ON procedures (script)",
    "CREATE INDEX procedures_created ON procedures (created)",
    """CREATE TABLE embedded_sources (
        procedure_id INTEGER PRIMARY KEY,
        name         TEXT NOT NULL,
        source       TEXT NOT NULL          -- the code an embedded:// script ran
    )""",
    "ALTER TABLE queue_items ADD COLUMN extra TEXT NOT NULL DEFAULT '{}'",
    "CREATE INDEX queue_items_live ON queue_items (position, id) "
    "WHERE state IN ('PENDING', 'WAITING', 'RUNNING')",
    "CREATE INDEX queue_items_procedure ON queue_items (procedure_id)",
    "ALTER TABLE queue_state ADD COLUMN updated TEXT",
    "INSERT OR IGNORE INTO queue_state (one, state) VALUES (1, 'IDLE')",
    """INSERT INTO counters (name, value)
        SELECT 'procedure', COALESCE(MAX(id), 0) + 1 FROM procedures WHERE true
        ON CONFLICT (name) DO UPDATE SET value = MAX(value, excluded.value)""",
    """INSERT INTO counters (name, value)
        SELECT 'queue_item', COALESCE(MAX(id), 0) + 1 FROM queue_items WHERE true
        ON CONFLICT (name) DO UPDATE SET value = MAX(value, excluded.value)""",
    # Rows out of the JSON, for plain-sqlite3 questions (docs/store.md has examples).
    """CREATE VIEW procedure_history AS
        SELECT p.id AS procedure_id, h.key AS n, h.value ->> '$[0]' AS state,
               h.value ->> '$[1]' AS time
        FROM procedures AS p, json_each(p.summary, '$.history') AS h""",
    """CREATE VIEW procedure_calls AS
        SELECT p.id AS procedure_id, c.key AS n, c.value ->> '$.function' AS function,
               c.value -> '$.args' AS args, c.value -> '$.kwargs' AS kwargs,
               c.value ->> '$.time' AS time, c.value ->> '$.finished' AS finished,
               c.value -> '$.result' AS result
        FROM procedures AS p, json_each(p.summary, '$.calls') AS c""",
    """CREATE VIEW procedure_errors AS
        SELECT id AS procedure_id, state, summary ->> '$.error.type' AS type,
               summary ->> '$.error.message' AS message,
               summary ->> '$.error.traceback' AS traceback,
               summary ->> '$.error.exitcode' AS exitcode,
               summary ->> '$.error.signal' AS signal
        FROM procedures WHERE json_type(summary, '$.error') = 'object'""",
    """CREATE VIEW procedure_progress AS
        SELECT id AS procedure_id, summary ->> '$.progress.done' AS done,
               summary ->> '$.progress.total' AS total,
               summary ->> '$.progress.message' AS message
        FROM procedures WHERE json_type(summary, '$.progress') = 'object'""",
    """CREATE VIEW procedure_scripts AS
        SELECT p.id AS procedure_id, p.script_kind AS kind, p.script AS uri,
               p.git_repo AS repo, p.summary ->> '$.script.git.branch' AS branch,
               p.summary ->> '$.script.git.tag' AS tag,
               p.summary ->> '$.script.git.requested_commit' AS requested_commit,
               p.git_commit AS resolved_commit,
               p.summary ->> '$.script.environment' AS environment,
               p.summary -> '$.init' AS init, e.source AS embedded_source
        FROM procedures AS p LEFT JOIN embedded_sources AS e ON e.procedure_id = p.id""",
    """CREATE VIEW events AS
        SELECT seq, procedure_id, event ->> '$.topic' AS topic, event -> '$.payload' AS payload,
               event ->> '$.time' AS time, event ->> '$.seq' AS event_seq
        FROM user_events""",
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "procedures, output, user events, counters, queue", _V1),
    Migration(2, "indexed columns, query views, embedded sources, queue extras", _V2),
)

VERSION = MIGRATIONS[-1].version


class NewerSchema(Exception):
    """The file was written by a newer release; this one must not touch it."""


class MigrationFailed(Exception):
    """One migration raised; the file stays at the version before it."""

    def __init__(self, migration: Migration, error: BaseException) -> None:
        super().__init__(
            f"migration to schema version {migration.version} ({migration.description}) "
            f"failed: {type(error).__name__}: {error}"
        )
        self.version = migration.version


def check_migrations(migrations: Sequence[Migration]) -> None:
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migrations must be numbered 1, 2, 3, ... in order, got {versions}")


def user_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, migrations: Sequence[Migration] = MIGRATIONS) -> list[int]:
    """Run every migration after the file's version, each in its own transaction.

    `conn` must be in autocommit mode (isolation_level None). Returns the versions applied.
    Raises NewerSchema, MigrationFailed (the migration's own fault) or sqlite3.Error (the
    place's: disk full, read-only, I/O).
    """
    check_migrations(migrations)
    current = user_version(conn)
    latest = migrations[-1].version if migrations else 0
    if current > latest:
        raise NewerSchema(
            f"schema version {current} is newer than this release understands ({latest}); "
            "run the release that wrote it, or restore a backup"
        )
    applied = []
    for migration in migrations[current:]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            migration.apply(conn)
            # user_version is part of the transaction: it commits or rolls back with the step.
            conn.execute(f"PRAGMA user_version = {migration.version}")
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error) and is_environmental(exc):
                raise
            raise MigrationFailed(migration, exc) from exc
        applied.append(migration.version)
    return applied


# Primary result codes that say the place is at fault, not the code: BUSY, LOCKED, NOMEM,
# READONLY, IOERR, CORRUPT, FULL, CANTOPEN, NOTADB.
_ENVIRONMENTAL = frozenset({5, 6, 7, 8, 10, 11, 13, 14, 26})
CORRUPTION = frozenset({11, 26})  # CORRUPT, NOTADB


def result_code(exc: sqlite3.Error) -> int:
    return int(getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF


def is_environmental(exc: sqlite3.Error) -> bool:
    return result_code(exc) in _ENVIRONMENTAL
