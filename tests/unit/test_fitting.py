"""planners.fitting and planners.isoflop: the Chinchilla fit recovers known laws; degenerate sweeps
are refused; the IsoFLOP ladder keeps its budgets; the sweep's resume decision."""

from __future__ import annotations

import gc
import math

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from model.presets import param_count
from orchestrator.scaling.sweep import decide, point_key
from planners.errors import BadInput
from planners.fitting import (KEYS, Point, check_points, compute_optimal, fit_points,
                              interval_laws, optimal_exponents, predict)
from planners.isoflop import isoflop_ladder

@pytest.fixture(autouse=True, scope="module")
def _collect_after():
    """Collect this module's garbage before later modules run: tests/test_store.py checks a
    database file is unchanged, and a store left open by an in-process CLI call there can be
    closed (checkpointing its WAL into the file) by a collection that our garbage triggers."""
    yield
    gc.collect()


CHINCHILLA = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.336, "beta": 0.283}
# A law shaped like what tiny CPU models give (higher floor, steeper data term).
SMALL = {"E": 2.2, "A": 60.0, "B": 900.0, "alpha": 0.30, "beta": 0.38}


def isoflop_points(law, budgets, per_budget=5, width=8.0, noise=0.0, seed=0):
    """Points on IsoFLOP profiles around each budget's optimum, loss x exp(N(0, noise))."""
    rng = np.random.default_rng(seed)
    pts = []
    for c in budgets:
        n_opt, _ = compute_optimal(law, c)
        for n in np.geomspace(n_opt / width, n_opt * width, per_budget):
            d = c / (6 * n)
            loss = float(predict(law, n, d)) * math.exp(rng.normal(0, noise)) if noise else \
                float(predict(law, n, d))
            pts.append(Point(params=float(n), tokens=float(d), loss=loss, run_id=f"r{len(pts)}",
                             budget_flops=c))
    return pts


def test_chinchilla_constants_fitted_back():
    pts = isoflop_points(CHINCHILLA, [1e18, 1e19, 1e20, 1e21, 1e22])
    r = fit_points(pts, bootstrap=0)
    for k in KEYS:  # noise-free: recovered to 0.1%
        assert r.constants[k] == pytest.approx(CHINCHILLA[k], rel=1e-3), k
    assert r.exponents["a"] == pytest.approx(0.283 / 0.619, rel=1e-3)
    assert r.exponents["b"] == pytest.approx(0.336 / 0.619, rel=1e-3)
    assert max(abs(x["residual_pct"]) for x in r.residuals) < 1e-3
    assert r.converged


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_noisy_synthetic_law_recovered_within_tolerance(seed):
    """0.5% multiplicative noise on 4 budgets x 5 sizes. Stated tolerances: alpha and beta within
    0.04, E within 3%, the exponent a within 0.04, and the fitted law within 1% of the true
    (noise-free) loss at every point.
    (A and B are much looser: they trade off against alpha, beta and E.)"""
    pts = isoflop_points(SMALL, [1e13, 1e14, 1e15, 1e16], noise=0.005, seed=seed)
    r = fit_points(pts, bootstrap=20, seed=seed)
    c = r.constants
    assert abs(c["alpha"] - SMALL["alpha"]) < 0.04
    assert abs(c["beta"] - SMALL["beta"]) < 0.04
    assert c["E"] == pytest.approx(SMALL["E"], rel=0.03)
    assert abs(r.exponents["a"] - optimal_exponents(SMALL)["a"]) < 0.04
    truth = predict(SMALL, np.array([p.params for p in pts]), np.array([p.tokens for p in pts]))
    fitted = np.array([x["predicted"] for x in r.residuals])
    assert np.max(np.abs(fitted / truth - 1)) < 0.01
    # the bootstrap intervals bracket the estimate and have width
    for k in ("E", "alpha", "beta", "a"):
        lo, hi = r.intervals[k]
        value = r.exponents[k] if k == "a" else c[k]
        assert lo <= value <= hi and hi > lo, k
    assert len(r.bootstrap) == 20


def test_fit_is_deterministic_for_a_seed():
    pts = isoflop_points(SMALL, [1e13, 1e14, 1e15], per_budget=4, noise=0.01, seed=5)
    a = fit_points(pts, bootstrap=8, seed=3)
    b = fit_points(pts, bootstrap=8, seed=3)
    assert a.constants == b.constants and a.intervals == b.intervals


def test_noisier_data_gives_wider_intervals():
    quiet = fit_points(isoflop_points(SMALL, [1e13, 1e14, 1e15], noise=0.002, seed=4), bootstrap=15)
    loud = fit_points(isoflop_points(SMALL, [1e13, 1e14, 1e15], noise=0.02, seed=4), bootstrap=15)
    width = lambda r: r.intervals["beta"][1] - r.intervals["beta"][0]  # noqa: E731
    assert width(loud) > 2 * width(quiet)


def test_compute_optimal_matches_a_numerical_minimum():
    c = 1e21
    n_opt, d_opt = compute_optimal(CHINCHILLA, c)
    res = minimize_scalar(lambda x: predict(CHINCHILLA, math.exp(x), c / (6 * math.exp(x))),
                          bounds=(math.log(1e6), math.log(1e13)), method="bounded",
                          options={"xatol": 1e-9})
    assert n_opt == pytest.approx(math.exp(res.x), rel=1e-4)
    assert 6 * n_opt * d_opt == pytest.approx(c, rel=1e-9)


# -- refusals ---------------------------------------------------------------------------------
def _refused(points, *needles):
    with pytest.raises(BadInput) as e:
        check_points(points)
    for n in needles:
        assert n in str(e.value), str(e.value)


def test_degenerate_sweeps_refused_with_the_reason():
    one_size = [Point(1e6, d, float(predict(SMALL, 1e6, d))) for d in np.geomspace(1e6, 1e8, 6)]
    _refused(one_size, "one model size")
    one_tokens = [Point(n, 1e7, float(predict(SMALL, n, 1e7))) for n in np.geomspace(1e5, 1e7, 6)]
    _refused(one_tokens, "one token count")
    one_budget = isoflop_points(SMALL, [1e14], per_budget=8)
    _refused(one_budget, "one compute budget", "two budgets")
    ratio20 = [Point(n, 20 * n, float(predict(SMALL, n, 20 * n))) for n in np.geomspace(1e5, 1e7, 6)]
    _refused(ratio20, "one line", "tokens-per-parameter")
    _refused(isoflop_points(SMALL, [1e13, 1e14], per_budget=2), "at least 6 runs", "got 4")
    bad = isoflop_points(SMALL, [1e13, 1e14], per_budget=3)
    for loss in (float("nan"), 0.0, -1.0, float("inf")):
        _refused(bad[:-1] + [Point(1e6, 1e7, loss, run_id="rX")], "'rX'", "validation loss")


def test_fit_refuses_bad_options():
    pts = isoflop_points(SMALL, [1e13, 1e14], per_budget=3)
    with pytest.raises(BadInput, match="between 0 and 1"):
        fit_points(pts, level=1.5, bootstrap=0)
    with pytest.raises(BadInput, match="bootstrap"):
        fit_points(pts, bootstrap=-1)


# -- interval_laws ----------------------------------------------------------------------------
def test_interval_laws_are_whole_bootstrap_draws_ordered_by_optimal_size():
    pts = isoflop_points(SMALL, [1e13, 1e14, 1e15], noise=0.01, seed=7)
    r = fit_points(pts, bootstrap=20)
    details = {"bootstrap": r.bootstrap}
    laws = interval_laws(details, budget_flops=1e16)
    assert len(laws) == 3
    assert all(set(law) == set(KEYS) for law in laws)
    assert all(law in r.bootstrap for law in laws)  # coherent constant sets, not mixed percentiles
    n = [compute_optimal(law, 1e16)[0] for law in laws]
    assert n[0] <= n[1] <= n[2] and n[0] < n[2]
    by_a = [optimal_exponents(law)["a"] for law in interval_laws(details)]
    assert by_a == sorted(by_a)
    assert interval_laws({}) == []


# -- IsoFLOP ladder ---------------------------------------------------------------------------
def test_isoflop_ladder_keeps_each_budget_and_spans_sizes():
    budgets = [3e13, 1e14, 3e14]
    ladder = isoflop_ladder(budgets, 4)
    assert {p.budget_flops for p in ladder} == set(budgets)
    for c in budgets:
        rungs = [p for p in ladder if p.budget_flops == c]
        assert len(rungs) == 4
        ns = [p.params for p in rungs]
        assert ns == sorted(ns) and len(set(ns)) == len(ns)  # distinct, smallest first
        assert [p.size_index for p in rungs] == list(range(len(rungs)))
        for p in rungs:
            assert p.params == param_count(p.args)
            assert p.tokens == p.steps * p.batch_tokens
            # D = C/(6N) up to half a step of rounding
            assert abs(p.flops - c) <= 6 * p.params * p.batch_tokens / 2 + 1
            assert p.args.vocab_size == 8192 and p.args.max_seq_len == 256
            assert 2e5 < p.params < 6e6  # tiny models that train on a CPU
        # the ladder straddles the prior optimum (20 tokens per parameter) where shapes allow
        assert rungs[-1].tokens_per_param < 20 < rungs[0].tokens_per_param


def test_isoflop_ladder_shifts_up_instead_of_repeating_the_smallest_shape():
    rungs = isoflop_ladder([3e12], 3)  # the prior optimum (~50k params) is below every shape
    ns = [p.params for p in rungs]
    assert len(ns) == 3 and ns == sorted(set(ns))
    assert "nearest free shape" in rungs[0].notes[0]


def test_isoflop_ladder_bad_input():
    for args, needle in (([[], 3], "empty"), ([[1e14, 1e14], 3], "repeats"),
                         ([[1e14], 0], "--sizes"), ([[-1.0], 3], "positive")):
        with pytest.raises(BadInput, match=needle):
            isoflop_ladder(*args)


# -- sweep resume decision --------------------------------------------------------------------
def test_sweep_decides_only_unfinished_points_are_trained():
    ladder = isoflop_ladder([1e14, 3e14], 3)
    sid = "sweep-test"
    k0, k1, k2 = (point_key(sid, p, "demo", 0) for p in ladder[:3])
    runs = [
        {"id": "a", "status": "completed", "config": {"sweep": k0}, "has_eval": True},
        {"id": "b", "status": "failed", "config": {"sweep": k1}, "has_eval": False},
        {"id": "c", "status": "completed", "config": {"sweep": k2}, "has_eval": False},
        # same point, other data or seed: not ours
        {"id": "d", "status": "completed", "config": {"sweep": {**point_key(sid, ladder[3], "other", 0)}},
         "has_eval": True},
        {"id": "e", "status": "completed", "config": {"sweep": {**point_key(sid, ladder[4], "demo", 1)}},
         "has_eval": True},
    ]
    items = decide(ladder, sid, "demo", 0, runs)
    assert [i.status for i in items] == ["done"] + ["todo"] * (len(ladder) - 1)
    assert items[0].run_id == "a"
    assert items[1].run_id == "b" and "failed" in items[1].note
    assert "without a validation loss" in items[2].note
    assert items[3].run_id is None and items[4].run_id is None
    assert all(i.key["id"] == sid for i in items)
