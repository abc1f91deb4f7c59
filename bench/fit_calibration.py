#!/usr/bin/env python3
"""How well the Chinchilla-style fit (planners/fitting.py) recovers a known law from a sweep the
size `sweep` makes here, and what it costs: for `--trials` synthetic sweeps (the IsoFLOP ladder of
`--budgets` x `--sizes`, losses from a known law times exp(N(0, noise))), fit with `--bootstrap`
refits and record the error of each constant, whether each 90% interval covers the truth, the
error on two held-out points, and the CPU time per fit. Writes bench/results/fit_calibration.json
with the machine's description.

    python bench/fit_calibration.py --trials 10 --bootstrap 100
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from planners.fitting import KEYS, Point, fit_points, optimal_exponents, predict  # noqa: E402
from planners.isoflop import isoflop_ladder  # noqa: E402

LAW = {"E": 2.2, "A": 60.0, "B": 900.0, "alpha": 0.30, "beta": 0.38}


def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import scipy

    return {"platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(),
            "python": platform.python_version(), "numpy": np.__version__,
            "scipy": scipy.__version__, "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budgets", default="1e13,3e13,1e14,3e14")
    ap.add_argument("--sizes", type=int, default=4)
    ap.add_argument("--noise", type=float, default=0.005)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--bootstrap", type=int, default=100)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "fit_calibration.json"))
    a = ap.parse_args()
    ladder = isoflop_ladder([float(b) for b in a.budgets.split(",")], a.sizes)
    truth = {**LAW, **optimal_exponents(LAW)}
    trials = []
    for seed in range(a.trials):
        rng = np.random.default_rng(seed)
        pts = [Point(p.params, p.tokens, float(predict(LAW, p.params, p.tokens)
                                               * np.exp(rng.normal(0, a.noise))), run_id=str(i))
               for i, p in enumerate(ladder)]
        held, fitted = pts[2::7], [p for p in pts if p not in pts[2::7]]
        t0 = time.process_time()
        r = fit_points(fitted, bootstrap=a.bootstrap, seed=seed)
        cpu_s = time.process_time() - t0
        est = {**r.constants, **r.exponents}
        trials.append({
            "seed": seed, "cpu_s": cpu_s,
            "error": {k: est[k] - truth[k] for k in truth},
            "covered": {k: r.intervals[k][0] <= truth[k] <= r.intervals[k][1] for k in truth},
            "holdout_error_pct": [100 * (p.loss / float(predict(r.constants, p.params, p.tokens)) - 1)
                                  for p in held],
        })
    keys = list(KEYS) + ["a", "b"]
    summary = {
        "coverage_90": {k: float(np.mean([t["covered"][k] for t in trials])) for k in keys},
        "median_abs_error": {k: float(np.median([abs(t["error"][k]) for t in trials])) for k in keys},
        "holdout_max_abs_error_pct": float(max(abs(e) for t in trials for e in t["holdout_error_pct"])),
        "cpu_s_per_fit_median": float(np.median([t["cpu_s"] for t in trials])),
    }
    out = {"machine": machine(), "law": LAW, "settings": vars(a), "runs_per_sweep": len(ladder),
           "summary": summary, "trials": trials}
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
