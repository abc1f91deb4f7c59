"""The store: SQLite through SQLAlchemy 2.0, its schema (db.py), Alembic migrations
(migrations/) and `$TALLY_HOME`'s layout (home.py)."""

from orchestrator.store.db import (RUN_STATUSES, Base, Checkpoint, EnergySample, Fit, Job, Plan,  # noqa: F401
                                   Run, RunEvent, Step, Store, _iso, new_id, open_store,
                                   run_summary, utcnow)
