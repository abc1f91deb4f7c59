"""The GPU catalogue: dense bf16 peak, board power, memory, and default prices.

Peaks and TDPs: vendor data sheets (../shared/reference/hardware-and-carbon.md). Prices move;
the defaults are those of the inference-aware paper's released code (H100 $2.00, A100-80GB
$1.50, A100-40GB $1.10 per GPU-hour) and every one can be overridden with --price.
"""

from __future__ import annotations

from dataclasses import dataclass

from planners.errors import BadInput


@dataclass(frozen=True)
class GPU:
    name: str
    peak_flops: float  # dense bf16 FLOP/s
    tdp_w: float
    memory_gb: float
    price_usd_per_hour: float
    label: str

    @property
    def memory_bytes(self) -> float:
        return self.memory_gb * 1e9


GPUS: dict[str, GPU] = {g.name: g for g in [
    GPU("a100-40gb", 312e12, 400, 40, 1.10, "A100 SXM 40GB"),
    GPU("a100-80gb", 312e12, 400, 80, 1.50, "A100 SXM 80GB"),
    GPU("a100-pcie-80gb", 312e12, 300, 80, 1.50, "A100 PCIe 80GB"),
    GPU("h100", 989e12, 700, 80, 2.00, "H100 SXM 80GB"),
    GPU("h100-pcie", 756e12, 350, 80, 2.00, "H100 PCIe 80GB"),
    GPU("h200", 989e12, 700, 141, 2.50, "H200 SXM 141GB"),
]}
_ALIASES = {"a100": "a100-80gb", "h100-sxm": "h100", "h100-80gb": "h100", "h200-sxm": "h200"}

# LLaMA's Table 15 convention: every GPU-hour at 400 W (A100-80GB).
LLAMA_GPU = "a100-80gb"


def get_gpu(name: str) -> GPU:
    key = _ALIASES.get(str(name).strip().lower(), str(name).strip().lower())
    if key not in GPUS:
        raise BadInput(f"unknown GPU {name!r}; known GPUs: {', '.join(GPUS)}")
    return GPUS[key]


def gpu_for_device_name(device_name: str) -> tuple[GPU, bool]:
    """The catalogue entry for a GPU as NVML names it ("NVIDIA A100-SXM4-80GB", "NVIDIA H100
    80GB HBM3", "NVIDIA H100 PCIe", "NVIDIA H200"): (gpu, True) when the name is one we know,
    else (the A100-80GB figures, False) so the caller can warn which figures it used."""
    n = str(device_name).upper().replace("_", " ")
    if "H200" in n:
        return GPUS["h200"], True
    if "H100" in n:
        if "PCIE" in n:
            return GPUS["h100-pcie"], True
        if "HBM3" in n or "SXM" in n:
            return GPUS["h100"], True
    if "A100" in n:
        if "40GB" in n:
            return GPUS["a100-40gb"], "PCIE" not in n
        if "80GB" in n:
            return (GPUS["a100-pcie-80gb"] if "PCIE" in n else GPUS["a100-80gb"]), True
    return GPUS[LLAMA_GPU], False
