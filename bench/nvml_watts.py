"""The real NVML path on a GPU machine: bf16 matmuls on each visible GPU with a NodeMeter on,
then the watts it measured (energy counter, differenced per window) beside NVML's own power
reading sampled in the same windows. Writes bench/results/meter-nvml.md.

    python bench/nvml_watts.py [--seconds 30] [--interval-s 1] [--size 8192]
"""

from __future__ import annotations

import argparse
import os
import platform
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
from orchestrator.energy.nvml import load_nvml, visible_gpu_uuids  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--interval-s", type=float, default=1.0)
    p.add_argument("--size", type=int, default=8192)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "meter-nvml.md"))
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device here: nothing to measure", file=sys.stderr)
        return 1

    uuids = visible_gpu_uuids()
    nvml = load_nvml()
    handles = [nvml.nvmlDeviceGetHandleByUUID(u) for u in uuids]
    names = [nvml.nvmlDeviceGetName(h) for h in handles]
    power_w: list[float] = []
    done = threading.Event()

    def sample_power():  # NVML's power sensor, for comparison only
        while not done.wait(args.interval_s / 4):
            power_w.append(sum(nvml.nvmlDeviceGetPowerUsage(h) for h in handles) / 1000.0)

    meter = NodeMeter(tempfile.mkdtemp(prefix="nvml-watts-"), interval_s=args.interval_s,
                      gpu_uuids=uuids, cpu=False)
    a = [torch.randn(args.size, args.size, device=f"cuda:{i}", dtype=torch.bfloat16)
         for i in range(torch.cuda.device_count())]
    threading.Thread(target=sample_power, daemon=True).start()
    meter.start()
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < args.seconds:
        for x in a:
            x @ x
        n += 1
        if n % 20 == 0:
            torch.cuda.synchronize()
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    rows = meter.stop()
    done.set()
    status = meter.status()
    nvml.nvmlShutdown()

    total_j = sum(r["joules"] for r in rows)
    window_s = sum(r["window_s"] for r in rows) / max(1, len(uuids))
    tflops = 2 * args.size**3 * n * len(a) / elapsed / 1e12
    per_window = [r["watts"] for r in rows]
    lines = [
        "# The real NVML path (bench/nvml_watts.py)", "",
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {platform.platform()}; "
        f"torch {torch.__version__}; GPUs: {', '.join(map(str, names))}",
        f"- meter status: gpu {status['gpu']}, errors {status['errors'] or 'none'}",
        f"- workload: {args.size}^3 bf16 matmuls for {elapsed:.1f} s, {tflops:.0f} TFLOP/s "
        f"over {len(a)} GPU(s)", "",
        f"- energy counter: {total_j:.0f} J over {window_s:.1f} s -> "
        f"**{total_j / window_s:.0f} W** (all metered GPUs; per window median "
        f"{statistics.median(per_window):.0f} W, {len(rows)} samples, sources "
        f"{sorted({r['source'] for r in rows})})",
        f"- NVML power sensor over the same run: median {statistics.median(power_w):.0f} W "
        f"({len(power_w)} readings)" if power_w else "- NVML power sensor: no readings",
        "",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0 if status["gpu"] in ("nvml", "nvml-power") and rows else 1


if __name__ == "__main__":
    raise SystemExit(main())
