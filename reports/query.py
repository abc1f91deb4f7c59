"""Read-side SQL for reports: every aggregate is a GROUP BY in the database, never a Python loop
over step or energy rows (a long run holds millions of both).

Time bucketing uses SQLite's `julianday()`; the store is SQLite by default (see store.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from sqlalchemy import and_, case, func, select, tuple_

from orchestrator.store import EnergySample, Run, Step, Store
from planners.errors import BadInput
from planners.units import parse_duration_s

MEASURED_SOURCES = ("nvml", "nvml-power", "rapl")  # counters or sensors read on the hardware


@dataclass(frozen=True)
class Filters:
    run_ids: tuple[str, ...] = ()
    since: datetime | None = None  # naive UTC, like the store's timestamps
    preset: str | None = None


@dataclass
class RunData:
    """One run plus its aggregates, as the reports need them."""
    run: object  # orchestrator.store.Run (detached)
    steps: int = 0
    last_step: int | None = None
    tokens: int = 0
    final_loss: float | None = None
    first_step_time: datetime | None = None
    last_step_time: datetime | None = None
    first_energy_time: datetime | None = None
    last_energy_time: datetime | None = None
    # (source, kind) -> joules; kind is "gpu", "cpu", "ram" or the device name
    joules: dict[tuple[str, str], float] = field(default_factory=dict)


_RELATIVE = re.compile(r"^\s*[0-9]*\.?[0-9]+\s*(s|m|min|h|d|w)\s*$", re.IGNORECASE)


def parse_since(text: str | None, now: datetime | None = None) -> datetime | None:
    """'7d', '12h', '2w' (before now) or an ISO date/time ('2026-11-01', '2026-11-01T08:00Z')
    -> naive UTC datetime."""
    if text is None or str(text).strip() == "":
        return None
    now = now or datetime.now(timezone.utc).replace(tzinfo=None)
    s = str(text).strip()
    if _RELATIVE.match(s):
        return now - timedelta(seconds=parse_duration_s(s, "--since"))
    try:
        t = datetime.fromisoformat(s)
    except ValueError:
        raise BadInput(f"--since {text!r} is not a date; use an ISO date or time such as "
                       "2026-11-01 or 2026-11-01T08:00Z, or an age such as 7d, 12h or 2w") from None
    if t.tzinfo is not None:
        t = t.astimezone(timezone.utc).replace(tzinfo=None)
    return t


def _kind():
    return case((EnergySample.device.like("gpu:%"), "gpu"), else_=EnergySample.device)


def select_runs(store: Store, filters: Filters) -> list[RunData]:
    """Runs matching the filters (oldest first) with their step and energy aggregates."""
    with store.read() as s:
        q = select(Run).order_by(func.coalesce(Run.started_at, Run.created_at), Run.id)
        if filters.run_ids:
            q = q.where(Run.id.in_(filters.run_ids))
            found = set(s.scalars(select(Run.id).where(Run.id.in_(filters.run_ids))))
            missing = [r for r in filters.run_ids if r not in found]
            if missing:
                raise BadInput(f"no run with id {missing[0]!r}; `cli.py runs` lists the run ids")
        if filters.preset:
            q = q.where(Run.preset == filters.preset)
        if filters.since:
            q = q.where(func.coalesce(Run.started_at, Run.created_at) >= filters.since)
        runs = list(s.scalars(q))
        if not runs:
            return []
        data = {r.id: RunData(run=r) for r in runs}
        ids = list(data)
        _step_aggregates(s, data, ids)
        _energy_aggregates(s, data, ids)
    return list(data.values())


def _step_aggregates(s, data: dict[str, RunData], ids: list[str]) -> None:  # noqa: ANN001
    """Counts from the (run_id, step) index alone, then the first and last step rows by key:
    tokens are cumulative, so the last row holds the tokens trained and the final loss."""
    ends = {}
    for rid, n, first, last in s.execute(
            select(Step.run_id, func.count(), func.min(Step.step), func.max(Step.step))
            .where(Step.run_id.in_(ids)).group_by(Step.run_id)):
        data[rid].steps, data[rid].last_step = n, last
        ends[rid] = (first, last)
    if not ends:
        return
    keys = [(rid, st) for rid, pair in ends.items() for st in set(pair)]
    for rid, st, tokens, loss, t in s.execute(
            select(Step.run_id, Step.step, Step.tokens, Step.loss, Step.time)
            .where(tuple_(Step.run_id, Step.step).in_(keys))):
        d = data[rid]
        if st == ends[rid][0]:
            d.first_step_time = t
        if st == ends[rid][1]:
            d.last_step_time, d.tokens, d.final_loss = t, tokens or 0, loss


def _energy_aggregates(s, data: dict[str, RunData], ids: list[str]) -> None:  # noqa: ANN001
    """Joules per (source, device kind) per run. SQLite's GROUP BY sorts every row it groups;
    the (source, kind) pairs are few, so find them first (DISTINCT keeps only the pairs) and then
    sum one column per pair grouped by run_id alone, which the run_id index already orders."""
    kind = _kind()
    pairs = s.execute(select(EnergySample.source, kind).distinct()
                      .where(EnergySample.run_id.in_(ids))).all()
    if not pairs:
        return
    sums = [func.sum(case((and_(EnergySample.source == src, kind == k), EnergySample.joules)))
            for src, k in pairs]
    for rid, t0, t1, *joules in s.execute(
            select(EnergySample.run_id, func.min(EnergySample.time), func.max(EnergySample.time),
                   *sums).where(EnergySample.run_id.in_(ids)).group_by(EnergySample.run_id)):
        d = data[rid]
        d.first_energy_time, d.last_energy_time = t0, t1
        d.joules = {pair: float(j) for pair, j in zip(pairs, joules) if j is not None}


def known_presets(store: Store) -> set[str]:
    with store.read() as s:
        return set(s.scalars(select(Run.preset).distinct()))


def step_series(store: Store, run_id: str, points: int = 200) -> dict:
    """Loss and tokens/s averaged over about `points` equal step buckets."""
    with store.read() as s:
        lo, hi = s.execute(select(func.min(Step.step), func.max(Step.step))
                           .where(Step.run_id == run_id)).one()
        if lo is None:
            return {"step": [], "tokens": [], "loss": [], "tokens_per_s": [], "mfu": []}
        width = max(1, -(-(hi - lo + 1) // points))
        bucket = ((Step.step - lo) // width).label("b")
        rows = s.execute(select(func.max(Step.step), func.max(Step.tokens), func.avg(Step.loss),
                                func.avg(Step.tokens_per_s), func.avg(Step.mfu))
                         .where(Step.run_id == run_id).group_by(bucket).order_by(bucket)).all()
    return {"step": [r[0] for r in rows], "tokens": [r[1] for r in rows],
            "loss": [r[2] for r in rows], "tokens_per_s": [r[3] for r in rows],
            "mfu": [r[4] for r in rows]}


def power_series(store: Store, run_id: str, points: int = 200) -> dict:
    """Power over time, watts, by device kind: per bucket the mean of each device's readings,
    summed over the devices of that kind (so 8 GPUs at 300 W show 2400 W)."""
    secs = func.julianday(EnergySample.time) * 86400.0
    with store.read() as s:
        t0, t1 = s.execute(select(func.min(secs), func.max(secs))
                           .where(EnergySample.run_id == run_id)).one()
        if t0 is None:
            return {"t_s": [], "gpu_w": [], "cpu_w": [], "ram_w": [], "total_w": []}
        width = max((t1 - t0) / points * 1.000001, 1e-6)  # the last reading in bucket points-1
        bucket = func.cast((secs - t0) / width, _int()).label("b")
        kind = _kind().label("k")
        per_device = select(bucket, kind, EnergySample.node, EnergySample.device,
                            func.avg(EnergySample.watts).label("w")) \
            .where(EnergySample.run_id == run_id) \
            .group_by(bucket, kind, EnergySample.node, EnergySample.device).subquery()
        rows = s.execute(select(per_device.c.b, per_device.c.k, func.sum(per_device.c.w))
                         .group_by(per_device.c.b, per_device.c.k).order_by(per_device.c.b)).all()
    buckets: dict[int, dict[str, float]] = {}
    for b, k, w in rows:
        buckets.setdefault(int(b), {})[k] = float(w or 0.0)
    keys = sorted(buckets)
    out = {"t_s": [(b + 0.5) * width for b in keys]}
    for k in ("gpu", "cpu", "ram"):
        out[f"{k}_w"] = [buckets[b].get(k, 0.0) for b in keys]
    out["total_w"] = [sum(buckets[b].values()) for b in keys]
    return out


def _int():
    from sqlalchemy import Integer

    return Integer
