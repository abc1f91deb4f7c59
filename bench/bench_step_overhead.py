"""What the training loop spends per step outside the step itself (orchestrator/run/worker.py, rank 0):
the step message to the driver (`Channel.put.remote`), the command poll (a blocking
`ray.get(Channel.get_command.remote())`), `memory_bytes` (psutil RSS) and the Ray metric gauges,
each timed many times inside a Ray actor process, as a worker would call them. Compared with the
time of one `tiny` step here, they say whether the per-step bookkeeping matters.

    python bench/bench_step_overhead.py [--calls 300]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import trainbench as tb  # noqa: E402


def time_calls(calls: int, channel) -> dict:
    """Runs inside a Ray actor: microseconds per call of each per-step extra."""
    import torch

    from orchestrator.run.worker import _Reporter, _ray_metrics, memory_bytes

    import ray

    rep = _Reporter(channel, 0)
    pending = [channel.get_command.remote()]

    def pipelined_poll():  # the proposal: read last step's answer if it is in, ask again
        ready, _ = ray.wait(pending, timeout=0)
        if not ready:
            return None
        command = ray.get(pending[0])
        pending[0] = channel.get_command.remote()
        return command

    cpu = torch.device("cpu")
    payload = dict(step=1, tokens=2048, loss=7.0, lr=1e-3, grad_norm=1.0, tokens_per_s=1e4,
                   mfu=0.5, memory_bytes=1 << 30, time=time.time())
    cases = {
        "send step (put.remote)": lambda: rep.send("step", **payload),
        "command poll (blocking ray.get)": rep.command,
        "command poll, pipelined (proposal: ray.wait timeout 0)": pipelined_poll,
        "memory_bytes (psutil RSS)": lambda: memory_bytes(cpu),
        "ray metric gauges": lambda: _ray_metrics(7.0, 1e4, 0.5, "bench"),
    }
    out = {}
    for name, fn in cases.items():
        for _ in range(10):
            fn()
        ts = []
        for _ in range(calls):
            t = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t) * 1e6)
        q = statistics.quantiles(ts, n=10)
        out[name] = {"median_us": statistics.median(ts), "p90_us": q[8], "max_us": max(ts)}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=300)
    p.add_argument("--out", default=str(tb.RESULTS / "step_overhead.md"))
    args = p.parse_args(argv)
    import ray

    from orchestrator.run.launcher import _channel_class

    tb.start_ray()
    channel = _channel_class().remote()
    timer = ray.remote(num_cpus=0)(time_calls)
    res = {"machine": tb.machine(), "uptime_before": tb.uptime(),
           "calls": ray.get(timer.remote(args.calls, channel))}
    res["uptime_after"] = tb.uptime()
    total = sum(c["median_us"] for n, c in res["calls"].items() if "proposal" not in n)
    m = res["machine"]
    lines = ["# Per-step bookkeeping in the training loop (bench/bench_step_overhead.py)", "",
             f"- date: {m['date']}; {m['platform']}; CPU: {m['cpu']}; cores: {m['cores']}; "
             f"torch {m['torch']}",
             f"- uptime before: `{res['uptime_before']}`; after: `{res['uptime_after']}` "
             "(a shared machine: the tails are other jobs' doing)",
             f"- {args.calls} calls of each, inside a Ray task process, after 10 warm-up calls",
             "", "| per-step call | median µs | p90 µs | max µs |", "|---|---|---|---|"]
    for name, c in res["calls"].items():
        lines.append(f"| {name} | {c['median_us']:.0f} | {c['p90_us']:.0f} | {c['max_us']:.0f} |")
    lines += ["", f"Sum of the medians (as train.py does it today, the proposal left out): "
              f"**{total / 1000:.2f} ms per step**.", ""]
    res["sum_median_ms"] = total / 1000
    out = Path(args.out)
    out.write_text("\n".join(lines))
    out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
