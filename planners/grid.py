"""Grid carbon intensity from codecarbon's bundled data (read lazily, no network).

Accepted region names:
  - cloud regions: `gcp:europe-west9` (or bare `europe-west9`), from codecarbon/data/cloud/impact.csv
  - countries: ISO-3 codes (`FRA`, `USA`), from private_infra/global_energy_mix.json
  - US states: `us:iowa` or `US-IA`, from private_infra/2023/usa_emissions.json (lbs/MWh)
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from planners.errors import BadInput

LBS_PER_MWH_TO_G_PER_KWH = 0.45359237


@dataclass(frozen=True)
class Intensity:
    region: str
    kg_per_kwh: float
    source: str  # where the figure came from, shown beside it


def _data_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("codecarbon")
    if spec is None or spec.origin is None:
        raise BadInput("--region needs codecarbon's bundled data (pip install codecarbon); "
                       "or give --intensity in kg CO2eq/kWh")
    return Path(spec.origin).parent / "data"


@lru_cache(maxsize=1)
def regions() -> dict[str, Intensity]:
    """Every region name we accept, lower-case, -> its intensity."""
    d = _data_dir()
    out: dict[str, Intensity] = {}
    with open(d / "cloud" / "impact.csv", encoding="utf-8-sig") as f:
        for row in csv.DictReader(f):
            name = f"{row['provider']}:{row['region']}".lower()
            out[name] = Intensity(name, float(row["impact"]) / 1000.0,
                                  f"codecarbon cloud/impact.csv ({row['provider']} {row['region']})")
    mix = json.loads((d / "private_infra" / "global_energy_mix.json").read_text())
    for iso, row in mix.items():
        if row.get("carbon_intensity") is not None:
            out[iso.lower()] = Intensity(iso.upper(), float(row["carbon_intensity"]) / 1000.0,
                                         f"codecarbon global_energy_mix.json ({row.get('year')})")
    usa = json.loads((d / "private_infra" / "2023" / "usa_emissions.json").read_text())
    for state, row in usa.items():
        if state.startswith("_"):
            continue
        g = float(row["emissions"]) * LBS_PER_MWH_TO_G_PER_KWH
        it = Intensity(f"us:{state}", g / 1000.0, "codecarbon usa_emissions.json (2023, lbs/MWh)")
        out[f"us:{state}".lower()] = it
        out[f"us-{row['regionCode']}".lower()] = it
    return out


def lookup(region: str) -> Intensity:
    key = str(region).strip().lower()
    table = regions()
    if key in table:
        return table[key]
    for provider in ("gcp",):
        if f"{provider}:{key}" in table:
            return table[f"{provider}:{key}"]
    examples = "gcp:europe-west9, gcp:us-central1, FRA, DEU, USA, us:iowa, US-CA"
    raise BadInput(f"unknown region {region!r}; use a cloud region, an ISO-3 country code or a "
                   f"US state, e.g. {examples}")
