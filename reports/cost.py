"""`report cost`: GPU-hours x price per GPU-hour, per run and in total, price assumption shown."""

from __future__ import annotations

from planners import footprint as fp
from planners.errors import BadInput
from orchestrator.store import Store
from reports.carbon import Overrides, make_filters, plans_of, run_row, totals_of
from reports.query import select_runs


def price_for(row: dict, config: dict, price: float | None) -> tuple[float | None, str]:
    """--price, else the run's config, else the GPU catalogue's default for its GPU."""
    if price is not None:
        return price, "--price"
    configured = config.get("price_usd_per_gpu_hour")
    if configured is not None:
        try:
            return float(configured), "run config (price_usd_per_gpu_hour)"
        except (TypeError, ValueError):
            pass
    from planners.hardware import get_gpu

    if config.get("gpu"):
        try:
            gpu = get_gpu(config["gpu"])
            return gpu.price_usd_per_hour, f"catalogue default for {gpu.label} (planners/hardware.py)"
        except BadInput:
            pass
    if row["gpu_hours"] == 0:
        return None, "CPU-only run: no GPU-hours to price"
    return None, "no price known for this GPU: give --price"


def cost_report(store: Store, *, run_ids: list[str] | None = None, since: str | None = None,
                preset: str | None = None, price: float | None = None) -> dict:
    if price is not None and not price >= 0:
        raise BadInput(f"--price must be >= 0 $/GPU-hour, got {price}")
    runs = select_runs(store, make_filters(store, run_ids, since, preset))
    rows = []
    plans = plans_of(store, runs)
    for d in runs:
        c = run_row(store, d, Overrides(), plans)
        p, source = price_for(c, dict(d.run.config or {}), price)
        cost = fp.cost_usd(c["gpu_hours"], p) if p is not None else (0.0 if c["gpu_hours"] == 0 else None)
        rows.append({k: c[k] for k in ("id", "name", "model", "preset", "status", "device", "gpu",
                                       "workers", "gpus_per_worker", "duration_s", "gpu_hours",
                                       "device_hours", "tokens")}
                    | {"price_usd_per_gpu_hour": p, "price_source": source, "cost_usd": cost,
                       "cost_usd_per_million_tokens":
                           cost / (c["tokens"] / 1e6) if cost is not None and c["tokens"] else None})
    totals = totals_of(rows, keys=("duration_s", "gpu_hours", "device_hours", "tokens", "cost_usd"))
    totals["runs_without_price"] = sum(1 for r in rows if r["cost_usd"] is None)
    return {"runs": rows, "totals": totals, "reference": [],
            "methodology": {
                "formula": "cost_usd = GPU-hours x price_usd_per_gpu_hour (planners/footprint.py)",
                "gpu_hours": "workers x GPUs per worker x duration (started_at..ended_at less "
                             "carbon-aware pauses); 0 on CPU-only runs",
                "price": "--price if given, else the run's configured price, else the catalogue "
                         "default for its GPU (planners/hardware.py: H100 $2.00, A100-80GB $1.50, "
                         "A100-40GB $1.10 per GPU-hour); prices move, so override them",
                "price_override_usd_per_gpu_hour": price}}
