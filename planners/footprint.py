"""The ONE place where FLOPs -> GPU-hours -> kWh -> MWh -> tCO2eq -> $ happen.

Used by `plan` (predicted figures) and by reports (measured figures), so the two are computed
the same way. LLaMA's §6 / Table 15 convention is the default:
    Wh = GPU-hours x GPU power (400 W) x PUE (1.1);  tCO2eq = MWh x 0.385.
Energy is kept in joules inside and shown in kWh / MWh.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from planners.errors import BadInput

LLAMA_PUE = 1.1
LLAMA_INTENSITY_KG_PER_KWH = 0.385  # US national average, used by LLaMA for every model
LLAMA_GPU_POWER_W = 400.0
J_PER_KWH = 3.6e6


@dataclass(frozen=True)
class Energy:
    """An amount of energy. Construct with `Energy.from_kwh(...)` etc.; never a bare float."""

    joules: float

    @classmethod
    def from_kwh(cls, kwh: float) -> "Energy":
        return cls(kwh * J_PER_KWH)

    @classmethod
    def from_watt_hours(cls, wh: float) -> "Energy":
        return cls(wh * 3600.0)

    @property
    def kwh(self) -> float:
        return self.joules / J_PER_KWH

    @property
    def mwh(self) -> float:
        return self.kwh / 1000.0

    def __add__(self, other: "Energy") -> "Energy":
        return Energy(self.joules + other.joules)


def check_pue(pue: float) -> float:
    if not (pue >= 1.0) or pue > 10:
        raise BadInput(f"PUE must be between 1.0 and 10 (LLaMA used 1.1), got {pue}")
    return float(pue)


def check_intensity(kg_per_kwh: float) -> float:
    if not (kg_per_kwh >= 0) or kg_per_kwh > 5:
        raise BadInput(f"carbon intensity must be between 0 and 5 kg CO2eq/kWh "
                       f"(LLaMA used 0.385), got {kg_per_kwh}")
    return float(kg_per_kwh)


def gpu_seconds_for_flops(flops: float, peak_flops: float, mfu: float) -> float:
    """Time on one GPU running at `mfu` of its peak."""
    if not 0 < mfu <= 1:
        raise BadInput(f"MFU must be in (0, 1], got {mfu}")
    return flops / (peak_flops * mfu)


def gpu_hours_for_flops(flops: float, peak_flops: float, mfu: float) -> float:
    return gpu_seconds_for_flops(flops, peak_flops, mfu) / 3600.0


def gpu_hours_for_tokens(tokens: float, tokens_per_s_per_gpu: float) -> float:
    if not tokens_per_s_per_gpu > 0:
        raise BadInput(f"throughput must be > 0 tokens/s/GPU, got {tokens_per_s_per_gpu}")
    return tokens / tokens_per_s_per_gpu / 3600.0


def days_on(gpu_hours: float, gpus: int) -> float:
    """Wall-clock days for `gpu_hours` spread over `gpus` GPUs working in parallel."""
    if not gpus >= 1:
        raise BadInput(f"number of GPUs must be >= 1, got {gpus}")
    return gpu_hours / gpus / 24.0


def usd_per_flop(peak_flops: float, mfu: float, price_usd_per_gpu_hour: float) -> float:
    """Dollars per FLOP on a GPU at `mfu` of its peak, rented at `price_usd_per_gpu_hour`."""
    return cost_usd(gpu_hours_for_flops(1.0, peak_flops, mfu), price_usd_per_gpu_hour)


def it_energy_for_gpu_hours(gpu_hours: float, gpu_power_w: float) -> Energy:
    """IT energy of `gpu_hours` at a constant board power (LLaMA: 400 W)."""
    return Energy.from_watt_hours(gpu_hours * gpu_power_w)


def facility_energy(it: Energy, pue: float) -> Energy:
    return Energy(it.joules * check_pue(pue))


def tco2eq(facility: Energy, intensity_kg_per_kwh: float) -> float:
    return facility.kwh * check_intensity(intensity_kg_per_kwh) / 1000.0


def cost_usd(gpu_hours: float, price_usd_per_gpu_hour: float) -> float:
    if price_usd_per_gpu_hour < 0:
        raise BadInput(f"price must be >= 0 $/GPU-hour, got {price_usd_per_gpu_hour}")
    return gpu_hours * price_usd_per_gpu_hour


@dataclass(frozen=True)
class Footprint:
    gpu_hours: float | None
    it_energy_kwh: float
    facility_energy_kwh: float
    energy_mwh: float  # facility energy, as LLaMA's "total power" column
    tco2eq: float
    cost_usd: float | None
    pue: float
    intensity_kg_per_kwh: float

    def as_dict(self) -> dict:
        return asdict(self)


def footprint(it: Energy, *, pue: float = LLAMA_PUE,
              intensity_kg_per_kwh: float = LLAMA_INTENSITY_KG_PER_KWH,
              gpu_hours: float | None = None,
              price_usd_per_gpu_hour: float | None = None) -> Footprint:
    """IT energy (measured or predicted) -> facility energy -> MWh -> tCO2eq (and $)."""
    fac = facility_energy(it, pue)
    cost = None
    if gpu_hours is not None and price_usd_per_gpu_hour is not None:
        cost = cost_usd(gpu_hours, price_usd_per_gpu_hour)
    return Footprint(gpu_hours=gpu_hours, it_energy_kwh=it.kwh, facility_energy_kwh=fac.kwh,
                     energy_mwh=fac.mwh, tco2eq=tco2eq(fac, intensity_kg_per_kwh), cost_usd=cost,
                     pue=pue, intensity_kg_per_kwh=intensity_kg_per_kwh)


def footprint_of_gpu_hours(gpu_hours: float, *, gpu_power_w: float = LLAMA_GPU_POWER_W,
                           pue: float = LLAMA_PUE,
                           intensity_kg_per_kwh: float = LLAMA_INTENSITY_KG_PER_KWH,
                           price_usd_per_gpu_hour: float | None = None) -> Footprint:
    """LLaMA's Table 15 formula: GPU-hours x power x PUE, then x intensity."""
    return footprint(it_energy_for_gpu_hours(gpu_hours, gpu_power_w), pue=pue,
                     intensity_kg_per_kwh=intensity_kg_per_kwh, gpu_hours=gpu_hours,
                     price_usd_per_gpu_hour=price_usd_per_gpu_hour)


def project_total(energy_so_far: Energy, tokens_so_far: float, tokens_planned: float) -> Energy:
    """carbontracker-style live projection: energy per token so far x tokens planned.
    (Anthony et al. 2020 project from the first epochs; we project from the first steps.)"""
    if not tokens_so_far > 0:
        raise BadInput(f"tokens so far must be > 0 to project a run's energy, got {tokens_so_far}")
    if not tokens_planned >= 0:
        raise BadInput(f"tokens planned must be >= 0, got {tokens_planned}")
    if energy_so_far.joules < 0:
        raise BadInput(f"energy so far must be >= 0 J, got {energy_so_far.joules}")
    return Energy(energy_so_far.joules / tokens_so_far * tokens_planned)


# -- measured runs (reports) ------------------------------------------------------------------
def device_hours(workers: int, devices_per_worker: int, duration_s: float) -> float:
    """Devices held x wall time: workers x GPUs per worker x duration (GPU-hours on GPU runs)."""
    return max(0, int(workers)) * max(0, int(devices_per_worker)) * max(0.0, duration_s) / 3600.0


def average_power_w(energy: Energy, duration_s: float) -> float:
    return energy.joules / duration_s if duration_s > 0 else 0.0


def per_million_tokens(facility: Energy, tco2eq_: float, tokens: float) -> dict:
    """Normalise by tokens trained, so a tiny run and a 65B run compare: facility kWh and
    g CO2eq per million tokens (None without tokens)."""
    if not tokens or tokens <= 0:
        return {"kwh_per_million_tokens": None, "gco2eq_per_million_tokens": None}
    millions = tokens / 1e6
    return {"kwh_per_million_tokens": facility.kwh / millions,
            "gco2eq_per_million_tokens": tco2eq_ * 1e6 / millions}
