"""The store: SQLAlchemy 2.0 models and sessions. The only code that writes the database.

The driver (the `cli.py` process) owns it; Ray workers never open it. SQLite by default at
`$TALLY_HOME/tally.db`, any SQLAlchemy URL through `--db` / `TALLY_DB`. Schema changes go
through Alembic migrations in `orchestrator/migrations/`, applied on open, so a database made by
an older tally still opens.

SQLite settings: WAL (readers never block the writer), foreign keys on, a busy timeout, and
write transactions that start with BEGIN IMMEDIATE so two writers queue on the busy timeout
instead of failing with "database is locked" when a read lock cannot be upgraded.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import uuid
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

from sqlalchemy import create_engine, event, func, inspect, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.store.schema import (HEARTBEAT_S, Checkpoint, EnergySample, Plan, Run,
                                       RunEvent, Step, driver_id, shown_status, utcnow)
from planners.errors import BadInput, RunFailed

BUSY_TIMEOUT_MS = 60_000
MIGRATIONS = Path(__file__).with_name("migrations")


def new_id(prefix: str = "") -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{prefix}{stamp}-{uuid.uuid4().hex[:4]}"


def code_version() -> str | None:
    """The git commit tally runs from (with '+dirty' for local changes): the checkout this
    file is in, or, for a `pip install DIR`, the directory pip installed from (its
    direct_url.json); None when neither is a git checkout."""
    for here in (Path(__file__).resolve().parents[2], _installed_from()):
        if here is None:
            continue
        try:
            sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=here,
                                 capture_output=True, text=True, timeout=5).stdout.strip()
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                   cwd=here, capture_output=True, text=True,
                                   timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            continue
        if sha:
            return sha + ("+dirty" if dirty else "")
    return None


def _installed_from() -> Path | None:
    from importlib import metadata
    from urllib.parse import unquote, urlparse

    try:
        text = metadata.distribution("tally").read_text("direct_url.json")
        url = urlparse(json.loads(text or "{}").get("url", ""))
    except (metadata.PackageNotFoundError, ValueError):
        return None
    path = Path(unquote(url.path)) if url.scheme == "file" else None
    return path if path is not None and path.is_dir() else None


def _sqlite_file(url: str) -> Path | None:
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return Path(u.database)


def _check_sqlite_file(path: Path) -> None:
    """Refuse a file that is not a readable SQLite database, before SQLAlchemy touches it."""
    if not path.exists():
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.is_dir() or not os.access(parent, os.W_OK):
            raise BadInput(f"database {str(path)!r} cannot be created: its directory is missing "
                           "or not writable; give --db a writable path or a SQLAlchemy URL")
        return
    if path.is_dir():
        raise BadInput(f"database {str(path)!r} is a directory; --db takes a SQLite file or a "
                       "SQLAlchemy URL such as sqlite:///path/tally.db")
    if not os.access(path, os.R_OK):
        raise BadInput(f"database {str(path)!r} is not readable; fix its permissions or give "
                       "--db another SQLite file")
    with open(path, "rb") as f:
        head = f.read(16)
    if head and head != b"SQLite format 3\x00":
        raise BadInput(f"{str(path)!r} is not a SQLite database; --db takes a tally SQLite file "
                       "or a SQLAlchemy URL")


def _engine(url: str, immediate: bool) -> Engine:
    sqlite = make_url(url).get_backend_name() == "sqlite"
    kwargs: dict[str, Any] = {}
    if sqlite:
        kwargs["connect_args"] = {"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}
    engine = create_engine(url, **kwargs)
    if sqlite:
        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):  # noqa: ANN001
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (pysqlite's is lazy)
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA foreign_keys = ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):  # noqa: ANN001
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
    return engine


class Store:
    """Open (and migrate) a tally database. Use `with store.write() as s:` to write and
    `with store.read() as s:` to read."""

    def __init__(self, url: str, migrate: bool = True):
        try:
            self.url = str(make_url(url))
        except ArgumentError:
            raise BadInput(f"--db {url!r} is neither a file path nor a SQLAlchemy URL "
                           "(e.g. sqlite:///path/tally.db)") from None
        path = _sqlite_file(self.url)
        if path is not None:
            _check_sqlite_file(path)
        self.path = path
        self._writer = _engine(self.url, immediate=True)
        self._reader = _engine(self.url, immediate=False)
        self._write_sessions = sessionmaker(self._writer, expire_on_commit=False)
        self._read_sessions = sessionmaker(self._reader, expire_on_commit=False)
        try:
            self._check_is_tally()
            if path is not None:
                raw = self._writer.raw_connection()  # outside any transaction: WAL needs that
                try:
                    con = raw.driver_connection
                    if con.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                        con.execute("PRAGMA journal_mode=WAL")  # once per database file
                finally:
                    raw.close()
            if migrate:
                self._migrate()
        except (DatabaseError, sqlite3.DatabaseError) as e:
            self.close()
            if _disk_trouble(e):  # a full disk is a run-time failure, not bad input
                raise RunFailed(f"database {self.url!r} cannot be written: {_short(e)} (is its "
                                "disk full?); free space there and retry") from None
            raise BadInput(f"database {self.url!r} cannot be used: {_short(e)}; give --db a tally "
                           "SQLite file or a SQLAlchemy URL") from None

    # -- schema -------------------------------------------------------------------------------
    def _alembic_config(self):
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        return cfg

    def schema_revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        with self._reader.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def _check_is_tally(self) -> None:
        """Refuse, before changing anything, a database that holds someone else's tables."""
        tables = set(inspect(self._reader).get_table_names())
        if "alembic_version" not in tables and tables:
            raise BadInput(f"database {self.url!r} holds tables but is not a tally database; "
                           "give --db a tally database or a new path")

    def _migrate(self, revision: str = "head") -> None:
        from alembic import command
        from alembic.script import ScriptDirectory

        cfg = self._alembic_config()
        script = ScriptDirectory.from_config(cfg)
        current = self.schema_revision()
        if current is not None and current not in {s.revision for s in script.walk_revisions()}:
            raise BadInput(f"database {self.url!r} is at schema {current!r}, newer than this "
                           "tally knows; upgrade tally to open it")
        if current != script.get_current_head() or revision != "head":
            with self._writer.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)

    def close(self) -> None:
        self._writer.dispose()
        self._reader.dispose()

    # -- sessions -----------------------------------------------------------------------------
    @contextmanager
    def write(self) -> Iterator[Session]:
        try:
            with self._write_sessions.begin() as session:
                yield session
        except OperationalError as e:  # rolled back: what was committed before stays
            if _disk_trouble(e):
                raise RunFailed(f"database {self.url!r} cannot be written: {_short(e)} (is its "
                                "disk full?); free space there and retry") from None
            raise

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._read_sessions() as session:
            yield session

    # -- runs ---------------------------------------------------------------------------------
    def create_run(self, preset: str, config: dict, *, name: str | None = None,
                   run_id: str | None = None, status: str = "created",
                   ray_address: str | None = None, plan_id: str | None = None,
                   storage_path: str | None = None) -> Run:
        run = Run(id=run_id or new_id(f"{preset}-"), name=name, preset=preset,
                  config=json.loads(json.dumps(config, default=str)), status=status,
                  host=socket.gethostname(), code_version=code_version(),
                  ray_address=ray_address, plan_id=plan_id, storage_path=storage_path)
        with self.write() as s:
            s.add(run)
        return run

    def get_run(self, run_id: str) -> Run:
        with self.read() as s:
            run = s.get(Run, run_id)
        if run is None:
            raise BadInput(f"no run with id {run_id!r}; `cli.py runs` lists the run ids")
        return run

    @contextmanager
    def driving(self, run_id: str) -> Iterator[None]:
        """This process drives `run_id` while the block runs: it is recorded as the run's
        driver, and a thread renews the heartbeat, so `runs` can tell a run whose driver is
        gone (`lost`) from one that is running."""
        import threading

        self.update_run(run_id, driver=driver_id(), heartbeat_at=utcnow())
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(HEARTBEAT_S):
                try:
                    self.update_run(run_id, heartbeat_at=utcnow())
                except Exception:  # a busy or full disk must not stop the run
                    pass

        t = threading.Thread(target=beat, name="tally-heartbeat", daemon=True)
        t.start()
        try:
            yield
        finally:
            stop.set()
            t.join(timeout=5)

    def update_run(self, run_id: str, **fields: Any) -> None:
        with self.write() as s:
            run = s.get(Run, run_id)
            if run is None:
                raise BadInput(f"no run with id {run_id!r}")
            for key, value in fields.items():
                setattr(run, key, value)

    def add_steps(self, run_id: str, rows: list[dict]) -> int:
        """Insert step rows; a step already stored for the run is skipped (a restarted worker
        group re-reports nothing twice). Returns how many rows were new."""
        if not rows:
            return 0
        with self.write() as s:
            steps = [r["step"] for r in rows]
            have = set(s.scalars(select(Step.step).where(
                Step.run_id == run_id, Step.step >= min(steps), Step.step <= max(steps))))
            new = [Step(run_id=run_id, **r) for r in rows if r["step"] not in have]
            s.add_all(new)
        return len(new)

    def delete_steps_after(self, run_id: str, step: int) -> int:
        """Drop step rows past `step` (the run resumes from a checkpoint at `step`, and those
        steps will be trained again; their rows would otherwise describe a discarded future)."""
        from sqlalchemy import delete

        with self.write() as s:
            res = s.execute(delete(Step).where(Step.run_id == run_id, Step.step > step))
        return res.rowcount or 0

    def add_checkpoint(self, run_id: str, step: int, path: str, complete: bool) -> None:
        with self.write() as s:
            row = s.scalars(select(Checkpoint).where(Checkpoint.run_id == run_id,
                                                     Checkpoint.step == step)).first()
            if row is None:
                s.add(Checkpoint(run_id=run_id, step=step, path=path, complete=complete))
            else:
                row.path, row.complete = path, complete

    def add_energy(self, run_id: str, samples: list[dict]) -> None:
        if samples:
            with self.write() as s:
                s.add_all([EnergySample(run_id=run_id, **x) for x in samples])

    def add_event(self, run_id: str, kind: str, **details: Any) -> None:
        with self.write() as s:
            s.add(RunEvent(run_id=run_id, kind=kind,
                           details=json.loads(json.dumps(details, default=str))))

    def add_plan(self, inputs: dict, outputs: dict, kind: str = "plan") -> str:
        plan = Plan(id=new_id("plan-"), kind=kind, inputs=json.loads(json.dumps(inputs, default=str)),
                    outputs=json.loads(json.dumps(outputs, default=str)))
        with self.write() as s:
            s.add(plan)
        return plan.id

    def get_plan(self, plan_id: str) -> Plan:
        with self.read() as s:
            plan = s.get(Plan, plan_id)
        if plan is None:
            raise BadInput(f"no plan with id {plan_id!r}; `cli.py plan` stores plans with ids")
        return plan

    # -- summaries ----------------------------------------------------------------------------
    def run_summaries(self, run_ids: list[str] | None = None) -> list[dict]:
        """One dict per run with its step and energy aggregates (newest first)."""
        with self.read() as s:
            q = select(Run).order_by(Run.created_at.desc())
            if run_ids is not None:
                q = q.where(Run.id.in_(run_ids))
            runs = list(s.scalars(q))
            agg = {r[0]: r[1:] for r in s.execute(
                select(Step.run_id, func.count(Step.id), func.max(Step.step), func.max(Step.tokens))
                .group_by(Step.run_id))}
            last = select(Step.run_id.label("rid"), func.max(Step.step).label("ms")) \
                .group_by(Step.run_id).subquery()
            final_loss = dict(s.execute(select(Step.run_id, Step.loss).join(
                last, (Step.run_id == last.c.rid) & (Step.step == last.c.ms))).all())
            energy = {r[0]: (r[1], r[2]) for r in s.execute(
                select(EnergySample.run_id, func.sum(EnergySample.joules),
                       func.group_concat(EnergySample.source.distinct()))
                .group_by(EnergySample.run_id))}
            out = []
            for run in runs:
                n_steps, last_step, tokens = agg.get(run.id, (0, None, None))
                joules, sources = energy.get(run.id, (None, None))
                out.append(run_summary(run, n_steps, last_step, tokens, final_loss.get(run.id), joules,
                                       sorted((sources or "").split(",")) if sources else []))
        return out


def run_summary(run: Run, n_steps: int, last_step: int | None, tokens: int | None,
                final_loss: float | None, energy_joules: float | None,
                energy_sources: list[str]) -> dict:
    return {
        "id": run.id,
        "name": run.name,
        "preset": run.preset,
        "status": shown_status(run),
        "steps": n_steps,
        "last_step": last_step,
        "tokens": tokens or 0,
        "final_loss": final_loss,
        "energy_joules": energy_joules or 0.0,
        "energy_sources": energy_sources,
        "created_at": _iso(run.created_at),
        "started_at": _iso(run.started_at),
        "ended_at": _iso(run.ended_at),
        "host": run.host,
        "code_version": run.code_version,
        "ray_address": run.ray_address,
        "job_id": run.job_id,
        "plan_id": run.plan_id,
        "storage_path": run.storage_path,
        "message": run.message,
        "waited_s": run.waited_s,
        "paused_s": run.paused_s,
    }


def _iso(t: datetime | None) -> str | None:
    return t.isoformat(timespec="seconds") + "Z" if t else None


def _disk_trouble(e: Exception) -> bool:
    """SQLite's words for a write the file system refused (ENOSPC, EFBIG, EIO)."""
    text = str(getattr(e, "orig", None) or e).lower()
    return "disk i/o error" in text or "database or disk is full" in text


def _short(e: Exception) -> str:
    orig = getattr(e, "orig", None) or e
    return str(orig).splitlines()[0][:200]


def open_store(db: str | None, home) -> Store:  # noqa: ANN001 (orchestrator.home.Home)
    """--db / TALLY_DB (a path or a SQLAlchemy URL) or `$TALLY_HOME/tally.db`."""
    db = db or os.environ.get("TALLY_DB")
    if db:
        url = db if "://" in db else f"sqlite:///{Path(db).expanduser().absolute()}"
        return Store(url)
    home.ensure()
    return Store(home.db_url)
