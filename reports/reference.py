"""LLaMA's Table 15 (Touvron et al. 2023, §6), recomputed from its GPU-hours with our footprint
code, and normalised per token so a small run and a 65B run can be compared."""

from __future__ import annotations

from planners import footprint as fp
from planners.hardware import LLAMA_GPU, get_gpu
from model.presets import PRESETS

# (model, GPU-hours, paper's "total power" MWh, paper's tCO2eq, tokens trained, where tokens come from)
TABLE_15 = [
    ("OPT-175B", 809_472, 356, 137, 180e9,
     "OPT paper (Zhang et al. 2022, arXiv 2205.01068): 180B tokens"),
    ("BLOOM-175B", 1_082_880, 475, 183, 366e9,
     "BLOOM paper (BigScience 2022, arXiv 2211.05100): 366B tokens"),
    ("LLaMA-7B", 82_432, 36, 14, PRESETS["7b"].train_tokens, "LLaMA Table 2 (model/presets.py 7b)"),
    ("LLaMA-13B", 135_168, 59, 23, PRESETS["13b"].train_tokens,
     "LLaMA Table 2 (model/presets.py 13b)"),
    ("LLaMA-33B", 530_432, 233, 90, PRESETS["33b"].train_tokens,
     "LLaMA Table 2 (model/presets.py 33b)"),
    ("LLaMA-65B", 1_022_362, 449, 173, PRESETS["65b"].train_tokens,
     "LLaMA Table 2 (model/presets.py 65b)"),
]

ASSUMPTIONS = {
    "gpu": get_gpu(LLAMA_GPU).label,
    "gpu_power_w": fp.LLAMA_GPU_POWER_W,
    "pue": fp.LLAMA_PUE,
    "intensity_kg_per_kwh": fp.LLAMA_INTENSITY_KG_PER_KWH,
    "source": "LLaMA (Touvron et al. 2023, arXiv 2302.13971) §6 and Table 15: "
              "MWh = GPU-hours x 400 W x PUE 1.1 / 1e6; tCO2eq = MWh x 0.385 (US average) for "
              "every model, whatever its real data centre",
}


def llama_reference() -> list[dict]:
    rows = []
    for model, gpu_hours, paper_mwh, paper_t, tokens, tokens_source in TABLE_15:
        f = fp.footprint_of_gpu_hours(gpu_hours)
        rows.append({
            "model": model,
            "gpu": ASSUMPTIONS["gpu"],
            "gpu_power_w": fp.LLAMA_GPU_POWER_W,
            "gpu_hours": float(gpu_hours),
            "pue": f.pue,
            "intensity_kg_per_kwh": f.intensity_kg_per_kwh,
            "energy_kwh": f.it_energy_kwh,
            "facility_energy_kwh": f.facility_energy_kwh,
            "energy_mwh": f.energy_mwh,
            "tco2eq": f.tco2eq,
            "paper_energy_mwh": float(paper_mwh),
            "paper_tco2eq": float(paper_t),
            "tokens": float(tokens),
            "tokens_source": tokens_source,
            **fp.per_million_tokens(fp.Energy.from_kwh(f.facility_energy_kwh), f.tco2eq, tokens),
        })
    return rows
