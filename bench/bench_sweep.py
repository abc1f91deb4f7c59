"""A real IsoFLOP sweep on this machine, fitted, with two held-out runs predicted.

Runs the CLI itself (each command as a subprocess, as a user would):

    cli.py data prepare --demo                       (skipped when the demo data is there)
    cli.py sweep --budgets ... --sizes 3 ...         (resumable: finished runs are not redone)
    cli.py sweep ... again                           (must train nothing)
    cli.py fit NAME --sweep ID --holdout A,B --plot bench/results/sweep.png

and writes bench/results/sweep.md: the machine, the ladder, each run's params, tokens, val loss,
wall time and measured tokens/s, the fitted constants with their intervals, and the held-out
runs' predicted vs measured loss.

    python bench/bench_sweep.py [--home bench/out/sweep-home] [--budgets 5e10,1e11,1.4e11,2e11]
        [--holdout-budget 1.4e11] [--batch-tokens 1024] [--lr 1e-2] [--flops-per-s 1.7e9]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import select  # noqa: E402

from orchestrator.store.home import Home  # noqa: E402
from orchestrator.store import Step, Store  # noqa: E402


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cli(home: Path, *args: str) -> tuple[dict, float]:
    """Run `cli.py ARGS --json` with TALLY_HOME=home; its JSON and its wall time."""
    env = {**os.environ, "TALLY_HOME": str(home)}
    env.pop("TALLY_DB", None)
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, str(ROOT / "cli.py"), "--json", *args], cwd=ROOT, env=env,
                       capture_output=True, text=True)
    wall = time.monotonic() - t0
    if p.returncode != 0:
        sys.exit(f"cli.py {' '.join(args)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return json.loads(p.stdout), wall


def run_timing(store: Store, run_id: str) -> dict:
    """Wall time of the run (created to ended: Ray Train start-up included) and its training
    time and median tokens/s from the step rows."""
    run = store.get_run(run_id)
    with store.read() as s:
        steps = list(s.scalars(select(Step).where(Step.run_id == run_id).order_by(Step.step)))
    wall = (run.ended_at - run.created_at).total_seconds() if run.ended_at else None
    train_s = (steps[-1].time - steps[0].time).total_seconds() if len(steps) > 1 else None
    tps = statistics.median(x.tokens_per_s for x in steps if x.tokens_per_s) if steps else None
    return {"wall_s": wall, "train_s": train_s, "tokens_per_s": tps,
            "created": run.created_at, "ended": run.ended_at}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", default=str(ROOT / "bench" / "out" / "sweep-home"))
    ap.add_argument("--budgets", default="5e10,1e11,1.4e11,2e11")
    ap.add_argument("--sizes", default="3")
    ap.add_argument("--holdout-budget", type=float, default=1.4e11,
                    help="Its smallest and largest runs are held out of the fit and predicted.")
    ap.add_argument("--batch-tokens", default="1024")
    ap.add_argument("--lr", default="1e-2")
    ap.add_argument("--flops-per-s", default="1.7e9")
    ap.add_argument("--bootstrap", default="200")
    ap.add_argument("--name", default="demo-sweep")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "sweep.md"))
    ap.add_argument("--plot", default=str(ROOT / "bench" / "results" / "sweep.png"))
    a = ap.parse_args()
    home = Path(a.home).absolute()
    home.mkdir(parents=True, exist_ok=True)

    if not (home / "data" / "demo" / "manifest.json").is_file():
        cli(home, "data", "prepare", "--demo")
    sweep_args = ["sweep", "--budgets", a.budgets, "--sizes", a.sizes, "--batch-tokens",
                  a.batch_tokens, "--lr", a.lr, "--flops-per-s", a.flops_per_s]
    sweep, sweep_wall = cli(home, *sweep_args)
    again, again_wall = cli(home, *sweep_args)
    if again["todo"] or any(p["status"] != "done" for p in again["points"]):
        sys.exit("the second sweep trained something: it is not resumable")
    sid = sweep["sweep_id"]
    held = [p for p in sweep["points"] if p["budget_flops"] == a.holdout_budget]
    held = [held[0]["run_id"], held[-1]["run_id"]]
    fit, fit_wall = cli(home, "fit", a.name, "--sweep", sid, "--holdout", ",".join(held),
                        "--bootstrap", a.bootstrap, "--plot", a.plot)

    store = Store(Home(home).db_url)
    timing = {p["run_id"]: run_timing(store, p["run_id"]) for p in sweep["points"]}
    store.close()
    first = min(t["created"] for t in timing.values())
    last = max(t["ended"] for t in timing.values())
    write_report(a, sweep, again_wall, fit, fit_wall, timing, held,
                 (last - first).total_seconds())
    print(Path(a.out).read_text())


def write_report(a, sweep: dict, again_wall: float, fit: dict, fit_wall: float, timing: dict,
                 held: list[str], sweep_wall_s: float) -> None:
    import torch

    d, k = fit["details"], fit["constants"]
    iv, level = d["intervals"], d["level"]
    asm = sweep["assumptions"]
    trained_tokens = sum(p["tokens"] for p in sweep["points"])
    train_s = sum(t["train_s"] or 0 for t in timing.values())
    lines = [
        "# A real IsoFLOP sweep on this machine, fitted (issue 10)",
        "",
        f"- machine: {platform.platform()}, {cpu_model()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, python {platform.python_version()}",
        f"- date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
        "- shared machine: other helpers were training and testing at the same time (load "
        f"average {os.getloadavg()[0]:.0f} when this report was written), so every time below "
        "is noisy and slower than on an idle machine",
        f"- reproduce: `python bench/bench_sweep.py --budgets {a.budgets} --batch-tokens "
        f"{a.batch_tokens} --lr {a.lr} --flops-per-s {a.flops_per_s}` (resumes a sweep already "
        "in its --home)",
        "",
        "## The sweep",
        "",
        f"`cli.py sweep {' '.join(['--budgets', a.budgets, '--sizes', a.sizes, '--batch-tokens', a.batch_tokens, '--lr', a.lr, '--flops-per-s', a.flops_per_s])}`"
        f" on the demo data (`data prepare --demo`: vocabulary {asm['vocab_size']}), sequence "
        f"{asm['seq_len']}, {asm['batch_tokens']} tokens a step, peak lr {asm['lr']} (cosine to "
        "10%), one Ray worker with 2 threads, metering on.",
        "",
        f"sweep id `{sweep['sweep_id']}`: {len(sweep['points'])} runs, {trained_tokens:,} tokens "
        f"in all; {sweep_wall_s / 60:.1f} min of wall time from the first run's start to the last "
        f"run's end ({train_s / 60:.1f} min of it in training steps, the rest Ray Train start-up, "
        "evaluation and checkpoints); predicted at the measured --flops-per-s "
        f"{float(a.flops_per_s):.3g}: {sum(p['predicted_time_s'] for p in sweep['points']) / 60:.1f} "
        "min of training. A second identical `sweep` trained nothing "
        f"(all {len(sweep['points'])} points `done`, {again_wall:.0f} s).",
        "",
        "| budget FLOPs | # | params | dim x layers | tokens | steps | val loss | wall s | train s "
        "| tokens/s | run | role |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for p in sweep["points"]:
        t, m = timing[p["run_id"]], p["model_args"]
        role = "held out" if p["run_id"] in held else "fitted"
        lines.append(
            f"| {p['budget_flops']:.3g} | {p['size_index']} | {p['params']:,} | "
            f"{m['dim']}x{m['n_layers']} | {p['tokens']:,} | {p['steps']} | {p['val_loss']:.4f} | "
            f"{t['wall_s']:.0f} | {(t['train_s'] or 0):.0f} | {(t['tokens_per_s'] or 0):,.0f} | "
            f"`{p['run_id']}` | {role} |")
    lines += [
        "",
        "## The fit",
        "",
        f"`cli.py fit {a.name} --sweep {sweep['sweep_id']} --holdout {','.join(held)} "
        f"--bootstrap {a.bootstrap} --plot bench/results/sweep.png` ({fit_wall:.0f} s): "
        f"{d['n_runs']} runs fitted, {d['n_bootstrap']} bootstrap refits, {level:.0%} intervals.",
        "",
        f"| constant | value | {level:.0%} interval |",
        "|---|---:|---:|",
    ]
    values = {**k, **d["exponents"]}
    for key in ("E", "A", "B", "alpha", "beta", "a", "b"):
        lo, hi = iv.get(key, [float("nan")] * 2)
        lines.append(f"| {key} | {values[key]:.4g} | {lo:.4g} .. {hi:.4g} |")
    lines += ["", "Residuals of the fitted runs (loss - predicted):", "",
              "| run | params | tokens | loss | predicted | residual | % |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for x in d["residuals"]:
        lines.append(f"| `{x['run_id']}` | {x['params']:,.0f} | {x['tokens']:,.0f} | "
                     f"{x['loss']:.4f} | {x['predicted']:.4f} | {x['residual']:+.4f} | "
                     f"{x['residual_pct']:+.2f} |")
    lines += ["", "## Held-out runs (not fitted): measured vs predicted", "",
              "| run | params | tokens | measured loss | predicted | error | % |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for x in d["holdout"]:
        lines.append(f"| `{x['run_id']}` | {x['params']:,.0f} | {x['tokens']:,.0f} | "
                     f"{x['loss']:.4f} | {x['predicted']:.4f} | {x['error']:+.4f} | "
                     f"{x['error_pct']:+.2f} |")
    worst = max(abs(x["error_pct"]) for x in d["holdout"])
    rms = (sum(x["residual_pct"] ** 2 for x in d["residuals"]) / len(d["residuals"])) ** 0.5
    lines += ["", f"Held-out error: at most {worst:.2f}% of the loss (fitted runs: "
                  f"{rms:.2f}% rms residual).", ""]
    for note in d.get("notes", []):
        lines.append(f"- fit note: {note}")
    lines.append("")
    lines.append("![IsoFLOP curves and the fitted law](sweep.png)")
    Path(a.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
