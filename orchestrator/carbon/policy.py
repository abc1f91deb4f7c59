"""Carbon- and budget-awareness of one training run: the driver's side.

Built from a `RunSpec` by `RunPolicy.from_request`; the launcher asks it
  - before the start: `start_at()` (the delay policy's lowest-carbon window) and the budget
    projection (`check_start`);
  - after every driver poll: `command(step, energy_joules, elapsed_s)` -> None | "pause" |
    "budget" (the scheduler's Guard decides; the workers then checkpoint and stop);
  - after a pause: `resume_at(step)`.
A `Clock` lets a forecast be replayed faster than real time (`--sim-start`, `--sim-speed`):
the same code paths run, only the time they read is scaled.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from planners.errors import BadInput


class Clock:
    def __init__(self, start: datetime | None = None, speed: float = 1.0):
        if not speed > 0:
            raise BadInput(f"--sim-speed must be > 0, got {speed}")
        self.start, self.speed = start, speed
        self._t0 = time.monotonic()

    def now(self) -> datetime:
        if self.start is None:
            return datetime.now(timezone.utc)
        return self.start + timedelta(seconds=(time.monotonic() - self._t0) * self.speed)

    def sleep_until(self, when: datetime) -> float:
        """Sleep (scaled) until `when`; returns the simulated seconds waited."""
        wait = (when - self.now()).total_seconds()
        if wait > 0:
            time.sleep(wait / self.speed)
        return max(0.0, wait)


@dataclass
class RunPolicy:
    clock: Clock
    pue: float
    intensity_kg_per_kwh: float  # static assumption, used where no signal covers the time
    price_usd_per_hour: float | None  # per worker device (GPU-hour, or CPU worker-hour)
    workers: int
    total_steps: int
    policy: str = "now"
    signal: object | None = None
    deadline: datetime | None = None
    threshold_kg_per_kwh: float | None = None
    hours: float | None = None
    budget: dict = field(default_factory=dict)
    guard: object | None = None
    _spent: dict = field(default_factory=lambda: {"energy_mwh": 0.0, "tco2eq": 0.0,
                                                   "cost_usd": 0.0})
    _joules_seen: float = 0.0
    segments: list = field(default_factory=list)  # (start, end) of running time

    @classmethod
    def from_request(cls, spec, assumptions: dict, total_steps: int, workers: int,
                     prediction: dict) -> "RunPolicy":
        from orchestrator.carbon.budgets import budgets
        from orchestrator.carbon.guard import Guard
        from orchestrator.carbon.signals import load_signal, parse_time
        from orchestrator.carbon.scheduler import POLICIES, parse_when

        start = None
        if spec.sim_start:
            try:
                start = parse_time(spec.sim_start)[0]
            except Exception:
                raise BadInput(f"--sim-start {spec.sim_start!r} is not an ISO time such as "
                               "2026-11-20T06:00Z") from None
        clock = Clock(start, spec.sim_speed)
        p = cls(clock=clock, pue=assumptions["pue"],
                intensity_kg_per_kwh=assumptions["intensity_kg_per_kwh"],
                price_usd_per_hour=assumptions.get("price_usd_per_gpu_hour"),
                workers=workers, total_steps=total_steps, hours=spec.hours,
                budget=budgets(spec.max_usd, spec.max_tco2, spec.max_mwh))
        if spec.carbon_aware:
            if spec.policy not in POLICIES or spec.policy == "now":
                raise BadInput(f"--policy {spec.policy!r} is not one of delay, suspend, threshold")
            if not spec.forecast:
                raise BadInput("--carbon-aware needs --forecast FILE (an intensity forecast: "
                               "Electricity Maps, WattTime, UK National Grid JSON or "
                               "time,zone,g_per_kwh CSV)")
            p.signal = load_signal(spec.forecast)
            p.policy = spec.policy
            p.deadline = parse_when(spec.deadline, clock.now(), "--deadline")
            if spec.policy == "threshold":
                if spec.threshold_g_per_kwh is None:
                    raise BadInput("--policy threshold needs --threshold (g CO2eq/kWh)")
                p.threshold_kg_per_kwh = spec.threshold_g_per_kwh / 1000.0
            if p.hours is None:
                days = prediction.get("days")
                if not days:
                    raise BadInput("--carbon-aware needs the run's expected duration: give "
                                   "--hours H")
                p.hours = days * 24
            if p.deadline is not None and p.deadline < clock.now() + timedelta(hours=p.hours):
                raise BadInput(f"--deadline {spec.deadline} is sooner than the run's expected "
                               f"{p.hours:g} h; give a later deadline or fewer steps")
        elif spec.forecast or spec.deadline:
            raise BadInput("--forecast and --deadline need --carbon-aware")
        if p.budget or p.signal is not None:
            per_step = {}
            if prediction and total_steps:
                for k in ("energy_mwh", "tco2eq", "cost_usd"):
                    if prediction.get(k) is not None:
                        per_step[k] = prediction[k] / total_steps
            p.guard = Guard(total_steps, signal=p.signal, policy=p.policy, deadline=p.deadline,
                            threshold_kg_per_kwh=p.threshold_kg_per_kwh, budget=p.budget,
                            planned_step_cost=per_step)
        return p

    @property
    def active(self) -> bool:
        return self.guard is not None

    def check_start(self, projected: dict) -> list[str]:
        """Budget projection at the start: warnings, or BadInput when it would be exceeded."""
        from orchestrator.carbon.budgets import check_budget

        if not self.budget:
            return []
        return check_budget(projected, **{f"max_{k}": v for k, v in (
            ("usd", self.budget.get("cost_usd")), ("tco2", self.budget.get("tco2eq")),
            ("mwh", self.budget.get("energy_mwh")))})

    def start_at(self) -> tuple[datetime, dict] | None:
        """The delay policy's start, or None to start now."""
        from orchestrator.carbon.scheduler import best_start

        if self.signal is None or self.policy != "delay":
            return None
        now = self.clock.now()
        deadline = self.deadline or self.signal.end
        choice = best_start(self.signal, self.hours * 3600, now, deadline)
        return choice.start, {"start": choice.start.isoformat(), "tco2eq_per_mwh": choice.tco2eq,
                              "tco2eq_per_mwh_if_now": choice.tco2eq_if_now}

    def intensity_now(self) -> float:
        if self.signal is not None:
            kg = self.signal.intensity_at(self.clock.now())
            if kg is not None:
                return kg
        return self.intensity_kg_per_kwh

    def spent(self, energy_joules: float, elapsed_s: float) -> dict:
        """What the run has spent: facility energy, emissions (at the intensity of the time each
        joule arrived) and device-hours x price."""
        new = max(0.0, energy_joules - self._joules_seen)
        self._joules_seen = energy_joules
        mwh = new / 3.6e9 * self.pue
        self._spent["energy_mwh"] += mwh
        self._spent["tco2eq"] += mwh * self.intensity_now()  # MWh x kg/kWh = t
        hours = elapsed_s * self.clock.speed / 3600 * self.workers
        self._spent["cost_usd"] = hours * (self.price_usd_per_hour or 0.0)
        return dict(self._spent)

    def command(self, step: int, energy_joules: float, elapsed_s: float) -> str | None:
        if self.guard is None:
            return None
        return self.guard.check(self.clock.now(), step, self.spent(energy_joules, elapsed_s))

    def resume_at(self, step: int) -> datetime | None:
        now = self.clock.now()
        sps = self.guard.seconds_per_step(now, step) or 1.0
        return self.guard.resume_at(now, step, sps)

    def savings(self) -> dict | None:
        """Emissions of the run's running time against running at once, from the same signal."""
        from orchestrator.carbon.scheduler import savings_vs_now

        if self.signal is None or not self.segments:
            return None
        energy = self._spent["energy_mwh"] or 1.0
        try:
            return savings_vs_now(self.signal, self.segments, energy, self.segments[0][0]
                                  if not getattr(self, "requested_at", None) else self.requested_at)
        except BadInput as e:
            return {"error": str(e)}
