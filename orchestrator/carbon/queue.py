"""The job queue: `schedule add/list/run` keep training jobs in the store's `jobs` table and
start them in priority order, inside their carbon windows and budgets.

Ordering (decided by `plan_queue`, a pure function of the jobs and the time):
  - higher `priority` first, then older first;
  - a job whose budget projection exceeds its limits, whose deadline can no longer be met, or
    whose forecast cannot be used is refused (status `failed`, with the reason);
  - a `delay` job waits for its best start (`scheduler.best_start`); a `threshold`/`suspend` job
    waits while `scheduler.should_pause` says so; others start now;
  - jobs run one at a time. A lower-priority job may start ahead of a waiting higher-priority one
    only if its predicted `hours` end before that job's chosen start (backfilling), so it never
    delays it.
Starting a job is `orchestrator.launcher.start_job(job: dict, store) -> run_id`, imported lazily.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable

from sqlalchemy import select

from planners.errors import BadInput, RunFailed
from orchestrator.carbon import scheduler
from orchestrator.carbon.budgets import check_budget
from orchestrator.carbon.signals import iso, load_signal, parse_time
from orchestrator.store import Job, Store, new_id

JOB_STATUSES = ("queued", "running", "done", "failed")
START_TOLERANCE_S = 60.0  # a best start this close to now counts as now


def utc_now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def add_job(store: Store, preset: str, *, priority: int = 0, deadline: str | None = None,
            policy: str | None = None, forecast: str | None = None,
            threshold_g_per_kwh: float | None = None, hours: float | None = None,
            energy_mwh: float | None = None, cost_usd: float | None = None,
            max_usd: float | None = None, max_tco2: float | None = None,
            max_mwh: float | None = None, now: datetime | None = None,
            train: dict | None = None) -> dict:
    """Validate and queue a job. `deadline`: ISO time or a duration from now ('48h')."""
    from model.presets import UnknownPreset, get_preset

    try:
        preset = get_preset(preset).name
    except UnknownPreset as e:
        raise BadInput(str(e).strip("'\"")) from None
    now = now or utc_now()
    if policy is None:
        policy = "delay" if forecast is not None else "now"
    if policy not in scheduler.POLICIES:
        raise BadInput(f"unknown --policy {policy!r}; use one of {', '.join(scheduler.POLICIES)}")
    for name, value in (("--hours", hours), ("--energy-mwh", energy_mwh)):
        if value is not None and not value > 0:
            raise BadInput(f"{name} must be > 0, got {value}")
    if cost_usd is not None and cost_usd < 0:
        raise BadInput(f"--cost-usd must be >= 0, got {cost_usd}")
    if threshold_g_per_kwh is not None and not 0 <= threshold_g_per_kwh <= 5000:
        raise BadInput(f"--threshold must be between 0 and 5000 g CO2eq/kWh, got "
                       f"{threshold_g_per_kwh}")
    if policy == "threshold" and threshold_g_per_kwh is None:
        raise BadInput("--policy threshold needs --threshold (g CO2eq/kWh)")
    if policy != "now" and forecast is None:
        raise BadInput(f"--policy {policy} needs --forecast FILE (an intensity forecast)")
    if forecast is not None and hours is None:
        raise BadInput("--forecast needs --hours (the job's predicted running time) to find its "
                       "carbon window")
    if forecast is not None:
        load_signal(forecast)  # refuse an unreadable forecast now, not when the queue runs
        forecast = str(forecast)
    end = scheduler.parse_when(deadline, now, "--deadline")
    if end is not None and hours is not None and end < now + timedelta(hours=hours):
        raise BadInput(f"--deadline {deadline} ({iso(end)}) is sooner than the job's {hours:g} h "
                       "from now; give a later deadline")
    options = {"deadline": iso(end), "policy": policy, "forecast": forecast,
               "threshold_g_per_kwh": threshold_g_per_kwh, "hours": hours,
               "energy_mwh": energy_mwh, "cost_usd": cost_usd, "max_usd": max_usd,
               "max_tco2": max_tco2, "max_mwh": max_mwh, "train": dict(train or {})}
    check_budget(_projection(options), max_usd, max_tco2, max_mwh)  # refuse now if over
    job = Job(id=new_id(f"job-{preset}-"), priority=int(priority), status="queued", preset=preset,
              options=options)
    with store.write() as s:
        s.add(job)
    return job_dict(job)


def job_dict(job: Job) -> dict:
    return {"id": job.id, "priority": job.priority, "status": job.status, "preset": job.preset,
            "options": dict(job.options or {}), "run_id": job.run_id, "message": job.message,
            "created_at": iso(job.created_at.replace(tzinfo=timezone.utc))
            if job.created_at else None}


def list_jobs(store: Store, status: str | None = None) -> list[dict]:
    """Jobs in the order the queue would consider them (priority, then age)."""
    if status is not None and status not in JOB_STATUSES:
        raise BadInput(f"unknown job status {status!r}; use one of {', '.join(JOB_STATUSES)}")
    with store.read() as s:
        q = select(Job).order_by(Job.priority.desc(), Job.created_at, Job.id)
        if status is not None:
            q = q.where(Job.status == status)
        return [job_dict(j) for j in s.scalars(q)]


def _projection(o: dict) -> dict:
    return {k: o.get(k) for k in ("cost_usd", "tco2eq", "energy_mwh")}


@dataclass
class Decision:
    job_id: str
    action: str  # "start" | "wait" | "refuse"
    start_at: str | None = None  # ISO time: now for start, the chosen start for wait
    reason: str = ""
    warnings: list[str] = field(default_factory=list)
    expected_tco2eq: float | None = None
    tco2eq_if_now: float | None = None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def decide(job: dict, now: datetime) -> Decision:
    """Whether one queued job may start at `now`, must wait (until when), or is refused."""
    o = job["options"]
    hours = o.get("hours")
    deadline = parse_time(o["deadline"])[0] if o.get("deadline") else None
    d = Decision(job["id"], "start", iso(now))
    try:
        if deadline is not None and hours is not None and now + timedelta(hours=hours) > deadline:
            raise BadInput(f"cannot finish {hours:g} h of work by its deadline {iso(deadline)}")
        if deadline is not None and now >= deadline:
            raise BadInput(f"its deadline {iso(deadline)} has passed")
        projected = _projection(o)
        if o.get("forecast") and hours is not None:
            signal = load_signal(o["forecast"])
            deadline = deadline or signal.end  # no deadline: anywhere in the forecast
            energy = o.get("energy_mwh") or 1.0
            policy = o.get("policy", "delay")
            thr = (o.get("threshold_g_per_kwh") or 0) / 1000
            choice = scheduler.best_start(signal, hours * 3600, now, deadline, energy_mwh=energy)
            if o.get("energy_mwh"):  # the policy's own expected emissions, and starting now
                expected = choice.tco2eq if policy == "delay" else scheduler.plan_policy(
                    policy, signal, energy, hours * 3600, now, deadline, thr).tco2eq
                d.expected_tco2eq, d.tco2eq_if_now = expected, choice.tco2eq_if_now
                if projected.get("tco2eq") is None:
                    projected["tco2eq"] = expected
            if policy == "delay" and (choice.start - now).total_seconds() > START_TOLERANCE_S:
                d.action, d.start_at = "wait", iso(choice.start)
                d.reason = f"lowest-carbon start for its {hours:g} h before {iso(deadline)}"
            elif policy in ("threshold", "suspend"):
                kw = dict(remaining_s=hours * 3600, deadline=deadline, threshold_kg_per_kwh=thr)
                resume = scheduler.next_resume_time(signal, now, policy, **kw)
                if resume is not None:
                    d.action, d.start_at = "wait", iso(resume)
                    d.reason = f"{policy} policy: grid too carbon-intensive now"
        d.warnings = check_budget(projected, o.get("max_usd"), o.get("max_tco2"),
                                  o.get("max_mwh"))
    except BadInput as e:
        d.action, d.start_at, d.reason = "refuse", None, str(e)
    return d


def plan_queue(jobs: list[dict], now: datetime) -> list[Decision]:
    """Decisions for the queued jobs at `now`, in priority order. At most one job gets
    action "start" (jobs run one at a time); backfilling as described above."""
    queued = [j for j in jobs if j["status"] == "queued"]
    queued.sort(key=lambda j: (-j["priority"], j["created_at"] or "", j["id"]))
    out, started, blocked_until = [], False, None
    for job in queued:
        d = decide(job, now)
        if d.action == "start":
            hours = job["options"].get("hours")
            if started:
                d.action, d.start_at, d.reason = "wait", None, "another job starts first"
            elif blocked_until is not None and (
                    hours is None or now + timedelta(hours=hours) > blocked_until):
                d.action, d.start_at = "wait", None
                d.reason = (f"a higher-priority job starts at {iso(blocked_until)} and this one "
                            "would not finish before it")
            else:
                started = True
        elif d.action == "wait" and d.start_at is not None:
            t = parse_time(d.start_at)[0]
            blocked_until = t if blocked_until is None else min(blocked_until, t)
        out.append(d)
    return out


def _set(store: Store, job_id: str, **fields) -> None:
    with store.write() as s:
        job = s.get(Job, job_id)
        for k, v in fields.items():
            setattr(job, k, v)


def run_queue(store: Store, *, now: datetime | None = None, dry_run: bool = False,
              clock: Callable[[], datetime] = utc_now,
              start_job: Callable | None = None) -> dict:
    """One pass over the queue: refuse what cannot run, start what may start now (one after the
    other, re-deciding after each since time has passed), and say when the others will be due.
    `now` fixes the time of the first decision (for replaying an old forecast)."""
    started, first = [], True
    while True:
        t = now if (first and now is not None) else clock()
        first = False
        decisions = plan_queue(list_jobs(store, "queued"), t)
        if dry_run:
            return {"time": iso(t), "dry_run": True, "started": [],
                    "decisions": [d.as_dict() for d in decisions]}
        for d in decisions:
            if d.action == "refuse":
                _set(store, d.job_id, status="failed", message=d.reason)
        go = next((d for d in decisions if d.action == "start"), None)
        if go is None:
            return {"time": iso(t), "dry_run": False, "started": started,
                    "decisions": [d.as_dict() for d in decisions]}
        if start_job is None:
            start_job = _launcher_start_job()
        job = next(j for j in list_jobs(store, "queued") if j["id"] == go.job_id)
        _set(store, job["id"], status="running", message=None)
        try:
            run_id = start_job(job, store)
        except Exception as e:  # the job failed; the queue goes on with the next one
            _set(store, job["id"], status="failed", message=f"{type(e).__name__}: {e}")
            started.append({"job_id": job["id"], "run_id": None, "status": "failed",
                            "message": str(e)})
            continue
        _set(store, job["id"], status="done", run_id=run_id)
        started.append({"job_id": job["id"], "run_id": run_id, "status": "done"})


def _launcher_start_job() -> Callable:
    try:
        from orchestrator.run.launcher import start_job  # the lead's training launcher (issue 5)
    except ImportError:
        raise RunFailed("this build has no training launcher (orchestrator.launcher.start_job); "
                        "`schedule run --dry-run` shows what would start") from None
    return start_job
