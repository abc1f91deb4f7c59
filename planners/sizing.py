"""Model size N and training tokens D for a target loss: Chinchilla, inference-optimal,
cost-optimal. Formulas: ../shared/reference/scaling.md.

  - Chinchilla point (training FLOPs 6·N·D only): closed form, Hoffmann et al. 2022.
  - Inference-optimal (Sardana & Frankle 2024, arXiv 2401.00448): minimise 6·N·D + 2·N·D_inf
    subject to L(N, D) = target. Eliminating N leaves one monotone equation in D, solved here by
    bracketing root-finding (Brent) on log D; then N follows from the constraint.
  - Cost-optimal: minimise dollars = N·(6·D·c_train + 2·P·c_prefill + 2·O·c_decode) along the
    same constraint, where c_x is dollars per FLOP on that hardware at that MFU and P, O are the
    lifetime prompt and generated tokens; a bounded 1-D minimisation over log D.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy.optimize import brentq, minimize_scalar

from planners.errors import BadInput
from planners.scaling import LossLaw


@dataclass(frozen=True)
class Point:
    params: float
    tokens: float


def check_target(law: LossLaw, target_loss: float) -> float:
    if not (isinstance(target_loss, (int, float)) and math.isfinite(target_loss)):
        raise BadInput(f"target loss must be a number of nats per token, got {target_loss!r}")
    if target_loss <= law.E:
        raise BadInput(f"target loss {target_loss:.4f} is unreachable under fit {law.name!r}: it "
                       f"must be above the irreducible loss E = {law.E}")
    return float(target_loss)


def chinchilla_point(law: LossLaw, target_loss: float) -> Point:
    """The compute-optimal (training only) N and D that reach `target_loss`."""
    gap = check_target(law, target_loss) - law.E
    n = (law.A * (1 + law.alpha / law.beta) / gap) ** (1 / law.alpha)
    d = (law.B * (1 + law.beta / law.alpha) / gap) ** (1 / law.beta)
    return Point(n, d)


def params_for(law: LossLaw, target_loss: float, tokens: float) -> float:
    """N such that L(N, tokens) = target_loss (inf when D alone cannot get there)."""
    rest = check_target(law, target_loss) - law.E - law.B / tokens ** law.beta
    return math.inf if rest <= 0 else (law.A / rest) ** (1 / law.alpha)


def _min_log_tokens(law: LossLaw, target_loss: float) -> float:
    """log of the D at which N would have to be infinite: B / D^beta = target - E."""
    return math.log(law.B / (target_loss - law.E)) / law.beta


def inference_optimal(law: LossLaw, target_loss: float, inference_tokens: float) -> Point:
    """Minimum 6·N·D + 2·N·D_inf with L(N, D) = target_loss. D_inf = 0 gives the Chinchilla point."""
    check_target(law, target_loss)
    if not (inference_tokens >= 0 and math.isfinite(inference_tokens)):
        raise BadInput(f"inference tokens must be >= 0, got {inference_tokens!r}")
    E, B, a, b = law.E, law.B, law.alpha, law.beta
    k1, k2 = b * B / a + B, b * B * inference_tokens / (3 * a)

    def stationarity(u: float) -> float:  # decreasing in u = log D
        return k1 * math.exp(-b * u) + k2 * math.exp((-b - 1) * u) + E - target_loss

    lo = _min_log_tokens(law, target_loss)  # stationarity(lo) > 0 always
    hi = lo + 1.0
    while stationarity(hi) > 0:
        hi += 4.0
    u = brentq(stationarity, lo, hi, xtol=1e-13, rtol=1e-15, maxiter=500)
    d = math.exp(u)
    return Point(params_for(law, target_loss, d), d)


def dollars(n_params: float, tokens: float, *, usd_per_train_flop: float,
            prompt_tokens: float = 0.0, output_tokens: float = 0.0,
            usd_per_prefill_flop: float = 0.0, usd_per_decode_flop: float = 0.0) -> float:
    """Training (6·N·D FLOPs) plus serving (2·N per prompt token, 2·N per generated token)."""
    return n_params * (6 * tokens * usd_per_train_flop + 2 * prompt_tokens * usd_per_prefill_flop
                       + 2 * output_tokens * usd_per_decode_flop)


def cost_optimal(law: LossLaw, target_loss: float, *, usd_per_train_flop: float,
                 prompt_tokens: float = 0.0, output_tokens: float = 0.0,
                 usd_per_prefill_flop: float = 0.0, usd_per_decode_flop: float = 0.0) -> Point:
    """Minimum dollars at `target_loss` (Sardana & Frankle's cost variant)."""
    check_target(law, target_loss)
    if not usd_per_train_flop > 0:
        raise BadInput("the cost-optimal size needs a training price > 0 $/GPU-hour")
    rates = dict(usd_per_train_flop=usd_per_train_flop, prompt_tokens=prompt_tokens,
                 output_tokens=output_tokens, usd_per_prefill_flop=usd_per_prefill_flop,
                 usd_per_decode_flop=usd_per_decode_flop)

    def log_cost(u: float) -> float:
        n = params_for(law, target_loss, math.exp(u))
        return math.log(n) + math.log(dollars(1.0, math.exp(u), **rates)) if n < math.inf \
            else math.inf

    lo = _min_log_tokens(law, target_loss) + 1e-9
    hi = lo + 4.0
    while log_cost(hi + 1.0) < log_cost(hi):  # walk right until the cost rises
        hi += 4.0
    best = minimize_scalar(log_cost, bounds=(lo, hi + 1.0), method="bounded",
                           options={"xatol": 1e-10, "maxiter": 1000})
    d = math.exp(best.x)
    return Point(params_for(law, target_loss, d), d)
