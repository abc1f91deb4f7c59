"""Serving and training precision in `plan`: the peak per number format from the GPU catalogue,
used by the footprint and the cost-optimal solve, and refused where the GPU has no such unit.

Reference figures: Sardana & Frankle 2024 (arXiv 2401.00448) price a phase as
FLOPs / (peak FLOP/s x MFU) / 3600 x $ per GPU-hour, with the peak of the phase's number format;
the H100 SXM's dense FP8/INT8 peak is 1979 TFLOP/s against 989 in bf16 (NVIDIA H100 data sheet).
The values in the tests below are computed by hand from that formula, except the last test's,
which are the output of their released program (`cost_optimal.py`, as its README prints it for
INT8 serving on A100-40GBs).
"""

from __future__ import annotations

import pytest

from planners.errors import BadInput
from planners.hardware import get_gpu
from planners.plan import make_plan

H100_FP8 = 1979e12


def _row(plan: dict, label: str) -> dict:
    return next(o for o in plan["options"] if o["label"] == label)


def test_fp8_serving_prices_each_phase_at_the_fp8_peak():
    kw = dict(model="7b", train_tokens="1T", inference_budget="2T", gpu="h100", presets=False)
    bf16 = make_plan(**kw)
    fp8 = make_plan(**kw, inference_dtype="fp8")
    n = _row(fp8, "given")["params"]
    # 1T prompt tokens at prefill MFU 0.48, 1T generated at decode MFU 0.05, $2.00/GPU-hour
    hand = (2 * n * 1e12 / (H100_FP8 * 0.48) + 2 * n * 1e12 / (H100_FP8 * 0.05)) / 3600 * 2.00
    assert _row(fp8, "given")["inference_cost_usd"] == pytest.approx(hand, rel=1e-9)
    assert _row(bf16, "given")["inference_cost_usd"] == pytest.approx(hand * 1979 / 989, rel=1e-9)
    assert _row(fp8, "given")["train_cost_usd"] == _row(bf16, "given")["train_cost_usd"]
    a = fp8["assumptions"]
    assert a["inference_dtype"]["value"] == "fp8" and a["inference_peak_flops"]["value"] == H100_FP8
    # cheaper serving: the cost-optimal model moves back towards Chinchilla (bigger, fewer tokens)
    assert _row(fp8, "cost-optimal")["params"] > _row(bf16, "cost-optimal")["params"]
    assert _row(fp8, "cost-optimal")["cost_usd"] < _row(bf16, "cost-optimal")["cost_usd"]


def test_fp8_training_and_int8_serving():
    kw = dict(model="7b", train_tokens="1T", inference_budget="2T", presets=False)
    bf16 = make_plan(**kw, gpu="h100")
    fp8 = make_plan(**kw, gpu="h100", train_dtype="fp8")
    assert _row(fp8, "given")["train_gpu_hours"] == pytest.approx(
        _row(bf16, "given")["train_gpu_hours"] * 989 / 1979)
    a100 = make_plan(**kw, gpu="a100-80gb", inference_dtype="int8")
    assert a100["assumptions"]["inference_peak_flops"]["value"] == 624e12


def test_a100_has_no_fp8():
    with pytest.raises(BadInput, match="no FP8"):
        make_plan(model="7b", train_tokens="1T", inference_budget="2T", gpu="a100",
                  inference_dtype="fp8")
    with pytest.raises(BadInput, match="no FP8"):
        make_plan(model="7b", train_tokens="1T", gpu="a100", train_dtype="fp8")
    with pytest.raises(BadInput, match="bf16 or fp8"):
        make_plan(model="7b", train_tokens="1T", gpu="h100", train_dtype="int8")
    with pytest.raises(BadInput, match="fp4"):
        get_gpu("h100").peak("fp4")


def test_int8_serving_on_a100_40gb_matches_sardana_and_frankles_program(home, run_cli):
    """Their README: `python cost_optimal.py --loss 1.947 --inference_reqs 1e10 --input_tok 1000
    --output_tok 250 --train_gpu_type A100_80 --train_gpu_cost 1.40 --inference_gpu_type A100_40
    --inference_dtype int8 --inference_gpu_cost 0.60 --train_mfu 0.5 --prefill_mfu 0.4
    --generation_mfu 0.2` prints 2.053e+10 parameters, 3.302e+12 tokens, 60.23% of the
    parameters and 182.41% of the tokens of the equal-quality Chinchilla-style model, at 88.76%
    of its cost."""
    res = run_cli("plan", "--target-perf", "1.947", "--requests", "1e10", "--prompt-tokens", "1000",
                  "--output-tokens", "250", "--gpu", "a100-80gb", "--price", "1.40",
                  "--inference-gpu", "a100-40gb", "--inference-price", "0.60",
                  "--inference-dtype", "int8", "--mfu", "0.5", "--prefill-mfu", "0.4",
                  "--decode-mfu", "0.2", "--no-presets", "--json")
    assert res.code == 0, res.stderr
    options = res.json()["options"]
    cost, chin = _row({"options": options}, "cost-optimal"), _row({"options": options}, "chinchilla")
    assert f"{cost['params']:.3e}" == "2.053e+10" and f"{cost['tokens']:.3e}" == "3.302e+12"
    assert f"{100 * cost['params'] / chin['params']:.2f}" == "60.23"
    assert f"{100 * cost['tokens'] / chin['tokens']:.2f}" == "182.41"
    assert f"{100 * cost['cost_usd'] / chin['cost_usd']:.2f}" == "88.76"
