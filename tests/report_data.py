"""Realistic runs for report tests, written through the Store's own methods."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from orchestrator.store import Store

T0 = datetime(2025, 11, 20, 8, 0, 0)


def cpu_run(store: Store, run_id: str = "tiny-cpu", start: datetime = T0, steps: int = 120,
            step_s: float = 0.5, workers: int = 2) -> str:
    """A tiny preset trained on CPU by 2 Ray workers: RAPL on the CPU, codecarbon's estimate for
    RAM, one sample every 5 s."""
    batch = 8 * 256
    config = {"preset": "tiny", "workers": workers, "device": "cpu", "gpus_per_worker": 0,
              "gpu": None, "pue": 1.2, "intensity_kg_per_kwh": 0.056,
              "intensity_source": "codecarbon global_energy_mix.json (FRA)", "region": "FRA",
              "price_usd_per_gpu_hour": None, "tokens_planned": steps * batch, "max_steps": steps,
              "seq_len": 256, "batch_tokens": batch}
    store.create_run("tiny", config, run_id=run_id, status="running")
    store.update_run(run_id, started_at=start)
    store.add_steps(run_id, [{"step": s, "tokens": s * batch, "loss": 9.0 * math.exp(-s / 40) + 3.0,
                              "tokens_per_s": batch / step_s * (1 + 0.05 * math.sin(s)),
                              "mfu": None, "time": start + timedelta(seconds=s * step_s)}
                             for s in range(1, steps + 1)])
    samples = []
    duration = steps * step_s
    for i in range(1, int(duration // 5) + 1):
        t = start + timedelta(seconds=5 * i)
        samples.append({"node": "node-a", "device": "cpu", "time": t, "window_s": 5.0,
                        "joules": 5.0 * 28.0, "watts": 28.0, "source": "rapl"})
        samples.append({"node": "node-a", "device": "ram", "time": t, "window_s": 5.0,
                        "joules": 5.0 * 3.0, "watts": 3.0, "source": "estimate"})
    store.add_energy(run_id, samples)
    store.update_run(run_id, status="completed", ended_at=start + timedelta(seconds=duration))
    return run_id


def gpu_run(store: Store, run_id: str = "1b-h100", start: datetime = T0 + timedelta(hours=2),
            steps: int = 200, planned_steps: int = 400, with_plan: bool = True) -> str:
    """The 1b preset on 2 workers x 4 H100s, NVML counters per GPU, stopped at half its planned
    steps (a budget stop), launched from a plan whose 'given' option predicted its footprint."""
    batch = 1024 * 2048
    tokens_planned = planned_steps * batch
    plan_id = None
    if with_plan:
        # The plan: 8 GPUs, 5 s a step (44% MFU), 700 W each, PUE 1.1, 0.43 kg/kWh (us-central1).
        from planners import footprint as fp
        gpu_hours = 8 * planned_steps * 5.0 / 3600
        f = fp.footprint_of_gpu_hours(gpu_hours, gpu_power_w=700, pue=1.1,
                                      intensity_kg_per_kwh=0.43, price_usd_per_gpu_hour=2.0)
        plan_id = store.add_plan({"preset": "1b", "tokens": tokens_planned}, {
            "options": [{"label": "given", "energy_mwh": f.energy_mwh, "tco2eq": f.tco2eq,
                         "gpu_hours": gpu_hours, "cost_usd": f.cost_usd, "tokens": tokens_planned},
                        {"label": "chinchilla", "energy_mwh": 9.0, "tco2eq": 4.0,
                         "gpu_hours": 1e4, "cost_usd": 2e4, "tokens": 20 * 1.1e9}],
            "chosen": "given",
            "assumptions": {"gpu": {"value": "h100"}, "gpus": {"value": 8}}})
    config = {"preset": "1b", "workers": 2, "device": "cuda", "gpus_per_worker": 4, "gpu": "h100",
              "pue": 1.1, "intensity_kg_per_kwh": 0.43,
              "intensity_source": "codecarbon cloud/impact.csv (gcp us-central1)",
              "region": "gcp:us-central1", "price_usd_per_gpu_hour": 2.5,
              "tokens_planned": tokens_planned, "max_steps": planned_steps, "seq_len": 2048,
              "batch_tokens": batch}
    store.create_run("1b", config, run_id=run_id, status="running", plan_id=plan_id)
    store.update_run(run_id, started_at=start)
    step_s = 5.0  # 2M-token batches at 44% MFU on 8 H100s (model/presets.py flops_per_token)
    store.add_steps(run_id, [{"step": s, "tokens": s * batch, "loss": 8.0 * math.exp(-s / 60) + 2.5,
                              "tokens_per_s": batch / step_s, "mfu": 0.44,
                              "time": start + timedelta(seconds=s * step_s)}
                             for s in range(1, steps + 1)])
    duration = steps * step_s
    samples = []
    for i in range(1, int(duration // 10) + 1):
        t = start + timedelta(seconds=10 * i)
        for node in ("node-a", "node-b"):
            for g in range(4):
                w = 610.0 + 10 * g
                samples.append({"node": node, "device": f"gpu:GPU-{node}-{g}", "time": t,
                                "window_s": 10.0, "joules": 10.0 * w, "watts": w, "source": "nvml"})
            samples.append({"node": node, "device": "cpu", "time": t, "window_s": 10.0,
                            "joules": 10.0 * 95.0, "watts": 95.0, "source": "rapl"})
            samples.append({"node": node, "device": "ram", "time": t, "window_s": 10.0,
                            "joules": 10.0 * 12.0, "watts": 12.0, "source": "estimate"})
    store.add_energy(run_id, samples)
    store.update_run(run_id, status="budget-stopped", ended_at=start + timedelta(seconds=duration))
    return run_id


def estimated_run(store: Store, run_id: str = "small-est", start: datetime = T0 + timedelta(hours=4)) -> str:
    """A CPU run where codecarbon could read no counter: every sample is an estimate."""
    config = {"preset": "small", "workers": 1, "device": "cpu", "gpus_per_worker": 0, "gpu": None,
              "pue": 1.58, "intensity_kg_per_kwh": 0.381, "intensity_source": "codecarbon (DEU)",
              "region": "DEU", "price_usd_per_gpu_hour": None, "tokens_planned": 50 * 8192,
              "max_steps": 50, "seq_len": 512, "batch_tokens": 8192}
    store.create_run("small", config, run_id=run_id, status="running")
    store.update_run(run_id, started_at=start)
    store.add_steps(run_id, [{"step": s, "tokens": s * 8192, "loss": 7.0 - 0.05 * s,
                              "tokens_per_s": 4000.0, "mfu": None,
                              "time": start + timedelta(seconds=2 * s)} for s in range(1, 51)])
    store.add_energy(run_id, [{"node": "node-a", "device": d, "time": start + timedelta(seconds=20 * i),
                               "window_s": 20.0, "joules": 20.0 * w, "watts": w, "source": "estimate"}
                              for i in range(1, 6) for d, w in (("cpu", 42.5), ("ram", 5.0))])
    store.update_run(run_id, status="completed", ended_at=start + timedelta(seconds=100))
    return run_id


def fill(store: Store) -> list[str]:
    return [cpu_run(store), gpu_run(store), estimated_run(store)]
