"""Budgets (refuse at start, stop before crossing at run time) and where-to-train ranking."""

from __future__ import annotations

import pytest

from planners.errors import BadInput
from planners.grid import lookup
from orchestrator.carbon.budgets import BUDGET_STOPPED, budget_allows_next, check_budget
from planners.regions import rank_regions


def test_check_budget_warns_near_and_refuses_over():
    p = {"cost_usd": 900.0, "tco2eq": 1.0, "energy_mwh": 2.0}
    assert check_budget(p) == []
    assert check_budget(p, max_usd=2000, max_tco2=10, max_mwh=10) == []
    w = check_budget(p, max_usd=1000)
    assert len(w) == 1 and "90%" in w[0] and "--max-usd" in w[0]
    with pytest.raises(BadInput, match=r"exceeds --max-tco2.*exceeds --max-mwh"):
        check_budget(p, max_tco2=0.5, max_mwh=1.5)
    assert "cannot be checked" in check_budget({"tco2eq": 1.0}, max_usd=10)[0]
    with pytest.raises(BadInput, match="--max-usd must be a number > 0"):
        check_budget(p, max_usd=-1)


def _run_with_budget(step_costs, budget, checkpoint_every):
    """A training driver's loop: at each complete checkpoint ask whether the run may reach the
    next one; per-step estimate = the plan's (1.2) before any step, then the largest seen."""
    spent, last_ckpt, biggest = 0.0, 0, 0.0
    first = budget_allows_next({}, {"cost_usd": 1.2}, {"cost_usd": budget}, checkpoint_every)
    if not first:
        return BUDGET_STOPPED, 0, 0.0, first.reason
    for step, c in enumerate(step_costs, 1):
        spent += c
        biggest = max(biggest, c)
        if step % checkpoint_every == 0:
            last_ckpt = step
            ok = budget_allows_next({"cost_usd": spent}, {"cost_usd": biggest},
                                    {"cost_usd": budget, "tco2eq": None}, checkpoint_every)
            if not ok:
                return BUDGET_STOPPED, step, spent, ok.reason
    return "completed", last_ckpt, spent, None


@pytest.mark.parametrize("budget", [5.0, 10.0, 37.3, 99.9, 150.0])
def test_budget_stop_lands_on_a_checkpoint_before_the_budget_is_crossed(budget):
    costs = [1.0 + 0.05 * ((k * 7) % 5) for k in range(100)]  # 1.0 .. 1.2 per step
    status, step, spent, reason = _run_with_budget(costs, budget, checkpoint_every=10)
    if sum(costs) <= budget:
        assert status == "completed"
        return
    assert status == "budget-stopped" and step % 10 == 0
    assert spent <= budget
    assert spent + sum(costs[step:step + 10]) > budget or step + 10 > len(costs) or \
        spent + 1.2 * 10 > budget  # going on would (or could, at the largest step) cross it
    assert "--max-usd" in reason


def test_budget_allows_next_checks_every_key():
    ok = budget_allows_next({"tco2eq": 0.9, "energy_mwh": 1.0},
                            {"tco2eq": 0.01, "energy_mwh": 0.1}, {"tco2eq": 1.0, "energy_mwh": 5},
                            10)
    assert ok
    no = budget_allows_next({"tco2eq": 0.95}, {"tco2eq": 0.01}, {"tco2eq": 1.0}, 10)
    assert not no and no.key == "tco2eq"
    with pytest.raises(ValueError):
        budget_allows_next({}, {}, {"cost_usd": 5}, 1)


def test_rank_regions_by_carbon_then_dollars():
    regions = ["gcp:us-central1", "gcp:europe-west9", "FRA", "us:iowa"]
    rows = rank_regions(100.0, 50_000, regions, prices={"FRA": 3.0}, default_price=2.0)
    assert [r["rank"] for r in rows] == [1, 2, 3, 4]
    by_hand = sorted((100.0 * lookup(r).kg_per_kwh, lookup(r).region) for r in regions)
    assert [r["region"] for r in rows] == [name for _, name in by_hand]
    for r in rows:
        assert r["tco2eq"] == pytest.approx(100.0 * lookup(r["region"]).kg_per_kwh)
        assert r["cost_usd"] == pytest.approx(50_000 * (3.0 if r["region"] == "FRA" else 2.0))
    assert rows[0]["tco2eq_vs_best"] == 1 and rows[-1]["tco2eq_vs_best"] > 1
    assert rank_regions(1.0, 1.0, "FRA,DEU")[0]["cost_usd"] is None


def test_rank_all_regions_and_unknown_region():
    rows = rank_regions(1.0, 10.0, "all", default_price=1.0)
    assert len(rows) > 100 and len({r["region"] for r in rows}) == len(rows)
    assert all(a["tco2eq"] <= b["tco2eq"] for a, b in zip(rows, rows[1:]))
    with pytest.raises(BadInput, match="unknown region 'gcp:mars-1'"):
        rank_regions(1.0, 1.0, ["FRA", "gcp:mars-1"])
