"""`runs` and `runs show`: what the store holds about each run."""

from __future__ import annotations

from sqlalchemy import select

from orchestrator.store import Checkpoint, Run, RunEvent, Store, _iso


def list_runs(store: Store, status: str | None = None, run_ids: list[str] | None = None) -> list[dict]:
    rows = store.run_summaries(run_ids)
    if status is not None:
        rows = [r for r in rows if r["status"] == status]
    with store.read() as s:
        configs = dict(s.execute(select(Run.id, Run.config)
                                 .where(Run.id.in_([r["id"] for r in rows]))).all()) if rows else {}
    return [_with_footprint(r, configs.get(r["id"]) or {}) for r in rows]


def _with_footprint(row: dict, config: dict) -> dict:
    """IT energy in kWh, and tCO2eq under the run's own PUE and grid intensity (LLaMA's 1.1 and
    0.385 where its config has none), through planners/footprint.py as `report carbon` does."""
    from planners import footprint as fp
    from reports.carbon import Overrides, assumptions_for

    row = dict(row)
    a = assumptions_for(config, Overrides())
    f = fp.footprint(fp.Energy(row["energy_joules"]), pue=a["pue"],
                     intensity_kg_per_kwh=a["intensity_kg_per_kwh"])
    row["energy_kwh"] = f.it_energy_kwh
    row["tco2eq"] = f.tco2eq
    row["pue"] = a["pue"]
    row["intensity_kg_per_kwh"] = a["intensity_kg_per_kwh"]
    return row


def show_run(store: Store, run_id: str) -> dict:
    run = store.get_run(run_id)
    summary = list_runs(store, run_ids=[run_id])[0]
    with store.read() as s:
        cks = list(s.scalars(select(Checkpoint).where(Checkpoint.run_id == run_id)
                             .order_by(Checkpoint.step)))
        events = [{"time": _iso(e.time), "kind": e.kind, "details": e.details or {}}
                  for e in s.scalars(select(RunEvent).where(RunEvent.run_id == run_id)
                                     .order_by(RunEvent.id))]
    summary["config"] = run.config
    from orchestrator.eval.records import scores_of

    return {
        "run": summary,
        "checkpoints": [{"step": c.step, "path": c.path, "complete": c.complete,
                         "created_at": _iso(c.created_at)} for c in cks],
        "events": events,  # what happened besides steps: resumes, pauses, restarts, warnings
        "eval_tasks": scores_of(store, run_id),
    }
