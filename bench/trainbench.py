"""Shared by bench_train.py and bench_meter_train.py: real training runs through
`orchestrator.launcher.train` (Ray Train, FSDP2 on CPU gloo) in a bench TALLY_HOME, and the
per-step figures read back from the store's step rows.

Figures per run, over the steady-state steps (the first `warmup` steps skipped):
- `tokens_per_s`, `mfu`: the store's step rows, as the workers measured them (time from the
  start of a step to the all-reduced loss: forward, backward, clipping, optimiser step).
- `wall_tokens_per_s`: tokens per step / the interval between consecutive step rows' times,
  i.e. the whole loop, reporting to the driver, the command poll and its broadcast included.
- `peak_flops`: the fp32 matmul peak the workers measured (MFU's denominator), recovered
  exactly from each row: flops_per_token * tokens_per_s / (mfu * workers).
"""

from __future__ import annotations

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
from bench.machine import cpu_model  # noqa: E402

RESULTS = ROOT / "bench" / "results"
DEFAULT_HOME = ROOT / "bench" / "out" / "home"


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "load average: %.2f, %.2f, %.2f" % os.getloadavg()


def machine() -> dict:
    import torch

    return {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "platform": platform.platform(), "cpu": cpu_model(), "cores": os.cpu_count(),
            "torch": torch.__version__, "python": platform.python_version()}


def ensure_demo(home: Path) -> None:
    """`cli.py data prepare --demo` into `home` unless the demo dataset is there already."""
    if (home / "data" / "demo").is_dir():
        return
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TALLY_HOME": str(home)}
    subprocess.run([sys.executable, str(ROOT / "cli.py"), "data", "prepare", "--demo"],
                   env=env, check=True, cwd=ROOT)


def start_ray() -> None:
    """One private local Ray for all the runs (launcher.connect reuses an initialised Ray)."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False,
                 log_to_driver=False, configure_logging=False)


def open_home(home: Path):
    from orchestrator.store.home import Home
    from orchestrator.store import open_store

    os.environ["TALLY_HOME"] = str(home)
    h = Home.resolve(home)
    return h, open_store(None, h)


def step_rows(store, run_id: str) -> list[dict]:
    from sqlalchemy import select

    from orchestrator.store import Step

    with store.read() as s:
        rows = list(s.scalars(select(Step).where(Step.run_id == run_id).order_by(Step.step)))
        return [{"step": r.step, "tokens": r.tokens, "loss": r.loss,
                 "tokens_per_s": r.tokens_per_s, "mfu": r.mfu, "memory_bytes": r.memory_bytes,
                 "time": r.time.replace(tzinfo=timezone.utc).timestamp()} for r in rows]


def spread(xs: list[float]) -> dict:
    if not xs:
        return {"n": 0}
    q = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
    return {"n": len(xs), "median": statistics.median(xs), "min": min(xs), "max": max(xs),
            "q1": q[0], "q3": q[2]}


def train_once(store, home, preset: str, workers: int, steps: int, *, meter: bool = False,
               batch_tokens: int | None = None, micro_batch: int | None = None,
               warmup: int = 3, name: str | None = None, compile: bool = False) -> dict:
    """One real run through launcher.train; its steady-state figures."""
    from model.presets import flops_per_token, get_preset
    from orchestrator.run.launcher import train
    from orchestrator.run.spec import RunSpec

    req = RunSpec(preset=preset, workers=workers, max_steps=steps, data="demo",
                       batch_tokens=batch_tokens, micro_batch=micro_batch, meter=meter,
                       dashboard=False, checkpoint_every=steps, keep_last=1, compile=compile,
                       name=name or f"bench-{preset}-w{workers}")
    load0, t0 = os.getloadavg(), time.time()
    summary = train(store, home, req)
    elapsed = time.time() - t0
    rows = step_rows(store, summary["id"])
    p = get_preset(preset)
    fpt = flops_per_token(p.args, p.seq_len)
    tokens_per_step = rows[0]["tokens"] // rows[0]["step"] if rows else 0
    steady = [r for r in rows if r["step"] > warmup]
    wall = [tokens_per_step / (b["time"] - a["time"])
            for a, b in zip(steady, steady[1:]) if b["time"] > a["time"]]
    peaks = [fpt * r["tokens_per_s"] / (r["mfu"] * workers) for r in steady if r["mfu"]]
    return {
        "run_id": summary["id"], "status": summary["status"], "preset": preset,
        "workers": workers, "compile": compile, "steps": len(rows), "warmup_steps_skipped": warmup,
        "tokens_per_step": tokens_per_step, "flops_per_token": fpt, "params": p.params,
        "meter": meter, "energy_joules": summary.get("energy_joules"),
        "tokens_per_s": spread([r["tokens_per_s"] for r in steady]),
        "wall_tokens_per_s": spread(wall),
        "mfu": spread([r["mfu"] for r in steady if r["mfu"] is not None]),
        "peak_flops": spread(peaks),
        "memory_bytes": max((r["memory_bytes"] or 0) for r in rows) if rows else None,
        "first_loss": rows[0]["loss"] if rows else None,
        "last_loss": rows[-1]["loss"] if rows else None,
        "run_s": elapsed, "startup_s": (rows[0]["time"] - t0) if rows else None,
        "loadavg_before": load0, "loadavg_after": os.getloadavg(), "rows": rows,
    }


def write_results(out: str | Path, res: dict, render) -> None:
    """bench/results/NAME.md (rendered) and NAME.json beside it; the table on stdout too."""
    import json

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(res))
    out.with_suffix(".json").write_text(json.dumps(res, indent=1, default=str))
    print(render(res))
