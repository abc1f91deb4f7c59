"""The GPU catalogue: dense peak per number format, board power, memory, and default prices.

Peaks and TDPs: vendor data sheets (../shared/reference/hardware-and-carbon.md). Dense (no 2:4
sparsity) tensor-core peaks: A100 bf16 312, int8 624 TOPS, no FP8 units; H100 SXM bf16 989,
fp8 and int8 1979; H100 PCIe 756 / 1513; H200 as H100 SXM; A100 PCIe 40GB 250 W (NVIDIA data
sheets). Prices move;
the defaults are those of the inference-aware paper's released code (H100 $2.00, A100-80GB
$1.50, A100-40GB $1.10 per GPU-hour) and every one can be overridden with --price.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from planners.errors import BadInput


@dataclass(frozen=True)
class GPU:
    name: str
    peak_flops: float  # dense bf16 FLOP/s
    tdp_w: float
    memory_gb: float
    price_usd_per_hour: float
    label: str
    peak_flops_8bit: dict = field(default_factory=dict)  # {"fp8": ..., "int8": ...} dense
    compute_dtype: str = "bf16"  # what `peak_flops` is the peak of (a CPU: fp32)
    power_note: str = ""  # where tdp_w comes from, when not a data sheet
    peak_note: str = ""  # where peak_flops comes from, when not a data sheet

    @property
    def memory_bytes(self) -> float:
        return self.memory_gb * 1e9

    def peak(self, dtype: str, what: str = "--inference-dtype") -> float:
        """Dense peak FLOP/s (or OP/s for int8) in `dtype`; BadInput if the GPU has no such unit."""
        key = str(dtype).strip().lower()
        if key == self.compute_dtype:
            return self.peak_flops
        if key not in DTYPES:
            raise BadInput(f"{what} {dtype!r} is not a number format tally prices; use one of "
                           f"{', '.join(DTYPES)}")
        if key == "bf16" and self.compute_dtype == "bf16":
            return self.peak_flops
        if self.compute_dtype != "bf16":
            raise BadInput(f"{what} {key}: {self.label} is priced in {self.compute_dtype} only")
        if key not in self.peak_flops_8bit:
            raise BadInput(f"{what} {key}: {self.label} has no {key.upper()} tensor cores; "
                           f"it supports {', '.join(['bf16', *self.peak_flops_8bit])}")
        return self.peak_flops_8bit[key]


DTYPES = ("bf16", "fp8", "int8")


GPUS: dict[str, GPU] = {g.name: g for g in [
    GPU("a100-40gb", 312e12, 400, 40, 1.10, "A100 SXM 40GB", {"int8": 624e12}),
    GPU("a100-80gb", 312e12, 400, 80, 1.50, "A100 SXM 80GB", {"int8": 624e12}),
    GPU("a100-pcie-80gb", 312e12, 300, 80, 1.50, "A100 PCIe 80GB", {"int8": 624e12}),
    GPU("a100-pcie-40gb", 312e12, 250, 40, 1.10, "A100 PCIe 40GB", {"int8": 624e12}),
    GPU("h100", 989e12, 700, 80, 2.00, "H100 SXM 80GB", {"fp8": 1979e12, "int8": 1979e12}),
    GPU("h100-pcie", 756e12, 350, 80, 2.00, "H100 PCIe 80GB", {"fp8": 1513e12, "int8": 1513e12}),
    GPU("h200", 989e12, 700, 141, 2.50, "H200 SXM 141GB", {"fp8": 1979e12, "int8": 1979e12}),
]}
_ALIASES = {"a100": "a100-80gb", "h100-sxm": "h100", "h100-80gb": "h100", "h200-sxm": "h200"}

# LLaMA's Table 15 convention: every GPU-hour at 400 W (A100-80GB).
LLAMA_GPU = "a100-80gb"


def get_gpu(name: "str | GPU") -> GPU:
    """A catalogue GPU by name, or a device already resolved (this machine's CPU)."""
    if isinstance(name, GPU):
        return name
    key = _ALIASES.get(str(name).strip().lower(), str(name).strip().lower())
    if key == "cpu":
        raise BadInput("--gpu cpu is this machine's CPU, priced from a matmul probe: `cli.py plan` "
                       "resolves it (orchestrator/local_device.py)")
    if key not in GPUS:
        raise BadInput(f"unknown GPU {name!r}; known GPUs: {', '.join(GPUS)}, cpu (this "
                       "machine's CPU, priced from a matmul probe)")
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
            return (GPUS["a100-pcie-40gb"] if "PCIE" in n else GPUS["a100-40gb"]), True
        if "80GB" in n:
            return (GPUS["a100-pcie-80gb"] if "PCIE" in n else GPUS["a100-80gb"]), True
    return GPUS[LLAMA_GPU], False
