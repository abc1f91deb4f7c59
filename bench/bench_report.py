#!/usr/bin/env python3
"""How long `report carbon`, `report run` and `runs` take over 1M step rows and 1M energy rows.

    python bench/bench_report.py [--steps 1000000] [--energy 1000000] [--out bench/results/report.md]

Fills a fresh SQLite store (bulk inserts through SQLAlchemy Core executemany, not the ORM), then
times each command in-process through cli.main, as a user would call it, best of 3.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert  # noqa: E402

import cli  # noqa: E402
from orchestrator.store import EnergySample, Step, Store  # noqa: E402

T0 = datetime(2026, 1, 5, 0, 0, 0)
BATCH = 50_000


def fill(store: Store, n_steps: int, n_energy: int, n_runs: int = 10) -> str:
    """n_runs runs; the first holds half of all rows (the one `report run` draws)."""
    shares = [0.5] + [0.5 / (n_runs - 1)] * (n_runs - 1)
    big = None
    for i, share in enumerate(shares):
        rid = f"bench-{i}"
        big = big or rid
        steps, samples = int(n_steps * share), int(n_energy * share)
        cfg = {"preset": "1b", "workers": 4, "device": "cuda", "gpus_per_worker": 8, "gpu": "h100",
               "pue": 1.1, "intensity_kg_per_kwh": 0.43, "intensity_source": "bench",
               "region": "gcp:us-central1", "price_usd_per_gpu_hour": 2.0,
               "tokens_planned": steps * 2**21, "max_steps": steps, "seq_len": 2048,
               "batch_tokens": 2**21}
        store.create_run("1b", cfg, run_id=rid, status="completed")
        start = T0 + timedelta(days=3 * i)
        store.update_run(rid, started_at=start, ended_at=start + timedelta(seconds=steps * 2.0))
        _bulk(store, Step.__table__, steps, lambda k: {
            "run_id": rid, "step": k + 1, "tokens": (k + 1) * 2**21, "loss": 2.5 + 6 / (1 + k / 500),
            "lr": 3e-4, "grad_norm": 1.0, "tokens_per_s": 1.0e6, "mfu": 0.4, "memory_bytes": 7 * 2**30,
            "time": start + timedelta(seconds=2.0 * (k + 1))})
        # 4 nodes x (8 GPUs + cpu + ram) = 40 devices, one sample each per window
        window = max(1.0, steps * 2.0 / max(1, samples // 40))
        _bulk(store, EnergySample.__table__, samples, lambda k: {
            "run_id": rid, "node": f"node-{k % 40 // 10}",
            "device": f"gpu:GPU-{k % 40}" if k % 10 < 8 else ("cpu" if k % 10 == 8 else "ram"),
            "time": start + timedelta(seconds=window * (k // 40 + 1)), "window_s": window,
            "joules": window * (650.0 if k % 10 < 8 else 120.0), "watts": 650.0 if k % 10 < 8 else 120.0,
            "source": "nvml" if k % 10 < 8 else ("rapl" if k % 10 == 8 else "estimate")})
    return big


def _bulk(store: Store, table, n: int, row) -> None:  # noqa: ANN001
    for lo in range(0, n, BATCH):
        with store.write() as s:
            s.execute(insert(table), [row(k) for k in range(lo, min(n, lo + BATCH))])


def timed(*argv: str, repeat: int = 3) -> tuple[float, float, float]:
    """(best wall s, median wall s, best CPU s of this process): the machine is shared, so CPU
    time is the figure that does not move with other people's load."""
    walls, cpus = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        with contextlib.redirect_stdout(io.StringIO()):
            code = cli.main(list(argv))
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
        assert code == 0, argv
    return min(walls), statistics.median(walls), min(cpus)


def machine() -> str:
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import sqlite3

    import sqlalchemy
    try:
        import torch
        tv = torch.__version__
    except ImportError:
        tv = "not installed"
    return (f"{platform.platform()}; {cpu}; {os.cpu_count()} cores; Python "
            f"{platform.python_version()}; SQLite {sqlite3.sqlite_version}; SQLAlchemy "
            f"{sqlalchemy.__version__}; torch {tv}; {datetime.now().isoformat(timespec='minutes')}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1_000_000)
    ap.add_argument("--energy", type=int, default=1_000_000)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "report.md"))
    ap.add_argument("--db", help="keep the filled store here (reused when it exists)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or os.path.join(tmp, "bench.db")
        reuse = os.path.exists(db)
        t = time.perf_counter()
        store = Store(f"sqlite:///{db}")
        big = "bench-0" if reuse else fill(store, args.steps, args.energy)
        fill_s = time.perf_counter() - t
        size_mb = os.path.getsize(db) / 1e6
        plot = os.path.join(tmp, "run.png")
        rows = [
            ("report carbon", timed("--db", db, "report", "carbon")),
            ("report carbon --json --reference llama", timed("--db", db, "report", "carbon", "--json",
                                                             "--reference", "llama")),
            ("report cost --json", timed("--db", db, "report", "cost", "--json")),
            (f"report run {big} (500k steps, 500k samples)", timed("--db", db, "report", "run", big)),
            (f"report run {big} --plot run.png", timed("--db", db, "report", "run", big, "--plot", plot)),
            ("runs --json", timed("--db", db, "runs", "--json")),
        ]
        store.close()
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    filled = (f"filled in {fill_s:.1f} s by bulk executemany" if not reuse
              else "reused from an earlier run of this script")
    lines = [
        "# report over 1M step rows and 1M energy rows",
        "",
        f"Machine: {machine()}; load average while timing {load} (shared machine)",
        "",
        f"Store: {args.steps:,} step rows and {args.energy:,} energy rows over 10 runs (one run holds "
        f"half of each), SQLite file {size_mb:.0f} MB, {filled}. Each command run in-process "
        "through cli.main (store open, queries, rendering), stdout discarded, 3 times; the import "
        "of cli.py itself is not counted.",
        "",
        "| command | best wall s | median wall s | best CPU s |",
        "|---|---|---|---|",
        *[f"| `{name}` | {best:.2f} | {med:.2f} | {cpu:.2f} |" for name, (best, med, cpu) in rows],
        "",
        "Produced by `python bench/bench_report.py`.",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
