#!/usr/bin/env python3
"""Fill a tally store with SYNTHETIC sweep runs, for trying `fit` before real runs exist.

Each point of the IsoFLOP ladder that `cli.py sweep --budgets ... --sizes ...` would train gets a
run (preset "synthetic", config["synthetic"] = the law) and an "eval" event whose val_loss is
L(N, D) of a known law times exp(N(0, noise)). Nothing is trained. Then
`cli.py fit NAME --sweep SWEEP_ID` fits them back, and the known law says how close it came.

    python bench/fit_synthetic.py --budgets 1e13,3e13,1e14,3e14 --sizes 4 --noise 0.005
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator.store.home import Home  # noqa: E402
from orchestrator.store import open_store  # noqa: E402
from orchestrator.scaling.sweep import point_key, run_sweep  # noqa: E402
from planners.fitting import predict  # noqa: E402
from planners.isoflop import isoflop_ladder  # noqa: E402

# A law shaped like tiny CPU models on an 8192-token vocabulary (higher floor than Chinchilla's).
LAW = {"E": 2.2, "A": 60.0, "B": 900.0, "alpha": 0.30, "beta": 0.38}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budgets", default="1e13,3e13,1e14,3e14")
    ap.add_argument("--sizes", type=int, default=4)
    ap.add_argument("--noise", type=float, default=0.005, help="sd of log-loss noise")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default="demo")
    args = ap.parse_args()
    budgets = [float(b) for b in args.budgets.split(",")]
    store = open_store(None, Home.resolve())
    sid = run_sweep(store, budgets, args.sizes, data=args.data, dry_run=True)["sweep_id"]
    rng = np.random.default_rng(args.seed)
    for p in isoflop_ladder(budgets, args.sizes):
        loss = float(predict(LAW, p.params, p.tokens) * np.exp(rng.normal(0, args.noise)))
        run = store.create_run("synthetic", {"synthetic": LAW, "noise": args.noise,
                                             "sweep": point_key(sid, p, args.data, 0)},
                               status="completed", name="synthetic (not trained)")
        store.add_event(run.id, "eval", step=p.steps, tokens=p.tokens, val_loss=loss, params=p.params)
    print(json.dumps({"sweep_id": sid, "law": LAW, "noise": args.noise,
                      "runs": len(isoflop_ladder(budgets, args.sizes))}))


if __name__ == "__main__":
    main()
