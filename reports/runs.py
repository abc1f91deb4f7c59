"""`runs` and `runs show`: what the store holds about each run."""

from __future__ import annotations

from sqlalchemy import select

from orchestrator.store import Checkpoint, Run, Store, _iso


def list_runs(store: Store, status: str | None = None, run_ids: list[str] | None = None) -> list[dict]:
    rows = store.run_summaries(run_ids)
    if status is not None:
        rows = [r for r in rows if r["status"] == status]
    return [_with_footprint(r) for r in rows]


def _with_footprint(row: dict) -> dict:
    row = dict(row)
    row["energy_kwh"] = row["energy_joules"] / 3.6e6
    return row


def show_run(store: Store, run_id: str) -> dict:
    run = store.get_run(run_id)
    summary = list_runs(store, run_ids=[run_id])[0]
    with store.read() as s:
        cks = list(s.scalars(select(Checkpoint).where(Checkpoint.run_id == run_id)
                             .order_by(Checkpoint.step)))
    summary["config"] = run.config
    return {
        "run": summary,
        "checkpoints": [{"step": c.step, "path": c.path, "complete": c.complete,
                         "created_at": _iso(c.created_at)} for c in cks],
    }
