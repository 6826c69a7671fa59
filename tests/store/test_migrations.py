"""Schema versions: a file of any earlier version opens upgraded, with its data; a failing
migration changes nothing; the list is numbered from 1 without gaps."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from tango_oet.domain.states import ProcedureState as S
from tango_oet.store import Store, StoreError
from tango_oet.store.schema import APPLICATION_ID, MIGRATIONS, Migration, migrate, statements
from tests.store.conftest import git_summary, make_summary

OpenStore = Callable[..., Store]


def _version_1_file(path: Path) -> None:
    """A store as the first release wrote it (schema version 1, its own rows)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    migrate(conn, MIGRATIONS[:1])
    rows = [
        (1, "COMPLETE", "file:///scripts/s1.py", "t1", "t1", make_summary(1, S.COMPLETE)),
        (2, "RUNNING", "git://obs/field.py", "t2", "t2", git_summary(2, "c" * 40)),
    ]
    for pid, state, uri, created, updated, summary in rows:
        obj = summary.to_json() | {"state": state}
        conn.execute(
            "INSERT INTO procedures VALUES (?, ?, ?, ?, ?, ?)",
            (pid, state, uri, created, updated, json.dumps(obj)),
        )
    conn.execute("INSERT INTO output (procedure_id, line) VALUES (2, 'observing')")
    conn.execute("INSERT INTO counters (name, value) VALUES ('procedure', 65)")
    conn.close()


def test_a_version_1_file_is_upgraded_with_its_data(open_store: OpenStore, path: Path) -> None:
    _version_1_file(path)
    store = open_store()
    assert store.notices == ("upgraded from schema version 1 to 2",)

    restored = store.load(10)
    assert [(p.id, p.state) for p in restored.procedures] == [(1, "COMPLETE"), (2, "RUNNING")]
    assert restored.output == ("2 observing",)
    assert store.allocate_id() == 65
    assert [p.id for p in store.interrupted()] == [2]  # the backfilled `final` column
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert conn.execute(
            "SELECT procedure_id, resolved_commit FROM procedure_scripts WHERE kind = 'git'"
        ).fetchall() == [(2, "c" * 40)]
    finally:
        conn.close()


def test_a_later_migration_runs_once_on_an_existing_file(open_store: OpenStore, path: Path) -> None:
    store = open_store()
    store.record_summary(make_summary(store.allocate_id()))
    store.close()
    added = Migration(
        len(MIGRATIONS) + 1,
        "a column a later release adds",
        statements("ALTER TABLE procedures ADD COLUMN observer TEXT"),
    )
    upgraded = open_store(migrations=(*MIGRATIONS, added))
    assert upgraded.notices == (
        f"upgraded from schema version {added.version - 1} to {added.version}",
    )
    assert [p.id for p in upgraded.load(10).procedures] == [1]
    upgraded.close()
    assert open_store(migrations=(*MIGRATIONS, added)).notices == ()


def test_a_failing_migration_leaves_the_file_at_its_version_with_its_data(
    open_store: OpenStore, path: Path
) -> None:
    store = open_store()
    store.record_summary(make_summary(store.allocate_id()))
    store.close()

    def half_then_fail(conn: sqlite3.Connection) -> None:
        conn.execute("ALTER TABLE procedures ADD COLUMN observer TEXT")
        raise RuntimeError("a bug in the migration")

    broken = Migration(len(MIGRATIONS) + 1, "broken", half_then_fail)
    with pytest.raises(StoreError, match="a bug in the migration") as refused:
        Store(path, migrations=(*MIGRATIONS, broken))
    assert "unchanged at its previous version" in str(refused.value)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        columns = [r[1] for r in conn.execute("PRAGMA table_info(procedures)")]
        assert "observer" not in columns
    finally:
        conn.close()
    assert [p.id for p in open_store().load(10).procedures] == [1]


def test_migrations_are_numbered_from_one_without_gaps(path: Path) -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    skipping = (*MIGRATIONS, Migration(len(MIGRATIONS) + 2, "gap", statements()))
    with pytest.raises(ValueError, match="numbered"):
        Store(path, migrations=skipping)
