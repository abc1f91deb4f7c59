"""Evaluation scores in the store: written from a run's "eval-tasks" events (events.py), read by
`runs show` and `report run`."""

from __future__ import annotations

from sqlalchemy import delete, select

from orchestrator.store.schema import EvalScore

FIELDS = ("task", "n", "acc", "acc_norm")


def add_scores(store, run_id: str, step: int, tokens: int, tasks: list[dict], time) -> int:
    """One row per task at `step`; a (step, task) already stored is replaced (the step was
    trained again after a resume)."""
    with store.write() as s:
        s.execute(delete(EvalScore).where(EvalScore.run_id == run_id, EvalScore.step == step))
        s.add_all([EvalScore(run_id=run_id, step=step, tokens=tokens, time=time,
                             **{k: t[k] for k in FIELDS}) for t in tasks])
    return len(tasks)


def delete_after(store, run_id: str, step: int) -> int:
    """Scores past `step` describe a discarded future once the run resumes from `step`."""
    with store.write() as s:
        res = s.execute(delete(EvalScore).where(EvalScore.run_id == run_id, EvalScore.step > step))
    return res.rowcount or 0


def scores_of(store, run_id: str) -> list[dict]:
    """{"step", "tokens", "task", "n", "acc", "acc_norm"} by step, then task."""
    with store.read() as s:
        rows = s.scalars(select(EvalScore).where(EvalScore.run_id == run_id)
                         .order_by(EvalScore.step, EvalScore.task))
        return [{"step": r.step, "tokens": r.tokens, "task": r.task, "n": r.n, "acc": r.acc,
                 "acc_norm": r.acc_norm} for r in rows]
