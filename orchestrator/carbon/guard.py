"""The training driver's carbon and budget guard: one object asked after each step report.

The driver (launcher's poll loop) calls `guard.check(now, step, spent)` with the latest step and
what the run has spent so far; the answer is None (go on), "pause" (checkpoint and stop now, then
resume at `guard.resume_at(now, step)`) or "budget" (checkpoint and stop for good: status
`budget-stopped`). It never touches Ray or the store, so it is tested without either.

Remaining time is estimated from the measured seconds per step (an average since the guard
started or since the last resume), so the deadline test tracks the real throughput.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from orchestrator.carbon.budgets import budget_allows_next
from orchestrator.carbon.scheduler import next_resume_time, should_pause
from orchestrator.carbon.signals import Signal


@dataclass
class Guard:
    total_steps: int
    signal: Signal | None = None
    policy: str = "now"  # now | delay | suspend | threshold
    deadline: datetime | None = None
    threshold_kg_per_kwh: float | None = None
    budget: dict = field(default_factory=dict)  # cost_usd / tco2eq / energy_mwh -> limit
    planned_step_cost: dict = field(default_factory=dict)  # before any step is measured
    # The most steps that can run from one check until a stop sent at the NEXT check takes
    # effect (steps between two driver polls, plus the steps a command takes to land).
    lookahead_steps: int = 3
    _t0: tuple[datetime, int] | None = None
    _per_step_max: dict = field(default_factory=dict)
    _last: tuple[int, dict] | None = None

    def seconds_per_step(self, now: datetime, step: int) -> float | None:
        if self._t0 is None or step <= self._t0[1]:
            return None
        return (now - self._t0[0]).total_seconds() / (step - self._t0[1])

    def started(self, now: datetime, step: int) -> None:
        """Call when the run starts or resumes at `step` (restarts the throughput clock)."""
        self._t0 = (now, step)

    def check(self, now: datetime, step: int, spent: dict) -> str | None:
        if self._t0 is None:
            self.started(now, step)
        # per-step cost: the largest seen between reports, so a noisy step cannot push it over
        if self._last is not None and step > self._last[0]:
            for k, v in spent.items():
                per = (v - self._last[1].get(k, 0.0)) / (step - self._last[0])
                self._per_step_max[k] = max(self._per_step_max.get(k, 0.0), per)
        self._last = (step, dict(spent))
        if self.budget:
            per_step = {k: self._per_step_max.get(k, self.planned_step_cost.get(k, 0.0))
                        for k in self.budget}
            # Going on is safe only if, stopped at the next check at the latest, the run would
            # still be within budget: so stop now when `lookahead_steps` more would cross it.
            # The stop command makes the workers save a checkpoint, so the run ends on one.
            n = min(self.lookahead_steps, self.total_steps - step)
            if n > 0 and not budget_allows_next(spent, per_step, self.budget, n):
                return "budget"
        if self.signal is not None and self.policy in ("suspend", "threshold"):
            remaining = self.remaining_s(now, step)
            if remaining is not None and should_pause(
                    self.signal, now, self.policy, remaining_s=remaining,
                    deadline=self.deadline, threshold_kg_per_kwh=self.threshold_kg_per_kwh):
                return "pause"
        return None

    def remaining_s(self, now: datetime, step: int) -> float | None:
        sps = self.seconds_per_step(now, step)
        return None if sps is None else (self.total_steps - step) * sps

    def resume_at(self, now: datetime, step: int, seconds_per_step: float) -> datetime | None:
        """When a run paused at `step` should resume (None: now)."""
        return next_resume_time(self.signal, now, self.policy,
                                remaining_s=(self.total_steps - step) * seconds_per_step,
                                deadline=self.deadline,
                                threshold_kg_per_kwh=self.threshold_kg_per_kwh)
