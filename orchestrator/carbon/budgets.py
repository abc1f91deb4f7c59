"""Budgets in dollars, tCO2eq and MWh: refuse a run projected to exceed them, and stop a running
one at a checkpoint before it would cross them (status `budget-stopped`, resumable with a larger
budget).

Keys are the same everywhere: `cost_usd`, `tco2eq`, `energy_mwh` (projections, amounts spent,
per-step costs and budgets alike).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from planners.errors import BadInput

BUDGET_STOPPED = "budget-stopped"
KEYS = {"cost_usd": ("--max-usd", "$", ",.2f"), "tco2eq": ("--max-tco2", "", ".4g"),
        "energy_mwh": ("--max-mwh", "", ".4g")}
_UNITS = {"cost_usd": "", "tco2eq": " tCO2eq", "energy_mwh": " MWh"}
WARN_FRACTION = 0.8  # warn when a projection uses 80% of a budget or more


def budgets(max_usd: float | None = None, max_tco2: float | None = None,
            max_mwh: float | None = None) -> dict[str, float]:
    """CLI budget options -> {key: limit}, refusing zero, negative or non-finite limits."""
    out = {}
    for key, value in (("cost_usd", max_usd), ("tco2eq", max_tco2), ("energy_mwh", max_mwh)):
        if value is None:
            continue
        if not (math.isfinite(value) and value > 0):
            raise BadInput(f"{KEYS[key][0]} must be a number > 0, got {value}")
        out[key] = float(value)
    return out


def _fmt(key: str, x: float) -> str:
    _, prefix, spec = KEYS[key]
    return f"{prefix}{format(x, spec)}{_UNITS[key]}"


def check_budget(projected: dict, max_usd: float | None = None, max_tco2: float | None = None,
                 max_mwh: float | None = None, warn_fraction: float = WARN_FRACTION) -> list[str]:
    """Warnings for a projection near a budget; BadInput when it exceeds one.

    A budget whose quantity the projection lacks (no price given, say) is a warning, not a pass."""
    limits = budgets(max_usd, max_tco2, max_mwh)
    warnings, over = [], []
    for key, limit in limits.items():
        value = projected.get(key)
        if value is None:
            warnings.append(f"{KEYS[key][0]} {_fmt(key, limit)} cannot be checked before the "
                            f"start: the projection has no {key}")
        elif value > limit:
            over.append(f"projected {_fmt(key, value)} exceeds {KEYS[key][0]} {_fmt(key, limit)}")
        elif value >= warn_fraction * limit:
            warnings.append(f"projected {_fmt(key, value)} is {100 * value / limit:.0f}% of "
                            f"{KEYS[key][0]} {_fmt(key, limit)}")
    if over:
        raise BadInput("; ".join(over) + "; raise the budget or plan a smaller run")
    return warnings


@dataclass(frozen=True)
class BudgetCheck:
    allowed: bool
    reason: str | None = None  # why not, naming the quantity and the figures
    key: str | None = None

    def __bool__(self) -> bool:
        return self.allowed


def budget_allows_next(spent_so_far: dict, per_step_cost: dict, budget: dict,
                       steps_until_next_checkpoint: int) -> BudgetCheck:
    """Call at each complete checkpoint: may the run go on to the next one without crossing the
    budget? If not, stop here (this checkpoint is complete) with status `budget-stopped`.

    `per_step_cost` is the driver's estimate per step (e.g. the largest seen recently, so a
    noisy step does not push the run over); `budget` maps keys to limits (None: no limit)."""
    if steps_until_next_checkpoint < 0:
        raise ValueError("steps_until_next_checkpoint must be >= 0")
    for key, limit in budget.items():
        if limit is None:
            continue
        if key not in KEYS:
            raise ValueError(f"unknown budget key {key!r}; use {', '.join(KEYS)}")
        if key not in per_step_cost:
            raise ValueError(f"per_step_cost lacks {key!r}, needed for its budget")
        spent = float(spent_so_far.get(key, 0.0))
        at_next = spent + float(per_step_cost[key]) * steps_until_next_checkpoint
        if at_next > limit:
            return BudgetCheck(False, f"{KEYS[key][0]} {_fmt(key, limit)}: spent "
                               f"{_fmt(key, spent)}, the next checkpoint would reach "
                               f"{_fmt(key, at_next)}", key)
    return BudgetCheck(True)
