"""Tokens/s and MFU of REAL training: `orchestrator.launcher.train` (Ray Train, FSDP2 on CPU
gloo, float32) on the demo data, for `tiny` and `small` with 1 and 2 workers.

Each configuration is one run through the same code path as `cli.py train` (metering and the
dashboard off; their cost is bench_meter_train.py's subject). Figures come from the store's step
rows (see bench/trainbench.py): median and spread over the steps after the first few, and the
fp32 matmul peak the workers measured (MFU's denominator). Target (issue 5): `small` with one
worker at >= 70% of that peak. Writes bench/results/train.md and train.json.

    python bench/bench_train.py [--quick] [--home DIR] [--warmup 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import trainbench as tb  # noqa: E402

# (preset, workers, steps): small is ~10 s a step on 2 cores, so it gets few steps
CONFIGS = [("tiny", 1, 40), ("tiny", 2, 40), ("small", 1, 12), ("small", 2, 10)]
# --quick, for a loaded shared machine: fewer steps and (with --batch-tokens 1024) 1024-token steps
QUICK = [("tiny", 1, 10), ("tiny", 2, 10), ("small", 1, 5), ("small", 2, 5)]
TARGET_MFU_SMALL_1 = 0.70


def fmt_spread(s: dict, scale: float = 1.0, digits: int = 0) -> str:
    if not s.get("n"):
        return "-"
    f = f"{{:.{digits}f}}"
    return (f"{f.format(s['median'] * scale)} ({f.format(s['min'] * scale)}-"
            f"{f.format(s['max'] * scale)})")


def shared_line(res: dict) -> str:
    """Say whether other jobs shared the machine, from the load averages around the runs."""
    cores = res["machine"]["cores"] or 1
    peak = max([r["loadavg_before"][0] for r in res["runs"]]
               + [r["loadavg_after"][0] for r in res["runs"]] + [0.0])
    if peak > 1.5 * cores:
        return (f"- **a shared machine**: the 1-min load reached {peak:.0f} on {cores} cores "
                "during the runs (other jobs), so every figure is noisy and throughput is a "
                "lower bound of what an idle machine gives.")
    return (f"- a quiet machine: the 1-min load stayed at or below {peak:.1f} on {cores} cores "
            "(the bench's own Ray processes included).")


def render(res: dict) -> str:
    m = res["machine"]
    lines = [
        "# Real training throughput (bench/bench_train.py)", "",
        f"- date: {m['date']}; {m['platform']}; CPU: {m['cpu']}; cores: {m['cores']}; "
        f"torch {m['torch']}; python {m['python']}",
        f"- uptime before: `{res['uptime_before']}`",
        f"- uptime after:  `{res['uptime_after']}`",
        shared_line(res),
        "- path: `orchestrator.launcher.train` (Ray Train TorchTrainer, FSDP2 `fully_shard` per "
        "block and at the root, gloo, float32, AdamW), demo data, metering and dashboard off; "
        "torch threads per worker = cores / workers.",
        f"- batch: {res['batch_tokens'] or 'the preset default'} tokens per step. "
        f"Per run: the first {res['warmup']} steps skipped; median (min-max) over the rest. "
        "`tokens/s` and MFU are the step rows' (one step's compute: forward, backward, clip, "
        "optimiser, loss all-reduce); `wall tokens/s` is from the interval between step rows "
        "(the whole loop: reporting to the driver, command poll and broadcast included).",
        "- peak: the fp32 matmul FLOP/s the workers measured in the run (torch.mm 1024^2 for "
        "1 s at start, best of the workers, re-checked every 50 steps), recovered from each "
        "row as flops_per_token * tokens/s / (MFU * workers).",
        f"- the driver's own measure of the same peak with {m['cores']} threads before the "
        f"runs: {res['driver_peak_gflops']:.1f} GFLOP/s", "",
        "| preset | workers | steps | tokens/step | tokens/s | wall tokens/s | MFU % | "
        "peak GFLOP/s (per worker) | max RSS MB | load 1-min before/after | run s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["runs"]:
        lines.append(
            f"| {r['preset']} | {r['workers']} | {r['steps']} | {r['tokens_per_step']} | "
            f"{fmt_spread(r['tokens_per_s'])} | {fmt_spread(r['wall_tokens_per_s'])} | "
            f"{fmt_spread(r['mfu'], 100, 1)} | {fmt_spread(r['peak_flops'], 1e-9, 1)} | "
            f"{(r['memory_bytes'] or 0) / 2**20:.0f} | {r['loadavg_before'][0]:.1f} / "
            f"{r['loadavg_after'][0]:.1f} | {r['run_s']:.0f} |")
    lines.append("")
    small1 = next((r for r in res["runs"] if r["preset"] == "small" and r["workers"] == 1), None)
    if small1 and small1["mfu"].get("n"):
        got = small1["mfu"]["median"]
        verdict = "met" if got >= TARGET_MFU_SMALL_1 else "NOT met"
        load = max(small1["loadavg_before"][0], small1["loadavg_after"][0])
        peak = small1["peak_flops"].get("median", 0) / 1e9
        if load > 2 * (m["cores"] or 1):  # a loaded machine: the ratio is not the target's
            verdict += (f" only nominally: the peak ({peak:.1f} GFLOP/s) and the steps were both "
                        f"measured at a 1-min load of {load:.0f} on {m['cores']} cores, so the "
                        "ratio compares two starved measurements (about 200 GFLOP/s is the idle "
                        "peak issue 5 cites); this does not establish the target, rerun on a "
                        "quiet machine")
        lines += [f"**Target (issue 5): `small`, one worker, MFU >= "
                  f"{TARGET_MFU_SMALL_1:.0%} of the measured fp32 matmul peak: measured "
                  f"{got:.1%} (median; range {small1['mfu']['min']:.1%}-"
                  f"{small1['mfu']['max']:.1%}): {verdict}.**", ""]
    for r in res["runs"]:
        lines.append(f"- {r['preset']} x{r['workers']}: run {r['run_id']} {r['status']}, "
                     f"loss {r['first_loss']:.3f} -> {r['last_loss']:.3f}, "
                     f"{r['flops_per_token'] / 1e6:.1f} MFLOP/token, "
                     f"{r['params'] / 1e6:.1f} M parameters, first step row after "
                     f"{r['startup_s']:.0f} s (Ray Train start-up, FSDP, peak measurement)")
    lines.append("")
    if res.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in res["notes"]] + [""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--home", default=str(tb.DEFAULT_HOME))
    p.add_argument("--quick", action="store_true", help="fewer steps")
    p.add_argument("--warmup", type=int, default=3, help="steps skipped per run")
    p.add_argument("--batch-tokens", type=int, default=None,
                   help="tokens per optimiser step for every run (default: each preset's)")
    p.add_argument("--only", default=None, help="e.g. small:1 (one configuration)")
    p.add_argument("--micro-batch", type=int, default=None,
                   help="sequences per forward/backward (default: the launcher's choice)")
    p.add_argument("--compile", action="store_true", help="train with --compile (torch.compile "
                   "per block) instead of eager")
    p.add_argument("--out", default=str(tb.RESULTS / "train.md"))
    p.add_argument("--from-json", default=None, help="only re-render a results .json")
    args = p.parse_args(argv)
    if args.from_json:
        res = json.loads(Path(args.from_json).read_text())
        Path(args.out).write_text(render(res))
        print(render(res))
        return 0
    configs = QUICK if args.quick else CONFIGS
    if args.only:
        pr, w = args.only.split(":")
        configs = [c for c in configs if c[0] == pr and c[1] == int(w)]

    home = Path(args.home)
    tb.ensure_demo(home)
    h, store = tb.open_home(home)
    tb.start_ray()
    import torch

    from orchestrator.run.worker import measure_matmul_peak

    res = {"machine": tb.machine(), "uptime_before": tb.uptime(), "warmup": args.warmup,
           "compile": args.compile, "micro_batch": args.micro_batch,
           "batch_tokens": args.batch_tokens, "configs": configs,
           "driver_peak_gflops": measure_matmul_peak(1.0) / 1e9,
           "driver_threads": torch.get_num_threads(), "runs": []}
    t0 = time.time()
    for preset, workers, steps in configs:
        print(f"{preset} x{workers}: {steps} steps ...", file=sys.stderr, flush=True)
        r = tb.train_once(store, h, preset, workers, steps, warmup=args.warmup,
                          batch_tokens=args.batch_tokens, compile=args.compile,
                          micro_batch=args.micro_batch)
        print(f"  tokens/s {r['tokens_per_s'].get('median', 0):.0f}, "
              f"MFU {100 * r['mfu'].get('median', 0):.1f}%, {r['run_s']:.0f} s",
              file=sys.stderr, flush=True)
        res["runs"].append(r)
    res["total_s"] = time.time() - t0
    res["uptime_after"] = tb.uptime()
    store.close()

    tb.write_results(args.out, res, render)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
