"""Sizing against an independent brute-force search along the loss constraint."""

from __future__ import annotations

import numpy as np
import pytest

from planners.errors import BadInput
from planners.scaling import CHINCHILLA, EPOCH, LossLaw
from planners.sizing import chinchilla_point, cost_optimal, dollars, inference_optimal

CUSTOM = LossLaw(E=2.1, A=250.0, B=900.0, alpha=0.30, beta=0.35, name="custom")


def brute_force(law: LossLaw, target: float, cost_per_n) -> tuple[float, float]:
    """Grid over log D (2e5 points across 12 decades above where N would be infinite); N from
    the constraint written out here; the D with the least cost_per_n(D) * N."""
    log_dmin = np.log(law.B / (target - law.E)) / law.beta
    u = np.linspace(log_dmin + 1e-7, log_dmin + 28.0, 200_001)
    d = np.exp(u)
    n = (law.A / (target - law.E - law.B * d ** -law.beta)) ** (1 / law.alpha)
    total = n * cost_per_n(d)
    i = int(np.argmin(total))
    return n[i], d[i]


CASES = [(law, target, d_inf) for law in (CHINCHILLA, EPOCH, CUSTOM)
         for target in (law.E + 0.15, law.E + 0.35, law.E + 0.9)
         for d_inf in (0.0, 1e11, 2e12, 1e14)]


@pytest.mark.parametrize("law,target,d_inf", CASES,
                         ids=[f"{c[0].name}-{c[1]:.2f}-{c[2]:.0e}" for c in CASES])
def test_inference_optimal_matches_brute_force(law, target, d_inf):
    opt = inference_optimal(law, target, d_inf)
    n_bf, d_bf = brute_force(law, target, lambda d: 6 * d + 2 * d_inf)
    flops = lambda n, d: 6 * n * d + 2 * n * d_inf  # noqa: E731
    assert flops(opt.params, opt.tokens) <= flops(n_bf, d_bf) * (1 + 1e-9)
    assert opt.tokens == pytest.approx(d_bf, rel=5e-3)
    assert opt.params == pytest.approx(n_bf, rel=5e-3)
    assert law.loss(opt.params, opt.tokens) == pytest.approx(target, abs=1e-10)


@pytest.mark.parametrize("law", [CHINCHILLA, EPOCH, CUSTOM], ids=lambda l: l.name)
def test_no_inference_is_the_chinchilla_point(law):
    for target in (law.E + 0.1, law.E + 0.5):
        chin, opt = chinchilla_point(law, target), inference_optimal(law, target, 0.0)
        assert opt.params == pytest.approx(chin.params, rel=1e-9)
        assert opt.tokens == pytest.approx(chin.tokens, rel=1e-9)


def test_more_demand_means_smaller_and_longer():
    points = [inference_optimal(CHINCHILLA, 2.0, d) for d in (0, 1e11, 1e12, 1e13, 1e14)]
    assert all(a.params > b.params and a.tokens < b.tokens for a, b in zip(points, points[1:]))


RATES = dict(usd_per_train_flop=1.5 / (312e12 * 0.45 * 3600),
             usd_per_prefill_flop=2.0 / (989e12 * 0.5 * 3600),
             usd_per_decode_flop=2.0 / (989e12 * 0.04 * 3600))


@pytest.mark.parametrize("law", [CHINCHILLA, EPOCH, CUSTOM], ids=lambda l: l.name)
@pytest.mark.parametrize("prompt,output", [(0, 0), (1e12, 2e11), (5e13, 5e13), (0, 3e12)])
def test_cost_optimal_matches_brute_force(law, prompt, output):
    target = law.E + 0.3
    opt = cost_optimal(law, target, prompt_tokens=prompt, output_tokens=output, **RATES)
    usd = lambda n, d: dollars(n, d, prompt_tokens=prompt, output_tokens=output, **RATES)  # noqa
    n_bf, d_bf = brute_force(law, target, lambda d: usd(1.0, d))
    assert usd(opt.params, opt.tokens) <= usd(n_bf, d_bf) * (1 + 1e-9)
    assert opt.tokens == pytest.approx(d_bf, rel=5e-3)
    # Dollars are N·(6·D·c_t + const), so the optimum is the FLOPs optimum at an effective demand.
    d_eff = (prompt * RATES["usd_per_prefill_flop"] + output * RATES["usd_per_decode_flop"]) \
        / RATES["usd_per_train_flop"]
    ref = inference_optimal(law, target, d_eff)
    assert opt.tokens == pytest.approx(ref.tokens, rel=1e-4)
    assert opt.params == pytest.approx(ref.params, rel=1e-4)


@pytest.mark.parametrize("target", [1.69, 1.5, 0.0, float("nan")])
def test_unreachable_targets(target):
    for fn in (lambda: chinchilla_point(CHINCHILLA, target),
               lambda: inference_optimal(CHINCHILLA, target, 1e12),
               lambda: cost_optimal(CHINCHILLA, target, **RATES)):
        with pytest.raises(BadInput):
            fn()


def test_negative_demand_is_refused():
    with pytest.raises(BadInput, match="inference tokens"):
        inference_optimal(CHINCHILLA, 2.0, -1.0)
