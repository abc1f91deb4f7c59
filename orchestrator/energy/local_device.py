"""This machine's CPU as a device the planner can price (`plan --gpu cpu`).

The peak is what the trainer divides by for MFU on CPU (orchestrator/run/worker.py,
`measure_matmul_peak`: the best fp32 torch.mm FLOP/s over a short probe), here on all of this
process's threads. The power is the model codecarbon meters a CPU run with when RAPL is not
readable (orchestrator/energy/cpu.py): the CPU's TDP from codecarbon's table (or its default per
thread for an unknown model) scaled by 0.1 + 0.9·load³ in machine mode, which is the whole TDP
under a training run's full load, plus codecarbon's RAM estimate for this machine's memory. So a
run metered on this machine and its plan rest on the same numbers.
"""

from __future__ import annotations

import logging
import os

from planners.hardware import GPU

PROBE_SECONDS = 1.0  # as long as the trainer's own start-of-run probe


def cpu_power_w() -> tuple[float, float, str]:
    """(CPU watts at full load, RAM watts, CPU model) as codecarbon 3.3 estimates them."""
    from codecarbon.core.cpu import TDP
    from codecarbon.external.ram import RAM

    log = logging.getLogger("codecarbon")
    level = log.level
    log.setLevel(logging.ERROR)  # its "unknown CPU, default per thread" warning: stated below
    try:
        tdp = TDP()
        ram_w = float(RAM(tracking_mode="machine").total_power().W)
    finally:
        log.setLevel(level)
    return float(tdp.tdp), ram_w, str(tdp.model)


def cpu_device(probe_seconds: float = PROBE_SECONDS) -> GPU:
    import psutil

    from orchestrator.run.worker import measure_matmul_peak

    peak = measure_matmul_peak(probe_seconds)
    cpu_w, ram_w, model = cpu_power_w()
    cores = os.cpu_count() or 1
    return GPU("cpu", peak, cpu_w + ram_w, psutil.virtual_memory().total / 1e9, 0.0,
               f"{model} CPU ({cores} threads, this machine)", compute_dtype="fp32",
               power_note=f"codecarbon's CPU model at full load ({cpu_w:.0f} W for {model}) + "
                          f"its RAM estimate ({ram_w:.0f} W)",
               peak_note=f"fp32 torch.mm probe on {cores} threads, {probe_seconds:g} s, as the "
                         "trainer measures its MFU peak")


def plan_here(store, **kwargs):  # noqa: ANN001 (orchestrator.store.Store)
    """`plan` with `gpu="cpu"` resolved to this machine's CPU (probe + codecarbon's power)."""
    from planners.plan import plan_and_store

    if str(kwargs.get("gpu") or "").strip().lower() == "cpu":
        kwargs["gpu"] = cpu_device()
    if str(kwargs.get("inference_gpu") or "").strip().lower() == "cpu":
        kwargs["inference_gpu"] = kwargs["gpu"] if isinstance(kwargs["gpu"], GPU) else cpu_device()
    return plan_and_store(store, **kwargs)
