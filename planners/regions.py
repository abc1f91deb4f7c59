"""Where to train: candidate regions ranked by tCO2eq (then dollars) for one job.

Intensity per region is codecarbon's yearly average (planners/grid.py); the conversions are
planners/footprint.py's. `energy_mwh` is facility energy (PUE included), as in the plan.
Pure: no store, no orchestrator (orchestrator/regions.py re-exports these for the scheduler).
"""

from __future__ import annotations

import math

from planners.errors import BadInput
from planners.footprint import Energy, cost_usd, tco2eq
from planners.grid import lookup, regions as all_regions


def rank_regions(energy_mwh: float, gpu_hours: float, regions: list[str] | str,
                 prices: dict[str, float] | None = None,
                 default_price: float | None = None) -> list[dict]:
    """One dict per region, cleanest first (ties: cheaper first), with `rank`, `region`,
    `intensity_kg_per_kwh`, `intensity_source`, `tco2eq`, `price_usd_per_gpu_hour`, `cost_usd`
    and `tco2eq_vs_best` (how many times the best region's emissions).

    `regions`: names accepted by planners.grid.lookup, or "all" (every distinct region in
    codecarbon's data). `prices`: $/GPU-hour per region (keys as given), else `default_price`;
    cost is None when neither is known."""
    if not energy_mwh >= 0 or not gpu_hours >= 0:
        raise BadInput(f"energy and GPU-hours must be >= 0, got {energy_mwh} MWh and "
                       f"{gpu_hours} GPU-hours")
    if isinstance(regions, str):
        if regions.strip().lower() == "all":
            seen = {}
            for it in all_regions().values():
                seen.setdefault(it.region, it)
            names, found = list(seen), list(seen.values())
        else:
            names = [r.strip() for r in regions.split(",") if r.strip()]
            found = [lookup(r) for r in names]
    else:
        names, found = list(regions), [lookup(r) for r in regions]
    if not found:
        raise BadInput("--regions is empty; give e.g. gcp:europe-west9,gcp:us-central1 or all")
    prices = {k.lower(): v for k, v in (prices or {}).items()}
    energy = Energy.from_kwh(energy_mwh * 1000.0)
    rows = []
    for name, it in zip(names, found):
        price = prices.get(name.lower(), prices.get(it.region.lower(), default_price))
        rows.append({"region": it.region, "intensity_kg_per_kwh": it.kg_per_kwh,
                     "intensity_source": it.source, "energy_mwh": energy_mwh,
                     "tco2eq": tco2eq(energy, it.kg_per_kwh),
                     "price_usd_per_gpu_hour": price,
                     "cost_usd": None if price is None else cost_usd(gpu_hours, price)})
    rows.sort(key=lambda r: (r["tco2eq"], r["cost_usd"] if r["cost_usd"] is not None
                             else float("inf"), r["region"]))
    best = rows[0]["tco2eq"]
    for k, r in enumerate(rows, 1):
        r["rank"] = k
        r["tco2eq_vs_best"] = r["tco2eq"] / best if best > 0 else None
    return rows


def parse_region_prices(text: str | None) -> dict[str, float]:
    """'gcp:us-central1=2.1,FRA=3.0' -> {canonical region: $/GPU-hour}. Each key must be a region
    planners.grid.lookup knows (so a typo fails instead of silently taking the default price)."""
    if text is None or not text.strip():
        return {}
    out: dict[str, float] = {}
    for part in text.split(","):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise BadInput(f"cannot read --region-prices {text!r}; give REGION=USD_PER_GPU_HOUR "
                           "pairs separated by commas, e.g. gcp:us-central1=2.1,FRA=3.0")
        try:
            price = float(value)
        except ValueError:
            price = math.nan
        if not (price >= 0 and math.isfinite(price)):
            raise BadInput(f"--region-prices: price {value.strip()!r} for {key.strip()!r} must be "
                           "a number >= 0 ($ per GPU-hour)")
        out[lookup(key.strip()).region] = price
    return out
