"""Summarise the newest run in a TALLY_HOME (written for bench/gpu_check.sh: `1b` in bf16 on one
GPU): steady-state tokens/s and MFU from the store's step rows (MFU against the catalogue peak
of `--gpu`), and the watts its energy meter measured per device (NVML counter differences).
Target (issue 5): `1b` on one H100 at >= 50% MFU of 989 TFLOP/s. Writes OUT.md and OUT.json.

    python bench/gpu_summary.py HOME OUT [--warmup 5] [--gpu h100] [--note TEXT]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import trainbench as tb  # noqa: E402

TARGET_MFU = 0.50


def summarise(home: Path, warmup: int, gpu: str) -> dict:
    from sqlalchemy import select

    from orchestrator.store import EnergySample
    from planners.hardware import get_gpu

    _, store = tb.open_home(home)
    run = store.run_summaries()[0]  # newest first
    rows = tb.step_rows(store, run["id"])
    steady = [r for r in rows if r["step"] > warmup]
    with store.read() as s:
        energy = list(s.scalars(select(EnergySample).where(EnergySample.run_id == run["id"])))
        by_device = defaultdict(lambda: {"joules": 0.0, "window_s": 0.0, "sources": set()})
        for e in energy:
            d = by_device[e.device]
            d["joules"] += e.joules
            d["window_s"] += e.window_s
            d["sources"].add(e.source)
    store.close()
    watts = {dev: {"joules": d["joules"], "window_s": d["window_s"],
                   "watts": d["joules"] / d["window_s"] if d["window_s"] else None,
                   "sources": sorted(d["sources"])} for dev, d in by_device.items()}
    return {"machine": tb.machine(), "run": {k: run[k] for k in ("id", "preset", "status",
                                                               "steps", "tokens", "final_loss",
                                                               "energy_joules", "message")},
            "gpu": gpu, "peak_flops": get_gpu(gpu).peak_flops, "warmup": warmup,
            "tokens_per_s": tb.spread([r["tokens_per_s"] for r in steady]),
            "mfu": tb.spread([r["mfu"] for r in steady if r["mfu"] is not None]),
            "memory_bytes": max((r["memory_bytes"] or 0) for r in rows) if rows else None,
            "energy_by_device": watts, "rows": rows}


def render(res: dict, note: str) -> str:
    m, r, mfu = res["machine"], res["run"], res["mfu"]
    lines = ["# `1b` in bf16 on one GPU (bench/gpu_check.sh)", "",
             f"- date: {m['date']}; {m['platform']}; CPU: {m['cpu']}; cores: {m['cores']}; "
             f"torch {m['torch']}", f"- {note}" if note else "",
             f"- run {r['id']}: {r['status']}, {r['steps']} steps, {r['tokens']} tokens, final "
             f"loss {r['final_loss']}; {r['message'] or ''}",
             f"- first {res['warmup']} steps skipped; peak {res['peak_flops'] / 1e12:.0f} TFLOP/s "
             f"(catalogue `{res['gpu']}`, dense bf16)", ""]
    if mfu.get("n"):
        t = res["tokens_per_s"]
        lines += [f"- tokens/s: median {t['median']:.0f} (min {t['min']:.0f}, max {t['max']:.0f})",
                  f"- max memory: {(res['memory_bytes'] or 0) / 2**30:.1f} GiB (torch max allocated)",
                  f"- **MFU: median {mfu['median']:.1%} (min {mfu['min']:.1%}, max "
                  f"{mfu['max']:.1%}); target >= {TARGET_MFU:.0%}: "
                  f"{'met' if mfu['median'] >= TARGET_MFU else 'NOT met'}**"]
    else:
        lines.append("- no steady-state step rows: see the run's message and the log")
    lines += ["", "Energy the run's meter recorded, per device:", ""]
    for dev, e in sorted(res["energy_by_device"].items()):
        w = f"{e['watts']:.0f} W" if e["watts"] is not None else "-"
        lines.append(f"- {dev}: {e['joules']:.0f} J over {e['window_s']:.0f} s -> {w} "
                     f"({', '.join(e['sources'])})")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("home")
    p.add_argument("out", help="output path without suffix (.md and .json are written)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--gpu", default="h100")
    p.add_argument("--note", default="")
    args = p.parse_args(argv)
    res = summarise(Path(args.home), args.warmup, args.gpu)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(render(res, args.note))
    out.with_suffix(".json").write_text(json.dumps(res, indent=1, default=str))
    print(render(res, args.note))
    return 0 if res["mfu"].get("n") else 1


if __name__ == "__main__":
    raise SystemExit(main())
