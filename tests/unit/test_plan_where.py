"""`plan --regions` (where to train, issue 9) and `plan --fit NAME` with a stored fit's bootstrap
interval (issue 10), through the CLI; figures recomputed independently here."""

from __future__ import annotations

import math

import numpy as np
import pytest

from orchestrator.scaling.fits import save_fit
from orchestrator.store.home import Home
from orchestrator.store import open_store
from planners.fitting import Point, compute_optimal, fit_points, predict
from planners.grid import lookup
from tests.conftest import assert_bad_input

CANDIDATES = ["gcp:us-central1", "gcp:europe-west9", "FRA", "us:iowa"]
OPTIMISE = ["plan", "--target-perf", "2.0", "--inference-budget", "2T", "--no-presets", "--json"]


def test_regions_rank_the_recommended_option_recomputed_by_hand(home, run_cli):
    r = run_cli(*OPTIMISE, "--regions", ",".join(CANDIDATES),
                "--region-prices", "gcp:us-central1=2.1,fra=3")
    assert r.code == 0, r.stderr
    plan = r.json()
    assert plan["regions_for"] == "cost-optimal"
    opt = next(o for o in plan["options"] if o["label"] == "cost-optimal")
    # training only: GPU-hours x 400 W x PUE 1.1 -> MWh; x kg/kWh -> t; x $/GPU-hour
    mwh = opt["train_gpu_hours"] * 400 * 1.1 / 1e6
    price = {"gcp:us-central1": 2.1, "FRA": 3.0}
    want = sorted((mwh * lookup(c).kg_per_kwh, lookup(c).region) for c in CANDIDATES)
    assert [row["region"] for row in plan["regions"]] == [name for _, name in want]
    for row, (t, name) in zip(plan["regions"], want):
        assert row["tco2eq"] == pytest.approx(t, rel=1e-9)
        assert row["energy_mwh"] == pytest.approx(mwh, rel=1e-9)
        assert row["cost_usd"] == pytest.approx(opt["train_gpu_hours"] * price.get(name, 1.5))
        assert row["price_source"].startswith("given" if name in price else "the plan")
    assert plan["regions"][0]["tco2eq_vs_best"] == 1.0
    stored = open_store(None, Home.resolve()).get_plan(plan["id"])
    assert stored.outputs["regions"] == plan["regions"]
    assert stored.inputs["regions"] == ",".join(CANDIDATES)


def test_regions_all_evaluate_mode_and_human_table(home, run_cli):
    r = run_cli("plan", "--model", "7b", "--no-presets", "--regions", "all", "--json")
    assert r.code == 0, r.stderr
    plan = r.json()
    assert plan["regions_for"] == "given" and len(plan["regions"]) > 100
    t = [row["tco2eq"] for row in plan["regions"]]
    assert t == sorted(t) and t[-1] > 10 * t[0]
    given = plan["options"][0]
    assert plan["regions"][0]["energy_mwh"] == pytest.approx(given["train_energy_mwh"])
    r = run_cli("plan", "--model", "7b", "--no-presets", "--regions", "FRA,DEU",
                "--regions-for", "chinchilla")
    assert r.code == 0, r.stderr
    assert "where to train (chinchilla, training only)" in r.stdout
    assert r.stdout.index("FRA") < r.stdout.index("DEU")


@pytest.mark.parametrize("args,needles", [
    (["--regions", "FRA,gcp:mars-1"], ["gcp:mars-1"]),
    (["--regions", "FRA", "--region-prices", "DEU=2"], ["DEU", "not among --regions"]),
    (["--regions", "FRA", "--region-prices", "FRA:2"], ["--region-prices"]),
    (["--regions", "FRA", "--region-prices", "FRA=-1"], ["-1"]),
    (["--regions", "FRA", "--regions-for", "65b"], ["65b", "cost-optimal"]),
    (["--region-prices", "FRA=2"], ["--regions"]),
])
def test_regions_bad_input(home, run_cli, args, needles):
    assert_bad_input(run_cli(*OPTIMISE, *args), *needles)


# -- plan --fit NAME with a stored fit's bootstrap ---------------------------------------------
LAW = {"E": 2.2, "A": 60.0, "B": 900.0, "alpha": 0.30, "beta": 0.38}


def _store_fit(name: str, bootstrap: int) -> dict:
    rng = np.random.default_rng(0)
    pts = []
    for c in (1e15, 1e16, 1e17):
        n_opt, _ = compute_optimal(LAW, c)
        for n in np.geomspace(n_opt / 6, n_opt * 6, 4):
            d = c / (6 * n)
            loss = float(predict(LAW, n, d)) * math.exp(rng.normal(0, 0.005))
            pts.append(Point(float(n), float(d), loss, run_id=f"r{len(pts)}", budget_flops=c))
    result = fit_points(pts, bootstrap=bootstrap, seed=1)
    save_fit(open_store(None, Home.resolve()), name, result)
    return result.constants


def test_plan_fit_interval_moves_the_recommendation(home, run_cli):
    constants = _store_fit("mine", bootstrap=8)
    r = run_cli("plan", "--target-perf", "2.6", "--inference-budget", "1e12", "--fit", "mine",
                "--no-presets", "--json")
    assert r.code == 0, r.stderr
    plan = r.json()
    assert {k: plan["fit"][k] for k in LAW} == pytest.approx(constants)
    fi = plan["fit_interval"]
    assert fi["n_bootstrap"] == 8 and [row["quantile"] for row in fi["rows"]] == [0.05, 0.5, 0.95]
    stored = open_store(None, Home.resolve())
    from orchestrator.scaling.fits import load_fit
    draws = load_fit(stored, "mine")["details"]["bootstrap"]
    n_at_budget = []
    for row in fi["rows"]:
        k = row["constants"]
        assert any(all(d[x] == pytest.approx(k[x]) for x in LAW) for d in draws)
        by = {o["label"]: o for o in row["options"]}
        chin, inf = by["chinchilla"], by["inference-optimal"]
        for o in row["options"]:  # every option reaches the target under its own draw
            assert float(predict(k, o["params"], o["tokens"])) == pytest.approx(2.6, rel=1e-6)
        # the Chinchilla point is compute-optimal for its own FLOPs (eq. 4, another code path)
        n_opt, d_opt = compute_optimal(k, 6 * chin["params"] * chin["tokens"])
        assert chin["params"] == pytest.approx(n_opt, rel=1e-4)
        assert chin["tokens"] == pytest.approx(d_opt, rel=1e-4)
        # serving 1e12 tokens: inference-optimal is smaller, trained longer, fewer total FLOPs
        assert inf["params"] < chin["params"] and inf["total_flops"] <= chin["total_flops"]
        assert chin["total_flops"] == pytest.approx(
            6 * chin["params"] * chin["tokens"] + 2 * chin["params"] * 1e12, rel=1e-9)
        n_at_budget.append(compute_optimal(k, fi["budget_flops"])[0])
    assert n_at_budget == sorted(n_at_budget)
    human = run_cli("plan", "--target-perf", "2.6", "--fit", "mine", "--no-presets")
    assert human.code == 0 and "across fit mine's uncertainty" in human.stdout
    assert "p95" in human.stdout


def test_plan_fit_without_bootstrap_and_named_fits_untouched(home, run_cli):
    _store_fit("flat", bootstrap=0)
    r = run_cli("plan", "--target-perf", "2.6", "--fit", "flat", "--json")
    assert r.code == 0, r.stderr
    assert r.json()["fit_interval"]["rows"] == []
    assert "fit_interval" not in run_cli(*OPTIMISE).json()
    assert_bad_input(run_cli(*OPTIMISE, "--fit", "nosuch"), "nosuch")


# -- runs: waited / paused columns (issue 9) ---------------------------------------------------
def test_runs_table_shows_wait_and_pause_only_when_some_run_has_them(home, run_cli):
    store = open_store(None, Home.resolve())
    store.create_run("tiny", {}, run_id="tiny-plain", status="completed")
    assert "waited" not in run_cli("runs").stdout
    store.create_run("tiny", {}, run_id="tiny-waited", status="completed")
    store.update_run("tiny-waited", waited_s=3725.0, paused_s=90.0)
    out = run_cli("runs").stdout
    assert "waited" in out and "paused" in out
    line = next(x for x in out.splitlines() if "tiny-waited" in x)
    assert "1h 02m" in line and "1m 30s" in line
    plain = next(x for x in out.splitlines() if "tiny-plain" in x)
    assert "1h" not in plain and "1m" not in plain
    rows = run_cli("runs", "--json").json()
    assert {r["id"]: r["waited_s"] for r in rows}["tiny-waited"] == 3725.0


def test_fit_interval_marks_a_draw_whose_floor_is_above_the_target():
    from planners.plan import make_plan
    from planners.scaling import CHINCHILLA

    base = CHINCHILLA.constants()
    draws = [{**base, "E": e} for e in (1.69, 1.8, 1.95)]
    plan = make_plan(target=1.9, fit=CHINCHILLA, fit_details={"bootstrap": draws},
                     presets=False)
    rows = plan["fit_interval"]["rows"]
    assert sorted(r["constants"]["E"] for r in rows) == [1.69, 1.8, 1.95]
    for r in rows:
        assert r["unreachable"] == (r["constants"]["E"] >= 1.9)
        assert (r["options"] == []) == r["unreachable"]
    # same A, B, alpha, beta: a higher floor needs a bigger model for the same loss
    chin = {r["constants"]["E"]: r["options"][0]["params"] for r in rows if r["options"]}
    assert chin[1.8] > chin[1.69]
