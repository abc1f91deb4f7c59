"""Fitting L(N, D) = E + A/N^alpha + B/D^beta to a team's own runs, the way Chinchilla did.

Hoffmann et al. 2022 (arXiv 2203.15556), appendix D.2: with a = log A, b = log B, e = log E,
minimise over (a, b, e, alpha, beta)

    sum_i Huber_delta( LSE(a - alpha*log N_i, b - beta*log D_i, e) - log L_i ),   delta = 1e-3,

with L-BFGS from a grid of starting points, keeping the best. Their grid (alpha, beta in
{0, 0.5, ..., 2}, e in {-1, -0.5, ..., 1}, a, b in {0, 5, ..., 25}: 4,500 points) is evaluated
here in full, vectorised; L-BFGS-B (with the analytic gradient) then starts from the best
`starts` of them rather than from all 4,500, which costs ~10 ms each. Bootstrap intervals resample
the runs with replacement and refit (Chinchilla's own approach-3 intervals came from
bootstrapping too; Besiroglu et al. 2024 showed how much too narrow a badly converged fit makes
them, hence the tight tolerances below).

Pure numpy + scipy: no torch, no Ray, no store.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
from scipy.optimize import minimize
from scipy.special import logsumexp
from threadpoolctl import threadpool_limits

from planners.errors import BadInput

HUBER_DELTA = 1e-3
MIN_RUNS = 6  # the law has five constants: five points are fitted exactly and say nothing
KEYS = ("E", "A", "B", "alpha", "beta")
# Chinchilla appendix D.2's initialisation grid.
GRID = {
    "alpha": np.arange(0.0, 2.01, 0.5),
    "beta": np.arange(0.0, 2.01, 0.5),
    "e": np.arange(-1.0, 1.01, 0.5),
    "a": np.arange(0.0, 25.01, 5.0),
    "b": np.arange(0.0, 25.01, 5.0),
}
# a, b, e, alpha, beta: wide enough never to bind on a sensible sweep (A, B up to e^80, E from
# 4.5e-5 to 148 nats), narrow enough that exp() stays finite and exponents stay non-negative.
_BOUNDS = [(-30.0, 80.0), (-30.0, 80.0), (-10.0, 5.0), (0.0, 5.0), (0.0, 5.0)]
_NAMES = ("log A", "log B", "log E", "alpha", "beta")


@dataclass(frozen=True)
class Point:
    """One finished run: N parameters, D training tokens, its final validation loss (nats/token)."""
    params: float
    tokens: float
    loss: float
    run_id: str | None = None
    budget_flops: float | None = None  # the nominal IsoFLOP budget it was trained for, if any


@dataclass
class FitResult:
    constants: dict  # E, A, B, alpha, beta
    exponents: dict  # a = beta/(alpha+beta) (N_opt ~ C^a), b = alpha/(alpha+beta) (D_opt ~ C^b)
    objective: float  # the Huber objective at the optimum (sum over runs)
    intervals: dict  # name -> [lo, hi] at `level`, for the constants and a, b
    level: float
    bootstrap: list[dict]  # constants of each bootstrap refit
    residuals: list[dict]  # per run: params, tokens, loss, predicted, residual, residual_pct
    n_runs: int
    starts: int
    converged: bool
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


# -- the law and its arithmetic --------------------------------------------------------------
def predict(constants: dict, params, tokens):
    """L(N, D) for arrays or scalars."""
    c = constants
    return c["E"] + c["A"] / np.power(params, c["alpha"]) + c["B"] / np.power(tokens, c["beta"])


def optimal_exponents(constants: dict) -> dict:
    s = constants["alpha"] + constants["beta"]
    if s <= 0:
        return {"a": float("nan"), "b": float("nan")}
    return {"a": constants["beta"] / s, "b": constants["alpha"] / s}


def compute_optimal(constants: dict, budget_flops: float) -> tuple[float, float]:
    """(N_opt, D_opt) minimising L at C = 6*N*D (Hoffmann et al. eq. 4):
    N_opt = G*(C/6)^a, D_opt = (C/6)^b / G, G = (alpha*A / (beta*B))^(1/(alpha+beta))."""
    c = constants
    if c["alpha"] <= 0 or c["beta"] <= 0:
        return float("nan"), float("nan")
    ex = optimal_exponents(c)
    log_g = (math.log(c["alpha"] * c["A"]) - math.log(c["beta"] * c["B"])) / (c["alpha"] + c["beta"])
    x = math.log(budget_flops / 6.0)
    return math.exp(log_g + ex["a"] * x), math.exp(ex["b"] * x - log_g)


# -- input checks ----------------------------------------------------------------------------
def check_points(points: Sequence[Point]) -> None:
    """Refuse a set of runs the law cannot be identified from, saying why."""
    if len(points) < MIN_RUNS:
        raise BadInput(f"a fit needs at least {MIN_RUNS} runs with a validation loss (the law has "
                       f"five constants), got {len(points)}")
    for p in points:
        who = f"run {p.run_id!r}" if p.run_id else f"point (N={p.params:g}, D={p.tokens:g})"
        for name, v in (("validation loss", p.loss), ("parameter count", p.params),
                        ("token count", p.tokens)):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise BadInput(f"{who} has {name} {v!r}; a fit needs finite, positive values")
    log_n = np.log([p.params for p in points])
    log_d = np.log([p.tokens for p in points])
    if np.ptp(log_n) < 1e-6:
        raise BadInput(f"all {len(points)} runs have one model size (N={points[0].params:g}): "
                       "A/N^alpha cannot be told apart from E; a sweep needs several sizes")
    if np.ptp(log_d) < 1e-6:
        raise BadInput(f"all {len(points)} runs have one token count (D={points[0].tokens:g}): "
                       "B/D^beta cannot be told apart from E; a sweep needs several budgets")
    log_c = log_n + log_d
    if np.ptp(log_c) < math.log(1.05):
        raise BadInput(f"all {len(points)} runs lie on one compute budget (6ND = "
                       f"{6 * math.exp(np.median(log_c)):.3g} FLOPs): the N and D terms cannot be "
                       "told apart; a sweep needs at least two budgets")
    # Any other straight line in (log N, log D), e.g. a fixed tokens-per-parameter ratio, also
    # leaves the law unidentifiable: the smaller singular value of the centred design says so.
    x = np.column_stack([log_n - log_n.mean(), log_d - log_d.mean()])
    sv = np.linalg.svd(x, compute_uv=False)
    if sv[1] < 1e-3 * sv[0]:
        slope = np.polyfit(log_n, log_d, 1)[0]
        raise BadInput(f"the runs lie on one line D ~ N^{slope:.2f} (e.g. a fixed "
                       "tokens-per-parameter ratio), so the N and D terms cannot be told apart; "
                       "vary model size and token count independently")


# -- the Chinchilla objective ----------------------------------------------------------------
def _huber(r: np.ndarray, delta: float) -> np.ndarray:
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def _objective(theta: np.ndarray, log_n, log_d, log_l, delta: float):
    """The Huber objective and its gradient in (a, b, e, alpha, beta)."""
    a, b, e, alpha, beta = theta
    t0, t1 = a - alpha * log_n, b - beta * log_d
    m = np.maximum(np.maximum(t0, t1), e)
    x0, x1, x2 = np.exp(t0 - m), np.exp(t1 - m), np.exp(e - m)
    s = x0 + x1 + x2
    r = m + np.log(s) - log_l  # LSE - log L
    dh = np.clip(r, -delta, delta) / s  # Huber'(r) times the softmax normaliser
    g0, g1 = dh * x0, dh * x1
    grad = np.array([g0.sum(), g1.sum(), (dh * x2).sum(), -(g0 @ log_n), -(g1 @ log_d)])
    return float(_huber(r, delta).sum()), grad


def _grid_starts(log_n, log_d, log_l, delta: float, k: int) -> np.ndarray:
    """The k best points of Chinchilla's grid by objective (evaluated for all of it at once)."""
    mesh = np.meshgrid(GRID["a"], GRID["b"], GRID["e"], GRID["alpha"], GRID["beta"], indexing="ij")
    th = np.stack([m.ravel() for m in mesh], axis=1)  # (G, 5): a, b, e, alpha, beta
    terms = np.stack([th[:, [0]] - th[:, [3]] * log_n, th[:, [1]] - th[:, [4]] * log_d,
                      np.broadcast_to(th[:, [2]], (len(th), len(log_n)))])
    r = logsumexp(terms, axis=0) - log_l
    obj = _huber(r, delta).sum(axis=1)
    return th[np.argsort(obj, kind="stable")[:k]]


def _minimise(starts: np.ndarray, log_n, log_d, log_l, delta: float):
    best = None
    for x0 in starts:
        res = minimize(_objective, x0, args=(log_n, log_d, log_l, delta), jac=True,
                       method="L-BFGS-B", bounds=_BOUNDS,
                       options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-12})
        if np.all(np.isfinite(res.x)) and (best is None or res.fun < best.fun):
            best = res
    return best


def _constants(theta: np.ndarray) -> dict:
    a, b, e, alpha, beta = (float(v) for v in theta)
    return {"E": math.exp(e), "A": math.exp(a), "B": math.exp(b), "alpha": alpha, "beta": beta}


def fit_points(points: Sequence[Point], *, bootstrap: int = 200, level: float = 0.9,
               starts: int = 20, delta: float = HUBER_DELTA, seed: int = 0) -> FitResult:
    """Fit the law to `points` (Chinchilla's method) with `bootstrap` resampled refits for
    `level` (default 90%) percentile intervals. BadInput when the runs cannot identify the law.
    Deterministic for a given `seed`."""
    # L-BFGS-B's few-element BLAS calls run ~18x slower with a multi-threaded OpenBLAS on a
    # busy machine (measured: 9 s vs 0.5 s for a fit with 5 bootstrap refits).
    with threadpool_limits(limits=1, user_api="blas"):
        return _fit_points(points, bootstrap, level, starts, delta, seed)


def _fit_points(points, bootstrap, level, starts, delta, seed) -> FitResult:
    check_points(points)
    if not 0 < level < 1:
        raise BadInput(f"confidence level {level!r} must be between 0 and 1 (e.g. 0.9)")
    if bootstrap < 0:
        raise BadInput(f"--bootstrap {bootstrap} must be >= 0 (0 skips the intervals)")
    log_n = np.log([p.params for p in points])
    log_d = np.log([p.tokens for p in points])
    log_l = np.log([p.loss for p in points])
    best = _minimise(_grid_starts(log_n, log_d, log_l, delta, starts), log_n, log_d, log_l, delta)
    constants = _constants(best.x)
    notes = [f"{name} sits at its bound {v:g}: the runs barely constrain that term"
             for name, (lo, hi), x in zip(_NAMES, _BOUNDS, best.x)
             for v in (lo, hi) if abs(x - v) < 1e-6]

    rng = np.random.default_rng(seed)
    draws: list[dict] = []
    idx_all = np.arange(len(points))
    tries = 0
    while len(draws) < bootstrap and tries < 5 * bootstrap:
        tries += 1
        idx = rng.choice(idx_all, size=len(points), replace=True)
        try:
            check_points([points[i] for i in np.unique(idx)])
        except BadInput:
            continue  # a resample that cannot identify the law (too few distinct runs) is redrawn
        bn, bd, bl = log_n[idx], log_d[idx], log_l[idx]
        x0 = np.vstack([best.x, _grid_starts(bn, bd, bl, delta, 1)])
        res = _minimise(x0, bn, bd, bl, delta)
        draws.append(_constants(res.x))
    if len(draws) < bootstrap:
        notes.append(f"only {len(draws)} of {bootstrap} bootstrap resamples could identify the law")

    intervals = {}
    if draws:
        q = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
        for key in KEYS:
            intervals[key] = [float(v) for v in np.percentile([d[key] for d in draws], q)]
        for key in ("a", "b"):
            vals = [optimal_exponents(d)[key] for d in draws]
            intervals[key] = [float(v) for v in np.nanpercentile(vals, q)]

    pred = predict(constants, np.exp(log_n), np.exp(log_d))
    residuals = [{
        "run_id": p.run_id, "params": p.params, "tokens": p.tokens,
        "budget_flops": p.budget_flops if p.budget_flops else 6.0 * p.params * p.tokens,
        "loss": p.loss, "predicted": float(y), "residual": float(p.loss - y),
        "residual_pct": float(100 * (p.loss - y) / y),
    } for p, y in zip(points, pred)]
    return FitResult(constants=constants, exponents=optimal_exponents(constants),
                     objective=float(best.fun), intervals=intervals, level=level, bootstrap=draws,
                     residuals=residuals, n_runs=len(points), starts=starts,
                     converged=bool(best.success), notes=notes)


# -- using a stored fit's uncertainty --------------------------------------------------------
def interval_laws(details: dict, budget_flops: float | None = None,
                  quantiles: Sequence[float] = (0.05, 0.5, 0.95)) -> list[dict]:
    """Whole constant sets from a fit's bootstrap, for showing how a recommendation moves across
    the fit's uncertainty: the draws at `quantiles` of the compute-optimal N at `budget_flops`
    (or, without a budget, of the exponent a). Whole draws, not per-constant percentiles, so
    each returned law is one the data supports (E, A, B, alpha, beta are strongly correlated).
    Ordered low to high; [] when the fit has no bootstrap."""
    draws = [d for d in details.get("bootstrap", []) if all(k in d for k in KEYS)]
    if not draws:
        return []
    if budget_flops is not None:
        keys = [compute_optimal(d, budget_flops)[0] for d in draws]
    else:
        keys = [optimal_exponents(d)["a"] for d in draws]
    keys = np.array([k if math.isfinite(k) else np.inf for k in keys])
    order = np.argsort(keys, kind="stable")
    picks = [order[min(len(order) - 1, int(round(q * (len(order) - 1))))] for q in quantiles]
    return [{k: float(draws[i][k]) for k in KEYS} for i in picks]
