"""The store: SQLite through SQLAlchemy 2.0 (db.py), its schema (schema.py), Alembic migrations
(migrations/) and `$TALLY_HOME`'s layout (home.py)."""

from orchestrator.store.db import Store, _iso, new_id, open_store, run_summary  # noqa: F401
from orchestrator.store.schema import (RUN_STATUSES, Base, Checkpoint, EnergySample, Fit,  # noqa: F401
                                       EvalScore, Job, Plan, Run, RunEvent, Step, utcnow)
