"""`plan`: what size, how many tokens, on how many GPUs for how long, costing what, emitting what.

One entry point, `make_plan(...)`, returns a JSON-ready dict:
    {"target_loss", "target", "mode", "fit", "assumptions", "demand", "options": [...], "memory"}
Every figure that rests on an assumption names it in "assumptions" with where it came from
("given" when the user typed it, "assumed: ..." when defaulted). All FLOPs -> GPU-hours -> MWh ->
tCO2eq -> $ conversions go through planners/footprint.py.

FLOP conventions (Kaplan et al. 2020, as in Chinchilla and Sardana & Frankle): training 6·N per
token, serving 2·N per token (prompt tokens at prefill MFU, generated tokens at decode MFU).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from model.presets import PRESETS, ModelArgs, Preset, UnknownPreset, get_preset, param_count
from planners import footprint as fp
from planners import grid, sizing
from planners.errors import BadInput
from planners.hardware import GPU, get_gpu
from planners.fitting import interval_laws
from planners.memory import (MEMORY_MARGIN, NEVER_FITS, check_margin, llama_shape, min_devices,
                             nodes_for, plan_memory, usable_bytes)
from planners.regions import parse_region_prices, rank_regions
from planners.scaling import FITS, LossLaw, law_from_constants, resolve_fit, stored_fit_details
from planners.units import parse_count, parse_int_count

LLAMA_MFU = 0.48  # LLaMA-65B: 380 tokens/s/GPU on A100 at 6·N FLOPs per token (LLaMA §2.4)
PREFILL_MFU = 0.48  # assumed: prefill is large matmuls, compute-bound like training
DECODE_MFU = 0.05  # assumed: decoding is memory-bound, far below training (Sardana & Frankle §4)
PROMPT_SHARE = 0.5
LLAMA_GPUS = 2048
CPU_MFU = 0.5  # tally's CPU runs: 53-54% (tiny), 60-71% (small) of the probe (bench/results/train.md)
SEQ_LEN, MICRO_BATCH = 2048, 1


def _given(value: Any, flag: str) -> dict:
    return {"value": value, "source": f"given ({flag})"}


def _assumed(value: Any, why: str) -> dict:
    return {"value": value, "source": f"assumed: {why}"}


def parse_target(spec: str | float, law: LossLaw) -> tuple[float, str]:
    """A loss (`2.05`), a perplexity (`ppl=7.8`) or a preset (`7b`, `llama-7b`) -> (loss, meaning)."""
    text = str(spec).strip()
    try:
        return float(text), "loss given"
    except ValueError:
        pass
    low = text.lower().replace(" ", "")
    for prefix in ("ppl=", "ppl:", "perplexity="):
        if low.startswith(prefix):
            try:
                ppl = float(low[len(prefix):])
            except ValueError:
                ppl = math.nan
            if not (ppl > 1 and math.isfinite(ppl)):
                raise BadInput(f"perplexity in --target-perf {text!r} must be a number > 1")
            return math.log(ppl), f"perplexity {ppl:g} (loss = ln ppl)"
    if low.startswith("loss="):
        return parse_target(low[5:], law)
    try:
        p = get_preset(text)
    except UnknownPreset:
        raise BadInput(f"--target-perf {text!r} is not a loss, a perplexity or a preset; use e.g. "
                       f"2.05, ppl=7.8, or one of {', '.join(PRESETS)} (also llama-7b ...)") from None
    return law.loss(p.params, p.train_tokens), (
        f"loss of {p.name} ({p.params:.3e} params, {p.train_tokens:.3g} tokens) under fit {law.name}")


def parse_model(spec: str) -> tuple[float, ModelArgs, Preset | None]:
    """A preset name or a parameter count -> (N, shape, preset or None)."""
    try:
        p = get_preset(spec)
        return float(p.params), p.args, p
    except UnknownPreset:
        pass
    try:
        n = parse_count(spec, "--model")
    except BadInput:
        raise BadInput(f"--model {spec!r} is neither a preset ({', '.join(PRESETS)}) nor a "
                       "parameter count such as 6.7B") from None
    return n, llama_shape(n), None


@dataclass(frozen=True)
class Setup:
    """Everything an option's figures depend on besides N and D."""
    law: LossLaw
    prompt_tokens: float
    output_tokens: float
    gpu: GPU
    gpus: int
    train_mfu: float
    gpu_power_w: float
    price: float
    inference_gpu: GPU
    prefill_mfu: float
    decode_mfu: float
    inference_power_w: float
    inference_price: float
    pue: float
    intensity: float
    train_peak: float = 0.0  # dense FLOP/s of `gpu` in the training number format
    inference_peak: float = 0.0  # of `inference_gpu` in the serving number format

    @property
    def rates(self) -> dict:
        return dict(usd_per_train_flop=fp.usd_per_flop(self.train_peak, self.train_mfu,
                                                       self.price),
                    prompt_tokens=self.prompt_tokens, output_tokens=self.output_tokens,
                    usd_per_prefill_flop=fp.usd_per_flop(self.inference_peak,
                                                         self.prefill_mfu, self.inference_price),
                    usd_per_decode_flop=fp.usd_per_flop(self.inference_peak,
                                                        self.decode_mfu, self.inference_price))


def option(label: str, n: float, d: float, s: Setup, throughput: float | None = None) -> dict:
    """One row: size, loss, FLOPs, GPU-hours, days, dollars, MWh, tCO2eq (training + serving)."""
    train_flops = 6 * n * d
    prefill_flops, decode_flops = 2 * n * s.prompt_tokens, 2 * n * s.output_tokens
    if throughput is not None:
        train_gh = fp.gpu_hours_for_tokens(d, throughput)
        mfu = throughput * 6 * n / s.train_peak
    else:
        train_gh, mfu = fp.gpu_hours_for_flops(train_flops, s.train_peak, s.train_mfu), s.train_mfu
    peak_i = s.inference_peak
    inf_gh = (fp.gpu_hours_for_flops(prefill_flops, peak_i, s.prefill_mfu)
              + fp.gpu_hours_for_flops(decode_flops, peak_i, s.decode_mfu))
    train = fp.footprint_of_gpu_hours(train_gh, gpu_power_w=s.gpu_power_w, pue=s.pue,
                                      intensity_kg_per_kwh=s.intensity,
                                      price_usd_per_gpu_hour=s.price)
    serve = fp.footprint_of_gpu_hours(inf_gh, gpu_power_w=s.inference_power_w, pue=s.pue,
                                      intensity_kg_per_kwh=s.intensity,
                                      price_usd_per_gpu_hour=s.inference_price)
    return {
        "label": label, "params": n, "tokens": d, "tokens_per_param": d / n,
        "loss": s.law.loss(n, d),
        "train_flops": train_flops, "inference_flops": prefill_flops + decode_flops,
        "total_flops": train_flops + prefill_flops + decode_flops,
        "train_mfu": mfu,
        "train_gpu_hours": train_gh, "inference_gpu_hours": inf_gh, "gpu_hours": train_gh + inf_gh,
        "days": fp.days_on(train_gh, s.gpus),
        "train_cost_usd": train.cost_usd, "inference_cost_usd": serve.cost_usd,
        "cost_usd": train.cost_usd + serve.cost_usd,
        "train_energy_mwh": train.energy_mwh, "inference_energy_mwh": serve.energy_mwh,
        "energy_mwh": train.energy_mwh + serve.energy_mwh,
        "train_tco2eq": train.tco2eq, "inference_tco2eq": serve.tco2eq,
        "tco2eq": train.tco2eq + serve.tco2eq,
    }


def _savings(row: dict, base: dict) -> dict:
    out = {}
    for key, name in (("total_flops", "flops"), ("cost_usd", "cost_usd"), ("tco2eq", "tco2eq")):
        saved = base[key] - row[key]
        out[name] = saved
        out[f"{name}_pct"] = 100.0 * saved / base[key] if base[key] else 0.0
    return out


def _demand(inference_budget, requests, prompt_tokens, output_tokens, prompt_share) -> tuple:
    """-> (prompt tokens, generated tokens, assumptions) over the model's life."""
    if requests is not None:
        if inference_budget is not None:
            raise BadInput("give --inference-budget (lifetime tokens) or --requests with "
                           "--prompt-tokens and --output-tokens, not both")
        if prompt_tokens is None or output_tokens is None:
            raise BadInput("--requests needs --prompt-tokens and --output-tokens (per request)")
        r = parse_count(requests, "--requests")
        p = parse_count(prompt_tokens, "--prompt-tokens", allow_zero=True)
        o = parse_count(output_tokens, "--output-tokens", allow_zero=True)
        if p + o <= 0:
            raise BadInput("--prompt-tokens and --output-tokens cannot both be 0")
        return r * p, r * o, {"requests": _given(r, "--requests"),
                              "prompt_tokens_per_request": _given(p, "--prompt-tokens"),
                              "output_tokens_per_request": _given(o, "--output-tokens")}
    if prompt_tokens is not None or output_tokens is not None:
        raise BadInput("--prompt-tokens and --output-tokens are per request: give --requests too")
    if inference_budget is None:
        return 0.0, 0.0, {"inference_tokens": _assumed(0, "no inference counted (give "
                                                          "--inference-budget)")}
    total = parse_count(inference_budget, "--inference-budget", allow_zero=True)  # 0: none served
    if prompt_share is None:
        share = _assumed(PROMPT_SHARE, "half of the served tokens are prompt (prefill), half "
                                       "generated (decode); override with --prompt-share")
    else:
        if not 0 <= prompt_share <= 1:
            raise BadInput(f"--prompt-share must be between 0 and 1, got {prompt_share}")
        share = _given(prompt_share, "--prompt-share")
    f = share["value"]
    return total * f, total * (1 - f), {"inference_tokens": _given(total, "--inference-budget"),
                                        "prompt_share": share}


def _mfu(value: float | None, default: float, flag: str, why: str) -> tuple[float, dict]:
    if value is None:
        return default, _assumed(default, why)
    if not 0 < value <= 1:
        raise BadInput(f"{flag} must be in (0, 1], got {value}")
    return float(value), _given(value, flag)


def _price(value: float | None, gpu: GPU, flag: str) -> tuple[float, dict]:
    if value is None and gpu.name == "cpu":
        return 0.0, _assumed(0.0, f"this machine, no hourly price; give {flag}")
    if value is None:
        return gpu.price_usd_per_hour, _assumed(
            gpu.price_usd_per_hour, f"on-demand {gpu.name} price of the inference-aware paper's "
                                    f"code; override with {flag}")
    if not (value >= 0 and math.isfinite(value)):
        raise BadInput(f"{flag} must be >= 0 $/GPU-hour, got {value}")
    return float(value), _given(value, flag)


def make_plan(*, target: str | float | None = None, inference_budget: str | float | None = None,
              requests: str | float | None = None, prompt_tokens: str | float | None = None,
              output_tokens: str | float | None = None, prompt_share: float | None = None,
              fit: str | LossLaw | None = None, store=None,  # noqa: ANN001 (duck-typed store)
              model: str | None = None, train_tokens: str | float | None = None,
              gpu: str | None = None, gpus: int | str | None = None, mfu: float | None = None,
              throughput: float | None = None, inference_gpu: str | None = None,
              prefill_mfu: float | None = None, decode_mfu: float | None = None,
              price: float | None = None, inference_price: float | None = None,
              pue: float | None = None, region: str | None = None,
              intensity: float | None = None, gpu_power_w: float | None = None,
              seq_len: int = SEQ_LEN, micro_batch: int = MICRO_BATCH,
              presets: bool = True, regions: str | list[str] | None = None,
              region_prices: str | dict[str, float] | None = None,
              regions_for: str | None = None, fit_details: dict | None = None,
              memory_margin: float | None = None, inference_dtype: str | None = None,
              train_dtype: str | None = None) -> dict:
    """Size (or, with `model`, evaluate) a model for a target loss and a serving demand.

    Optimise mode (`target`): options chinchilla, inference-optimal, cost-optimal.
    Evaluate mode (`model` + `train_tokens`): option "given", then the three optima at the
    loss the given model reaches. Both add the LLaMA presets for context unless `presets=False`.
    `regions` (names or "all"): rank where to train the `regions_for` option (default the
    recommended one: cost-optimal, or "given" in evaluate mode), with `region_prices`.
    `fit_details` (a stored fit's details, with its bootstrap): add "fit_interval"; read from
    `store` when `fit` names a stored fit.
    """
    law = fit if isinstance(fit, LossLaw) else resolve_fit(fit, store)
    a: dict[str, Any] = {}
    P, O, a_demand = _demand(inference_budget, requests, prompt_tokens, output_tokens, prompt_share)
    a.update(a_demand)

    g = get_gpu(gpu or "a100-80gb")
    on_cpu = g.name == "cpu"
    a["gpu"] = {"value": g.name, "source": f"given (--gpu): {g.label}"} if gpu else \
        _assumed(g.name, "LLaMA convention (A100-80GB)")
    n_gpus = parse_int_count(gpus, "--gpus") if gpus is not None else (1 if on_cpu else LLAMA_GPUS)
    a["gpus"] = _given(n_gpus, "--gpus") if gpus is not None else _assumed(
        n_gpus, "this machine" if on_cpu else "LLaMA convention (2048 GPUs)")
    if gpu_power_w is None:
        power = g.tdp_w
        a["gpu_power_w"] = _assumed(power, g.power_note or (
            "LLaMA convention (400 W A100)" if power == 400 else f"{g.label} TDP"))
    else:
        if not gpu_power_w > 0:
            raise BadInput(f"--gpu-power must be > 0 W, got {gpu_power_w}")
        power = float(gpu_power_w)
        a["gpu_power_w"] = _given(power, "--gpu-power")
    t_dtype = (train_dtype or g.compute_dtype).strip().lower()
    if t_dtype not in ("bf16", "fp8", g.compute_dtype):
        raise BadInput(f"--train-dtype {train_dtype!r}: use bf16 or fp8")
    train_peak = g.peak(t_dtype, "--train-dtype")
    a["train_dtype"] = _given(t_dtype, "--train-dtype") if train_dtype else _assumed(
        t_dtype, "fp32, as tally trains on CPU" if on_cpu else
        "bf16 mixed precision, as tally trains on GPUs")
    a["peak_flops"] = {"value": train_peak, "source": g.peak_note if t_dtype == g.compute_dtype
                       and g.peak_note else f"{g.label} dense {t_dtype} data sheet"}
    if mfu is not None and throughput is not None:
        raise BadInput("give --mfu or --throughput, not both")
    if throughput is not None:
        if model is None:
            raise BadInput("--throughput (tokens/s/GPU) belongs to one model: use it with --model "
                           "and --train-tokens, or size with --mfu")
        if not (throughput > 0 and math.isfinite(throughput)):
            raise BadInput(f"--throughput must be > 0 tokens/s/GPU, got {throughput}")
        a["throughput_tokens_per_s_per_gpu"] = _given(throughput, "--throughput")
    train_mfu, a["train_mfu"] = _mfu(mfu, CPU_MFU, "--mfu", "tally's CPU runs reach 53-71% of "
                                     "the matmul probe (bench/results/train.md)") if on_cpu else \
        _mfu(mfu, LLAMA_MFU, "--mfu", "LLaMA-65B on A100 (380 tokens/s/GPU = 48% of peak at 6·N "
             "per token)")
    price_t, a["price_usd_per_gpu_hour"] = _price(price, g, "--price")

    gi = get_gpu(inference_gpu) if inference_gpu else g
    a["inference_gpu"] = _given(gi.name, "--inference-gpu") if inference_gpu else _assumed(
        gi.name, "serving on the training GPU type")
    inf_power = power if gi is g else gi.tdp_w
    a["inference_gpu_power_w"] = {"value": inf_power, "source": a["gpu_power_w"]["source"]
                                  if gi is g else f"assumed: {gi.label} TDP"}
    i_dtype = (inference_dtype or gi.compute_dtype).strip().lower()
    inference_peak = gi.peak(i_dtype, "--inference-dtype")
    a["inference_dtype"] = _given(i_dtype, "--inference-dtype") if inference_dtype else \
        _assumed(i_dtype, "serving in the training precision")
    a["inference_peak_flops"] = {"value": inference_peak, "source": gi.peak_note if (
        i_dtype == gi.compute_dtype and gi.peak_note) else f"{gi.label} dense {i_dtype} data sheet"}
    pf_mfu, a["prefill_mfu"] = _mfu(prefill_mfu, PREFILL_MFU, "--prefill-mfu",
                                    "prefill is compute-bound like training")
    dc_mfu, a["decode_mfu"] = _mfu(decode_mfu, DECODE_MFU, "--decode-mfu",
                                   "decoding is memory-bound, far below training MFU")
    price_i, a["inference_price_usd_per_gpu_hour"] = _price(
        inference_price if inference_price is not None else price, gi,
        "--inference-price" if inference_price is not None else "--price")

    p = fp.check_pue(pue) if pue is not None else fp.LLAMA_PUE
    a["pue"] = _given(p, "--pue") if pue is not None else _assumed(p, "LLaMA convention")
    if region is not None and intensity is not None:
        raise BadInput("give --region or --intensity, not both")
    if region is not None:
        it = grid.lookup(region)
        ci = it.kg_per_kwh
        a["intensity_kg_per_kwh"] = {"value": ci, "source": f"--region {it.region}: {it.source}"}
    elif intensity is not None:
        ci = fp.check_intensity(intensity)
        a["intensity_kg_per_kwh"] = _given(ci, "--intensity")
    else:
        ci = fp.LLAMA_INTENSITY_KG_PER_KWH
        a["intensity_kg_per_kwh"] = _assumed(ci, "LLaMA convention (US average)")
    a["flops"] = {"value": "6·N per training token, 2·N per served token",
                  "source": "Kaplan et al. 2020, as in Chinchilla and Sardana & Frankle 2024"}

    s = Setup(law, P, O, g, n_gpus, train_mfu, power, price_t, gi, pf_mfu, dc_mfu, inf_power,
              price_i, p, ci, train_peak, inference_peak)
    options: list[dict] = []
    if model is not None:
        if target is not None:
            raise BadInput("give --target-perf (to size a model) or --model with --train-tokens "
                           "(to cost one), not both")
        n, shape, preset = parse_model(model)
        if train_tokens is None and preset is None:
            raise BadInput(f"--model {model!r} is not a preset ({', '.join(PRESETS)}); as a "
                           "parameter count it needs --train-tokens")
        d = parse_count(train_tokens, "--train-tokens") if train_tokens is not None \
            else float(preset.train_tokens)
        given = option("given", n, d, s, throughput)
        if throughput is not None:  # the same hardware runs the other sizes at the same MFU
            if given["train_mfu"] > 1:
                raise BadInput(f"--throughput {throughput:g} tokens/s/GPU is more than {g.name} "
                               f"can do for {n:.3g} parameters (MFU {given['train_mfu']:.2f} > 1)")
            a["train_mfu"] = {"value": given["train_mfu"], "source": "derived from --throughput "
                              "for the given model, used for the other rows"}
            s = replace(s, train_mfu=given["train_mfu"])
        loss, meaning = given["loss"], f"loss of the given model ({n:.3e} params, {d:.3g} tokens)"
        options.append(given)
        memory_for = ("given", n, shape, preset.name if preset else None)
        mode = "evaluate"
    else:
        if target is None:
            raise BadInput("give --target-perf (a loss, ppl=7.8 or a preset such as 7b), or "
                           "--model with --train-tokens")
        if train_tokens is not None:
            raise BadInput("--train-tokens goes with --model (evaluate mode)")
        loss, meaning = parse_target(target, law)
        mode = "optimise"
    sizing.check_target(law, loss)

    chin = sizing.chinchilla_point(law, loss)
    inf = sizing.inference_optimal(law, loss, P + O)
    options += [option("chinchilla", chin.params, chin.tokens, s),
                option("inference-optimal", inf.params, inf.tokens, s)]
    cost = None
    if s.price > 0:  # no price (this machine's CPU): no dollars to minimise
        cost = sizing.cost_optimal(law, loss, **s.rates)
        options.append(option("cost-optimal", cost.params, cost.tokens, s))
    if presets:
        options += [option(q.name, q.params, q.train_tokens, s) for q in PRESETS.values() if q.llama]
    base = next(o for o in options if o["label"] == "chinchilla")
    for o in options:
        o["savings_vs_chinchilla"] = _savings(o, base)
    if mode == "optimise":
        best = cost or inf
        memory_for = ("cost-optimal" if cost else "inference-optimal", best.params,
                      llama_shape(best.params), None)
    extra: dict[str, Any] = {}
    if regions is not None:
        extra["regions_for"], extra["regions"] = where_to_train(
            options, regions, region_prices, regions_for or memory_for[0], s)
    elif region_prices is not None or regions_for is not None:
        raise BadInput("--region-prices and --regions-for go with --regions (a list of regions "
                       "or all)")
    if fit_details is None and store is not None and isinstance(fit, str) \
            and fit.strip().lower() not in FITS and "=" not in fit:
        fit_details = stored_fit_details(store, fit.strip())
    if fit_details is not None:
        extra["fit_interval"] = fit_interval(fit_details, loss, s, base["train_flops"])

    margin = check_margin(memory_margin) if memory_margin is not None else MEMORY_MARGIN
    a["memory_margin"] = _given(margin, "--memory-margin") if memory_margin is not None else \
        _assumed(margin, "share of each GPU's memory kept free for the CUDA context, the caching "
                 "allocator's slack and NCCL buffers, which the memory plan's terms leave out")
    _check_int(seq_len, "--seq-len")
    _check_int(micro_batch, "--micro-batch")
    a["seq_len"] = _given(seq_len, "--seq-len") if seq_len != SEQ_LEN else _assumed(
        seq_len, "LLaMA context length")
    a["micro_batch"] = _given(micro_batch, "--micro-batch") if micro_batch != MICRO_BATCH else \
        _assumed(micro_batch, "one sequence per GPU per step")
    return {
        "mode": mode,
        "target_loss": loss,
        "target": {"spec": None if target is None else str(target), "loss": loss,
                   "perplexity": math.exp(loss), "meaning": meaning},
        "fit": law.as_dict(),
        "assumptions": a,
        "demand": {"prompt_tokens": P, "output_tokens": O, "inference_tokens": P + O},
        "options": options,
        "memory": memory_plan(*memory_for, gpu=g, gpus=n_gpus, seq_len=seq_len,
                              micro_batch=micro_batch, margin=margin),
        **extra,
    }


def where_to_train(options: list[dict], regions: str | list[str],
                   region_prices: str | dict[str, float] | None, label: str,
                   s: Setup) -> tuple[str, list[dict]]:
    """Rank `regions` for training option `label`: its training energy (the plan's GPU power and
    PUE) under each region's grid, and its training GPU-hours at each region's price (default the
    plan's training price). Serving is left out: it runs wherever the model is deployed."""
    row = next((o for o in options if o["label"] == label), None)
    if row is None:
        raise BadInput(f"--regions-for {label!r} is not an option of this plan; use one of "
                       f"{', '.join(o['label'] for o in options)}")
    prices = region_prices if isinstance(region_prices, dict) else \
        parse_region_prices(region_prices)
    ranked = rank_regions(row["train_energy_mwh"], row["train_gpu_hours"], regions,
                          prices=prices, default_price=s.price)
    unused = sorted(set(prices) - {r["region"] for r in ranked})
    if unused:
        raise BadInput(f"--region-prices names {unused[0]!r}, which is not among --regions; "
                       "price only the candidate regions")
    for r in ranked:
        r["price_source"] = "given (--region-prices)" if r["region"] in prices else \
            "the plan's training price"
    return label, ranked


FIT_QUANTILES = (0.05, 0.5, 0.95)


def fit_interval(details: dict, target_loss: float, s: Setup, budget_flops: float) -> dict:
    """How the recommendation moves across a stored fit's uncertainty: for the bootstrap draws at
    the 5th, 50th and 95th percentile of compute-optimal N at `budget_flops` (the plan's
    Chinchilla training FLOPs), the chinchilla, inference-optimal and cost-optimal options at the
    same target loss and demand. A draw whose E is at or above the target marks its row
    unreachable."""
    laws = interval_laws(details, budget_flops=budget_flops, quantiles=FIT_QUANTILES)
    rows = []
    for q, constants in zip(FIT_QUANTILES, laws):
        law = law_from_constants(f"bootstrap p{round(100 * q)}", constants, "bootstrap draw")
        row: dict[str, Any] = {"quantile": q, "constants": law.constants(), "options": []}
        if target_loss <= law.E:
            row["unreachable"] = True
            rows.append(row)
            continue
        t = replace(s, law=law)
        chin = sizing.chinchilla_point(law, target_loss)
        inf = sizing.inference_optimal(law, target_loss, s.prompt_tokens + s.output_tokens)
        cost = sizing.cost_optimal(law, target_loss, **t.rates)
        for label, p in (("chinchilla", chin), ("inference-optimal", inf), ("cost-optimal", cost)):
            o = option(label, p.params, p.tokens, t)
            row["options"].append({k: o[k] for k in (
                "label", "params", "tokens", "tokens_per_param", "total_flops", "gpu_hours",
                "cost_usd", "energy_mwh", "tco2eq")})
        row["unreachable"] = False
        rows.append(row)
    return {"n_bootstrap": details.get("n_bootstrap", len(details.get("bootstrap", []))),
            "level": details.get("level"), "budget_flops": budget_flops,
            "ranked_by": "compute-optimal params at the plan's Chinchilla training FLOPs",
            "rows": rows}


def _check_int(value: Any, flag: str) -> None:
    if not (isinstance(value, int) and value >= 1):
        raise BadInput(f"{flag} must be a whole number >= 1, got {value!r}")


def memory_plan(label: str, n: float, shape: ModelArgs, preset: str | None, *, gpu: GPU,
                gpus: int, seq_len: int, micro_batch: int,
                margin: float = MEMORY_MARGIN) -> dict:
    """Bytes per GPU on `gpus` GPUs, and the fewest GPUs / nodes, with and without checkpointing."""
    out: dict[str, Any] = {
        "for": label, "params": n,
        "shape": {"dim": shape.dim, "n_layers": shape.n_layers, "n_heads": shape.n_heads,
                  "n_kv_heads": shape.kv_heads,
                  "ffn_hidden": shape.ffn_hidden, "vocab_size": shape.vocab_size,
                  "shape_params": param_count(shape),
                  "source": f"preset {preset}" if preset else
                  "assumed: LLaMA-like shape (head dim 128, width about 128 per layer)"},
        "gpu": gpu.name, "device_memory_bytes": gpu.memory_bytes, "margin": margin,
        "usable_bytes_per_device": usable_bytes(gpu.memory_bytes, margin),
        "seq_len": seq_len, "micro_batch": micro_batch,
        "mixed_precision": "bf16" if gpu.compute_dtype == "bf16" else "none (fp32)",
    }
    for key, ac in (("with_checkpointing", True), ("without_checkpointing", False)):
        mixed = gpu.compute_dtype == "bf16"
        m = plan_memory(shape, seq_len=seq_len, micro_batch=micro_batch, world_size=gpus,
                        activation_checkpointing=ac, mixed_precision=mixed)
        need = min_devices(shape, device_memory_bytes=gpu.memory_bytes, seq_len=seq_len,
                           micro_batch=micro_batch, activation_checkpointing=ac, margin=margin,
                           mixed_precision=mixed)
        m["fits_on_gpus"] = m["total_bytes_per_device"] <= usable_bytes(gpu.memory_bytes, margin)
        m["min_gpus"] = None if need == NEVER_FITS else need
        m["min_nodes"] = None if need == NEVER_FITS else nodes_for(need)
        out[key] = m
    return out


def plan_and_store(store, **kwargs: Any) -> dict:  # noqa: ANN001 (orchestrator.store.Store)
    """make_plan(...), stored with its inputs; the plan gets the store's id under "id"."""
    plan = make_plan(store=store, **kwargs)
    inputs = {k: (v.name if isinstance(v, GPU) else v) for k, v in kwargs.items()
              if v is not None and k != "fit_details" and not isinstance(v, LossLaw)}
    plan = {"id": store.add_plan(inputs, plan), **plan}
    return plan


def list_models() -> list[dict]:
    """The presets for `models`: exact parameter counts from the architecture, no model built."""
    return [p.as_dict() for p in PRESETS.values()]
