"""IsoFLOP ladders (Chinchilla's approach 2): for each compute budget C, a few model sizes N
around a prior guess of the compute-optimal size, each trained on D = C / (6N) tokens.

Model shapes are small LLaMA-shaped `ModelArgs` (vocabulary 8192, sequence 256 by default, head
size 32, SwiGLU hidden rounded to a multiple of 32 so tiny widths are not inflated to 256) whose
exact parameter count comes from `model.presets.param_count`. N in C = 6*N*D is that total count
(embeddings included, as Chinchilla counted it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

from model.presets import ModelArgs, args_dict, flops_per_token, param_count
from planners.errors import BadInput

DIMS = (16, 24, 32, 40, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768)
HEAD_DIM = 32
WIDTH_PER_LAYER = 32  # depth = width / 32 (1 layer at width <= 32): one shape per width


@dataclass(frozen=True)
class LadderPoint:
    budget_flops: float  # the nominal budget C this point belongs to
    params: int  # N, exact
    tokens: int  # D, whole optimiser steps of `batch_tokens`
    args: ModelArgs
    size_index: int  # 0 = smallest model of this budget's ladder
    steps: int
    batch_tokens: int
    seq_len: int
    target_params: float  # the size asked for before snapping to a shape
    notes: tuple[str, ...] = field(default=())

    @property
    def flops(self) -> float:
        """6*N*D actually trained (D is rounded to whole steps)."""
        return 6.0 * self.params * self.tokens

    @property
    def tokens_per_param(self) -> float:
        return self.tokens / self.params

    def as_dict(self) -> dict:
        return {"budget_flops": self.budget_flops, "size_index": self.size_index,
                "params": self.params, "tokens": self.tokens, "steps": self.steps,
                "batch_tokens": self.batch_tokens, "seq_len": self.seq_len,
                "tokens_per_param": round(self.tokens_per_param, 2), "flops": self.flops,
                "flops_per_token": flops_per_token(self.args, self.seq_len),
                "target_params": round(self.target_params), "model_args": args_dict(self.args),
                "notes": list(self.notes)}


@lru_cache(maxsize=8)
def shapes(vocab_size: int, seq_len: int) -> tuple[ModelArgs, ...]:
    """The shape family, smallest first: one depth per width (width/depth 32, as for the tiny
    models people train on a CPU), so sizes along a ladder differ in one way only."""
    return tuple(ModelArgs(dim=dim, n_layers=max(1, round(dim / WIDTH_PER_LAYER)),
                           n_heads=max(1, dim // HEAD_DIM), vocab_size=vocab_size, multiple_of=32,
                           max_seq_len=seq_len) for dim in DIMS)


def nearest_shape(target_params: float, vocab_size: int = 8192, seq_len: int = 256) -> ModelArgs:
    """The shape whose parameter count is nearest `target_params` (in log)."""
    return min(shapes(vocab_size, seq_len),
               key=lambda a: abs(math.log(param_count(a) / target_params)))


def isoflop_ladder(budgets: list[float], sizes: int, *, vocab_size: int = 8192, seq_len: int = 256,
                   batch_tokens: int = 8 * 256, tokens_per_param: float = 20.0,
                   spread: float = 3.0, min_steps: int = 10) -> list[LadderPoint]:
    """For each budget C: `sizes` model sizes spaced evenly in log N from N*/spread to
    N*·spread around the prior optimum N* = sqrt(C / (6·tokens_per_param)) (Chinchilla's ~20
    tokens per parameter), each snapped to the nearest shape and given D = C/(6N) tokens rounded
    to whole steps of `batch_tokens`. Each size is the nearest shape larger than the previous
    one, so a budget gets `sizes` distinct models (fewer only past the largest shape)."""
    if not budgets:
        raise BadInput("--budgets is empty; give compute budgets in FLOPs, e.g. 1e13,3e13,1e14")
    if len(set(budgets)) != len(budgets):
        raise BadInput(f"--budgets {budgets} repeats a budget; give distinct budgets")
    if not 1 <= sizes <= 12:
        raise BadInput(f"--sizes {sizes} must be between 1 and 12 model sizes per budget")
    if spread < 1:
        raise BadInput(f"spread {spread} must be >= 1 (the largest size over the prior optimum)")
    if batch_tokens % seq_len:
        raise BadInput(f"batch_tokens {batch_tokens} must be a multiple of seq_len {seq_len}")
    points: list[LadderPoint] = []
    for budget in sorted(budgets):
        if not (math.isfinite(budget) and budget > 0):
            raise BadInput(f"budget {budget!r} must be a positive number of FLOPs, e.g. 1e13")
        n_star = math.sqrt(budget / (6.0 * tokens_per_param))
        if sizes == 1:
            targets = [n_star]
        else:
            lo, hi = math.log(n_star / spread), math.log(n_star * spread)
            targets = [math.exp(lo + (hi - lo) * i / (sizes - 1)) for i in range(sizes)]
        family = shapes(vocab_size, seq_len)
        prev = -1
        for target in targets:
            # nearest shape, but always larger than the previous rung: sizes stay distinct, and a
            # ladder whose low end falls below the smallest shape shifts up instead of shrinking
            i = min(range(len(family)), key=lambda j: abs(math.log(param_count(family[j]) / target)))
            i = max(i, prev + 1)
            if i >= len(family):
                break
            prev, args = i, family[i]
            n = param_count(args)
            steps = max(1, round(budget / (6.0 * n) / batch_tokens))
            notes = []
            if n > 1.5 * target:
                notes.append(f"asked for {target:.3g} params; the nearest free shape has {n:,}")
            if steps < min_steps:
                notes.append(f"only {steps} steps: the budget is too small for this size")
            points.append(LadderPoint(budget_flops=float(budget), params=n,
                                      tokens=steps * batch_tokens, args=args,
                                      size_index=len([q for q in points if q.budget_flops == budget]),
                                      steps=steps, batch_tokens=batch_tokens, seq_len=seq_len,
                                      target_params=target, notes=tuple(notes)))
    return points
