#!/usr/bin/env python3
"""The memory plan against PyTorch's FSDP2 memory tracker on the full presets.

Runs the tracker as tests/unit/test_memory_tracker.py does (fake tensors on CPU, a fake process
group, the trainer's own FSDP2 wrapping, bf16 parameters with fp32 reduction, AdamW foreach=False,
two steps) for every preset from `tiny` to `65b` with all their blocks, with and without
activation checkpointing, over a grid of micro-batches and world sizes, and writes
bench/results/memory_tracker.json and .md (plan / tracker for each). Fake tensors allocate
nothing, so the cost is the number of operations: about a second per block per configuration.

    python bench/bench_memory_tracker.py [--presets tiny,small]
    python bench/bench_memory_tracker.py --replan   # the recorded tracker peaks, today's plan
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import cpu_model  # noqa: E402
from model.presets import get_preset  # noqa: E402
from planners.memory import plan_memory  # noqa: E402
from tests.unit.test_memory_tracker import tracker_peak  # noqa: E402

GRID = [(1, 1), (8, 8), (256, 2)]  # (world size, micro-batch)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", default="tiny,small,1b,7b,65b,13b,33b")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "memory_tracker"))
    ap.add_argument("--replan", action="store_true",
                    help="recompute the plan for the tracker peaks already recorded in --out")
    args = ap.parse_args()
    if args.replan:
        replan(args.out)
        return
    rows = []
    load_before = os.getloadavg()[0]
    for name in args.presets.split(","):
        p = get_preset(name)
        a = replace(p.args, max_seq_len=max(p.args.max_seq_len, p.seq_len))
        for ac in (False, True):
            for world, mb in GRID:
                t = time.perf_counter()
                real = tracker_peak(a, world=world, seq_len=p.seq_len, micro_batch=mb,
                                    checkpointing=ac)
                m = plan_memory(a, seq_len=p.seq_len, micro_batch=mb, world_size=world,
                                activation_checkpointing=ac)
                row = {"preset": name, "world": world, "micro_batch": mb, "seq_len": p.seq_len,
                       "checkpointing": ac, "tracker_bytes": real,
                       "plan_bytes": m["total_bytes_per_device"], "peak_phase": m["peak_phase"],
                       "ratio": m["total_bytes_per_device"] / real,
                       "seconds": time.perf_counter() - t}
                rows.append(row)
                print(json.dumps(row), flush=True)
                write(args.out, rows, load_before)


def replan(out: str) -> None:
    doc = json.loads(Path(out + ".json").read_text())
    for r in doc["rows"]:
        p = get_preset(r["preset"])
        a = replace(p.args, max_seq_len=max(p.args.max_seq_len, r["seq_len"]))
        m = plan_memory(a, seq_len=r["seq_len"], micro_batch=r["micro_batch"],
                        world_size=r["world"], activation_checkpointing=r["checkpointing"])
        r.update(plan_bytes=m["total_bytes_per_device"], peak_phase=m["peak_phase"],
                 ratio=m["total_bytes_per_device"] / r["tracker_bytes"])
    meta = {**doc["machine"], "replanned": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    write(out, doc["rows"], meta["load_1min_before"], meta)


def write(out: str, rows: list[dict], load_before: float, meta: dict | None = None) -> None:
    meta = meta or {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
        "load_1min_before": load_before, "load_1min_after": os.getloadavg()[0],
        "note": "shared 2-core machine: other sessions' tests ran at the same time; the figures "
                "are bytes, which do not depend on load"}
    Path(out + ".json").write_text(json.dumps({"machine": meta, "rows": rows}, indent=1))
    ratios = [r["ratio"] for r in rows]
    lines = ["# Memory plan vs PyTorch's FSDP2 memory tracker (full presets)", "",
             f"Machine: {meta['cpu']}, {meta['cores']} cores, Python {meta['python']}, "
             f"{meta['date']}; load {meta['load_1min_before']:.1f} before, "
             f"{meta['load_1min_after']:.1f} after ({meta['note']}).", "",
             "`python bench/bench_memory_tracker.py`: the tracker as in "
             "tests/unit/test_memory_tracker.py (fake tensors, fake process group, the trainer's "
             "FSDP2 wrapping, bf16 params / fp32 reduce, AdamW foreach=False, two steps); the "
             "plan is planners/memory.py without its margin"
             + (f" (recomputed {meta['replanned']} for the recorded tracker peaks)"
                if meta.get("replanned") else "") + ".", "",
             f"{len(rows)} configurations: plan / tracker from {min(ratios):.3f} to "
             f"{max(ratios):.3f} (band: 1.00-1.15).", "",
             "| preset | ckpt | world | micro-batch | seq | tracker GB | plan GB | plan/tracker "
             "| plan's peak | s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['preset']} | {'yes' if r['checkpointing'] else 'no'} | {r['world']} "
                     f"| {r['micro_batch']} | {r['seq_len']} | {r['tracker_bytes'] / 1e9:.3f} | "
                     f"{r['plan_bytes'] / 1e9:.3f} | {r['ratio']:.3f} | {r['peak_phase']} | "
                     f"{r['seconds']:.0f} |")
    Path(out + ".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
