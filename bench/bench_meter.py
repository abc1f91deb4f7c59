"""Overhead of metering: a CPU-bound torch training loop with a NodeMeter on vs off.

Blocks of the same loop alternate in one process (ABBA order, so drift cancels): meter off,
meter on (a NodeMeter started before the block and stopped after it, neither timed), ...
Reported: iterations/s per block, the median of the paired on/off ratios, and, as a
noise-free cross-check, the CPU time one metering second costs (our sampling tick plus
codecarbon's measurement and its 1 s monitor), as a share of one core.

    python bench/bench_meter.py [--pairs 8] [--block-s 4] [--interval-s 1] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from orchestrator.energy.meter import NodeMeter  # noqa: E402
from bench.machine import cpu_model  # noqa: E402


def make_step():
    """A small MLP training step (256-512-512-256, batch 32, AdamW): matmul-bound on CPU."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.GELU(),
                                torch.nn.Linear(512, 512), torch.nn.GELU(),
                                torch.nn.Linear(512, 256))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(32, 256), torch.randn(32, 256)

    def step():
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def run_block(step, seconds: float) -> tuple[float, float]:
    """(iterations per wall second, process CPU seconds per iteration) over `seconds` of steps.
    Process CPU time counts every thread, the meter's included, and is far less sensitive
    than wall time to other jobs on a shared machine."""
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while (elapsed := time.perf_counter() - t0) < seconds:
        step()
        n += 1
    return n / elapsed, (time.process_time() - c0) / n


def other_threads_cpu_ns() -> dict[int, int]:
    """CPU time (ns, from /proc schedstat) of every thread of this process but the main one:
    with torch on one thread and no Ray, those are the meter's and codecarbon's threads."""
    main = threading.main_thread().native_id
    out = {}
    for tid in os.listdir("/proc/self/task"):
        if int(tid) != main:
            try:
                out[int(tid)] = int(open(f"/proc/self/task/{tid}/schedstat").read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    return out


def median_ci(values: list[float], n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of the median."""
    rng = random.Random(seed)
    meds = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(n))
    return meds[int(0.025 * n)], meds[int(0.975 * n) - 1]


def tick_cost_s(run_dir: str, interval_s: float, repeats: int = 50) -> dict:
    """CPU seconds per metering second: our tick, codecarbon's measurement, its monitor."""
    meter = NodeMeter(run_dir, interval_s=interval_s)
    meter.start()
    try:
        tracker = meter._cpu.tracker if meter._cpu and meter._cpu.state == "running" else None
        costs = {}
        c0 = time.thread_time()
        for _ in range(repeats):
            meter._tick()
        costs["tick_s"] = (time.thread_time() - c0) / repeats
        if tracker is not None:
            c0 = time.thread_time()
            for _ in range(repeats):
                tracker._measure_power_and_energy()
            costs["codecarbon_measure_s"] = (time.thread_time() - c0) / repeats
            c0 = time.thread_time()
            for _ in range(repeats):
                tracker._monitor_power()
            costs["codecarbon_monitor_s"] = (time.thread_time() - c0) / repeats
    finally:
        meter.stop()
    # per second: our tick and codecarbon's measurement every interval, its monitor every 1 s
    per_s = ((costs["tick_s"] + costs.get("codecarbon_measure_s", 0.0)) / interval_s
             + costs.get("codecarbon_monitor_s", 0.0))
    costs["cpu_share_of_one_core"] = per_s
    costs["status"] = meter.status()
    return costs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=8)
    p.add_argument("--block-s", type=float, default=4.0)
    p.add_argument("--interval-s", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1: on a loaded shared machine more threads thrash)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "meter.md"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    step = make_step()
    run_block(step, 2.0)  # warm-up
    run_dir = tempfile.mkdtemp(prefix="bench-meter-")
    off, on, ratios, cpu_ratios, sources = [], [], [], [], None
    meter_shares = []  # in situ: metering threads' CPU / process CPU during "on" blocks
    for i in range(args.pairs):
        order = ("off", "on") if i % 2 == 0 else ("on", "off")
        rates = {}
        for mode in order:
            if mode == "on":
                meter = NodeMeter(run_dir, interval_s=args.interval_s, node=f"bench-{i}")
                meter.start()
                before, c0 = other_threads_cpu_ns(), time.process_time()
                rates[mode] = run_block(step, args.block_s)
                after, c1 = other_threads_cpu_ns(), time.process_time()
                rows = meter.stop()
                meter_ns = sum(max(0, v - before.get(t, 0)) for t, v in after.items())
                meter_shares.append(meter_ns / 1e9 / (c1 - c0))
                sources = sources or meter.status()
                assert rows, "the meter produced no samples"
            else:
                rates[mode] = run_block(step, args.block_s)
        off.append(rates["off"])
        on.append(rates["on"])
        ratios.append(rates["on"][0] / rates["off"][0])
        cpu_ratios.append(rates["on"][1] / rates["off"][1])
        print(f"pair {i}: off {rates['off'][0]:.1f} it/s, on {rates['on'][0]:.1f} it/s, "
              f"ratio {ratios[-1]:.4f}; CPU s/it on/off {cpu_ratios[-1]:.4f}", flush=True)
    costs = tick_cost_s(run_dir, args.interval_s)

    overhead = 1.0 - statistics.median(ratios)
    cpu_overhead = statistics.median(cpu_ratios) - 1.0
    wall_ci, cpu_ci = median_ci(ratios), median_ci(cpu_ratios)
    load = os.getloadavg()
    lines = [
        "# Metering overhead (bench/bench_meter.py)",
        "",
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: {platform.platform()}; CPU: {cpu_model()}; cores: {os.cpu_count()}; "
        f"torch {torch.__version__} (threads {torch.get_num_threads()})",
        f"- load average at the end (1/5/15 min): {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
        "(a shared machine: other jobs add noise to the A/B figure)",
        f"- workload: MLP 256-512-512-256, batch 32, AdamW; {args.pairs} pairs of "
        f"{args.block_s:g} s blocks, ABBA order; meter interval {args.interval_s:g} s",
        f"- meter sources: gpu {sources['gpu']}, cpu {sources['cpu']}; errors: "
        f"{sources['errors'] or 'none'}",
        "",
        "| pair | off (it/s) | on (it/s) | on/off | off (CPU ms/it) | on (CPU ms/it) | on/off |",
        "|---|---|---|---|---|---|---|",
        *[f"| {i} | {a[0]:.1f} | {b[0]:.1f} | {r:.4f} | {a[1] * 1e3:.2f} | {b[1] * 1e3:.2f} "
          f"| {c:.4f} |" for i, (a, b, r, c) in enumerate(zip(off, on, ratios, cpu_ratios))],
        "",
        f"**Wall-clock overhead (1 - median on/off it/s ratio): {overhead * 100:+.2f}%** "
        f"(95% CI of the median {(1 - wall_ci[1]) * 100:+.2f}% to {(1 - wall_ci[0]) * 100:+.2f}%)",
        "",
        f"**CPU-time overhead (median on/off CPU s per iteration - 1): "
        f"{cpu_overhead * 100:+.2f}%** (95% CI of the median {(cpu_ci[0] - 1) * 100:+.2f}% to "
        f"{(cpu_ci[1] - 1) * 100:+.2f}%)",
        "",
        f"**In situ: the metering threads used {statistics.median(meter_shares) * 100:.3f}% "
        f"(median; max {max(meter_shares) * 100:.3f}%) of the process's CPU time during the "
        f"'on' blocks** (per-thread CPU from /proc/self/task/*/schedstat; the main thread is "
        f"the only training thread). This is the figure to trust on a busy machine: the two "
        f"A/B figures above are limited by other jobs' noise, not by the meter.",
        "",
        "CPU time per second of metering, measured directly (noise-free cross-check):",
        f"- our sampling tick: {costs['tick_s'] * 1e6:.0f} µs per {args.interval_s:g} s",
        f"- codecarbon measurement: {costs.get('codecarbon_measure_s', 0) * 1e6:.0f} µs per "
        f"{args.interval_s:g} s; its power/utilisation monitor: "
        f"{costs.get('codecarbon_monitor_s', 0) * 1e6:.0f} µs per 1 s",
        f"- total: {costs['cpu_share_of_one_core'] * 100:.3f}% of one core "
        f"({costs['cpu_share_of_one_core'] / os.cpu_count() * 100:.3f}% of this machine)",
        "",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
