"""The store: schema, migrations, concurrency, and refusing bad databases without harm."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import sqlite3

import pytest
from sqlalchemy import func, select

from orchestrator.store import Step, Store
from planners.errors import BadInput
from tests.conftest import assert_bad_input


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_new_database_is_at_head_with_wal_and_foreign_keys(tmp_path):
    store = Store(f"sqlite:///{tmp_path/'t.db'}")
    assert store.schema_revision() is not None
    con = sqlite3.connect(tmp_path / "t.db")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    run = store.create_run("tiny", {"x": 1})
    with pytest.raises(Exception):  # foreign keys are enforced
        store.add_steps("no-such-run", [{"step": 1, "tokens": 1}])
    assert store.add_steps(run.id, [{"step": 1, "tokens": 1, "loss": 2.0}]) == 1
    assert store.add_steps(run.id, [{"step": 1, "tokens": 1, "loss": 2.0}]) == 0  # no duplicate


def _writer(url: str, run_id: str, worker: int, n: int) -> None:
    store = Store(url)
    for i in range(n):
        store.add_steps(run_id, [{"step": worker * 100_000 + i, "tokens": i, "loss": 1.0}])


def test_concurrent_writers_lose_no_row(tmp_path):
    url = f"sqlite:///{tmp_path/'c.db'}"
    store = Store(url)
    run = store.create_run("tiny", {})
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(url, run.id, w, 150)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    with store.read() as s:
        assert s.scalar(select(func.count(Step.id)).where(Step.run_id == run.id)) == 600


def test_database_from_first_schema_version_opens_after_later_migrations(tmp_path):
    """Make a database at the first revision, write to it, then open it with today's code."""
    from alembic import command
    from alembic.script import ScriptDirectory

    path = tmp_path / "old.db"
    url = f"sqlite:///{path}"
    old = Store(url, migrate=False)
    cfg = old._alembic_config()
    first = list(ScriptDirectory.from_config(cfg).walk_revisions())[-1].revision
    with old._writer.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, first)
    con = sqlite3.connect(path)
    con.execute("INSERT INTO runs (id, preset, config, status, created_at) "
                "VALUES ('old-run', 'tiny', '{}', 'completed', '2026-01-01 00:00:00')")
    con.commit()
    con.close()
    old.close()
    store = Store(url)
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert store.schema_revision() == head
    assert store.get_run("old-run").status == "completed"
    assert store.run_summaries()[0]["id"] == "old-run"


def test_non_sqlite_file_refused_and_left_alone(tmp_path, home, run_cli):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello, not a database\n" * 10)
    before = _digest(bad)
    res = run_cli("--db", str(bad), "runs", "--json")
    assert_bad_input(res, "not a SQLite database")
    assert _digest(bad) == before


def test_foreign_sqlite_database_refused_and_left_alone(tmp_path, home, run_cli):
    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    before = _digest(other)
    assert_bad_input(run_cli("--db", str(other), "runs"), "not a tally database")
    assert _digest(other) == before


def test_unreadable_db_refused(tmp_path, home, run_cli):
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    path = tmp_path / "locked.db"
    Store(f"sqlite:///{path}").close()
    path.chmod(0)
    assert_bad_input(run_cli("--db", str(path), "runs"), "not readable")


def test_db_in_missing_directory_refused(tmp_path, home, run_cli):
    assert_bad_input(run_cli("--db", str(tmp_path / "nope" / "x.db"), "runs"), "cannot be created")


def test_unknown_run_refused_and_db_unchanged(home, run_cli):
    assert run_cli("runs", "--json").code == 0
    db = home / "tally.db"
    before = _digest(db)
    assert_bad_input(run_cli("runs", "show", "no-such-run"), "no-such-run")
    assert _digest(db) == before


def test_unwritable_home_refused(tmp_path, monkeypatch, run_cli):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("TALLY_HOME", str(blocker / "home"))
    assert_bad_input(run_cli("runs"), "TALLY_HOME")
    monkeypatch.setenv("TALLY_HOME", str(blocker))
    assert_bad_input(run_cli("runs"), "not a directory")


def test_newer_schema_refused(tmp_path):
    path = tmp_path / "future.db"
    Store(f"sqlite:///{path}").close()
    con = sqlite3.connect(path)
    con.execute("UPDATE alembic_version SET version_num = '9999'")
    con.commit()
    con.close()
    with pytest.raises(BadInput, match="newer"):
        Store(f"sqlite:///{path}")
