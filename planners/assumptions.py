"""Every assumption of a run's footprint, resolved once: the GPU (its peak, power, memory and
price), PUE, grid intensity (given, or from a region) and price, each a value with its source.
Used by the launch of `train` and by the prediction it records; pure (no torch, no Ray)."""

from __future__ import annotations

from typing import Any

from planners import footprint as fp
from planners.errors import BadInput
from planners.hardware import GPU, LLAMA_GPU, get_gpu, gpu_for_device_name


# The help of each assumption option, declared once for every command that takes it (`plan`,
# `train`, `report carbon|cost|run`, `schedule`): the same words, the same defaults.
OPTION_HELP = {
    "gpu": "GPU type (a100-40gb, a100-80gb, h100-sxm, h100-pcie, h200, ...; `plan` also takes cpu, "
           "this machine): its peak FLOP/s, memory, power and price. Default: detected from NVML "
           "on the training nodes, else LLaMA's a100-80gb.",
    "gpu_power": "GPU board power in W (default: the GPU's TDP; 400 W for LLaMA's A100).",
    "pue": "Data-centre PUE (default: LLaMA's 1.1).",
    "intensity": "Grid carbon intensity in kg CO2eq/kWh (default: LLaMA's 0.385); not with "
                 "--region.",
    "region": "Grid region whose intensity is used (gcp:europe-west9, FRA, us:iowa); not with "
              "--intensity.",
    "price": "$ per GPU-hour (default: the GPU's catalogue price).",
}


def resolve_gpu(given: str | None, detected: str | None, device: str) -> dict:
    """{"gpu": catalogue name or None (CPU), "gpu_source": where it came from, "gpu_warning":
    a sentence when the figures are a stand-in}. `detected`: NVML's device name on the
    cluster's GPU nodes (None when it has none or cannot tell)."""
    if given:
        return {"gpu": get_gpu(given).name, "gpu_source": "given (--gpu)", "gpu_warning": None}
    if device != "cuda":
        return {"gpu": None, "gpu_source": "none (CPU workers)", "gpu_warning": None}
    if detected:
        gpu, known = gpu_for_device_name(detected)
        if known:
            return {"gpu": gpu.name, "gpu_source": f"detected (NVML: {detected})",
                    "gpu_warning": None}
        return {"gpu": gpu.name, "gpu_source": f"assumed ({detected!r} is not in the catalogue)",
                "gpu_warning": f"GPU {detected!r} is not in tally's catalogue; MFU, memory plan "
                               f"and footprint use {gpu.label} figures ({gpu.peak_flops / 1e12:.0f} "
                               f"TFLOP/s bf16, {gpu.tdp_w:.0f} W, {gpu.memory_gb:.0f} GB); "
                               "give --gpu to choose"}
    gpu = get_gpu(LLAMA_GPU)
    return {"gpu": gpu.name, "gpu_source": "assumed (no GPU detected; LLaMA's A100-80GB)",
            "gpu_warning": None}


def resolve(*, gpu: str | None, detected_gpu: str | None, device: str, pue: float | None,
            intensity_kg_per_kwh: float | None, region: str | None,
            price_usd_per_gpu_hour: float | None) -> dict:
    """The footprint assumptions of a launch, each with its source."""
    from planners.grid import lookup

    if intensity_kg_per_kwh is not None and region:
        raise BadInput("--intensity and --region both set the grid intensity; give one")
    out: dict[str, Any] = resolve_gpu(gpu, detected_gpu, device)
    out["pue"] = fp.check_pue(pue) if pue is not None else fp.LLAMA_PUE
    out["pue_source"] = "given (--pue)" if pue is not None else "assumed: LLaMA's 1.1"
    if intensity_kg_per_kwh is not None:
        out["intensity_kg_per_kwh"] = fp.check_intensity(intensity_kg_per_kwh)
        out["intensity_source"] = "given (--intensity)"
    elif region:
        it = lookup(region)
        out.update(intensity_kg_per_kwh=it.kg_per_kwh, intensity_source=it.source,
                   region=it.region)
    else:
        out.update(intensity_kg_per_kwh=fp.LLAMA_INTENSITY_KG_PER_KWH,
                   intensity_source="assumed: LLaMA convention (US average, 0.385 kg/kWh)")
    if price_usd_per_gpu_hour is not None:
        out["price_usd_per_gpu_hour"] = float(price_usd_per_gpu_hour)
        out["price_source"] = "given (--price)"
    elif out["gpu"]:
        out["price_usd_per_gpu_hour"] = get_gpu(out["gpu"]).price_usd_per_hour
        out["price_source"] = f"catalogue ({out['gpu']})"
    else:
        out["price_usd_per_gpu_hour"] = None
        out["price_source"] = "none (CPU workers)"
    return out


def gpu_of(assumptions: dict) -> GPU | None:
    return get_gpu(assumptions["gpu"]) if assumptions.get("gpu") else None
