#!/usr/bin/env python3
"""How long one plan takes to compute (target: well under a second).

Times `planners.plan.make_plan` (sizing, the three optima, the LLaMA rows, the memory plan) for
a few representative requests, and once the whole `cli.py plan --json` in a fresh process
(interpreter start, imports, store open, plan, store write). Writes bench/results/plan.json and
bench/results/plan.md naming the machine.

    python bench/bench_plan.py [--repeats 50]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from planners.plan import make_plan  # noqa: E402

CASES = {
    "optimise, 2T tokens served": dict(target="13b", inference_budget="2T"),
    "optimise, requests, H100 serving": dict(target="ppl=7.8", requests="1e9",
                                             prompt_tokens="1500", output_tokens="500",
                                             inference_gpu="h100", fit="epoch"),
    "evaluate LLaMA-65B (380 tok/s/GPU)": dict(model="65b", train_tokens="1.4T", gpus=2048,
                                               throughput=380.0),
    "optimise, no presets, FRA grid": dict(target="2.1", inference_budget="500B", presets=False,
                                           region="FRA"),
}


def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        torch = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch = None
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
            "cores": os.cpu_count(), "torch": torch, "scipy": metadata.version("scipy"),
            "load_average": os.getloadavg(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def time_case(kwargs: dict, repeats: int) -> dict:
    make_plan(**kwargs)  # warm caches (grid data, imports)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        make_plan(**kwargs)
        times.append(time.perf_counter() - t0)
    return {"median_ms": 1e3 * statistics.median(times), "max_ms": 1e3 * max(times),
            "repeats": repeats}


def time_cli() -> float:
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "TALLY_HOME": home}
        env.pop("TALLY_DB", None)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "cli.py", "plan", "--target-perf", "13b",
                        "--inference-budget", "2T", "--json"], cwd=ROOT, env=env, check=True,
                       capture_output=True)
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=50)
    opts = ap.parse_args()
    results = {"machine": machine(),
               "make_plan": {name: time_case(kw, opts.repeats) for name, kw in CASES.items()},
               "cli_fresh_process_s": time_cli()}
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "plan.json").write_text(json.dumps(results, indent=2) + "\n")
    m = results["machine"]
    lines = ["# plan: time per plan", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, {m['platform']}, Python {m['python']}, "
             f"scipy {m['scipy']}, torch {m['torch']} (not imported by the planner); load "
             f"average {m['load_average'][0]:.1f} (a shared machine); {m['date']}.", "",
             "| request | median ms | max ms | repeats |", "|---|---|---|---|"]
    for name, r in results["make_plan"].items():
        lines.append(f"| {name} | {r['median_ms']:.1f} | {r['max_ms']:.1f} | {r['repeats']} |")
    lines += ["", f"Whole `cli.py plan --json` in a fresh process (interpreter, imports, store "
                  f"open and migration, plan, store write): {results['cli_fresh_process_s']:.2f} s.",
              "", "Produced by `python bench/bench_plan.py`."]
    (out / "plan.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
