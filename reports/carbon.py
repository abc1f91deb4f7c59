"""`report carbon`: per run and in total, duration, GPU-hours, IT and facility energy, grid
intensity, tCO2eq, how the energy was obtained, and the plan it was launched from.

Every conversion goes through planners/footprint.py, the same code the planner predicts with.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from model.presets import UnknownPreset, get_preset
from planners import footprint as fp
from planners import grid
from planners.errors import BadInput
from planners.hardware import get_gpu
from orchestrator.store import Store, _iso
from reports.query import MEASURED_SOURCES, Filters, RunData, known_presets, parse_since, select_runs
from reports.reference import ASSUMPTIONS as LLAMA_ASSUMPTIONS, llama_reference

SUMMED = ("duration_s", "gpu_hours", "device_hours", "tokens", "energy_kwh", "measured_energy_kwh",
          "estimated_energy_kwh", "facility_energy_kwh", "energy_mwh", "tco2eq")


@dataclass(frozen=True)
class Overrides:
    """What the user typed on the command line; None = take the run's own assumption."""
    pue: float | None = None
    intensity_kg_per_kwh: float | None = None
    region: str | None = None

    def checked(self) -> "Overrides":
        if self.intensity_kg_per_kwh is not None and self.region is not None:
            raise BadInput("give --intensity (kg CO2eq/kWh) or --region (looked up), not both")
        if self.pue is not None:
            fp.check_pue(self.pue)
        if self.intensity_kg_per_kwh is not None:
            fp.check_intensity(self.intensity_kg_per_kwh)
        if self.region is not None:
            grid.lookup(self.region)
        return self


def make_filters(store: Store, run_ids: list[str] | None = None, since: str | None = None,
                 preset: str | None = None) -> Filters:
    if preset is not None:
        try:
            preset = get_preset(preset).name
        except UnknownPreset:
            if preset not in known_presets(store):
                raise BadInput(f"unknown preset {preset!r}; use a preset a run was trained with "
                               f"(e.g. tiny, small, 1b, 7b)") from None
    return Filters(run_ids=tuple(run_ids or ()), since=parse_since(since), preset=preset)


# -- assumptions ------------------------------------------------------------------------------
def assumptions_for(config: dict, ov: Overrides) -> dict:
    """PUE and grid intensity for one run, each with where it came from."""
    if ov.pue is not None:
        pue, pue_source = ov.pue, "--pue"
    else:
        pue, pue_source = _valid(config.get("pue"), fp.check_pue), "run config (pue)"
        if pue is None:
            pue, pue_source = fp.LLAMA_PUE, "LLaMA default (run config has no valid pue)"
    region = config.get("region")
    if ov.intensity_kg_per_kwh is not None:
        kg, source = ov.intensity_kg_per_kwh, "--intensity"
    elif ov.region is not None:
        it = grid.lookup(ov.region)
        kg, source, region = it.kg_per_kwh, f"--region {it.region}: {it.source}", it.region
    else:
        kg = _valid(config.get("intensity_kg_per_kwh"), fp.check_intensity)
        source = f"run config: {config.get('intensity_source') or 'no source recorded'}"
        if kg is None and region:
            try:
                it = grid.lookup(region)
                kg, source = it.kg_per_kwh, f"run region {it.region}: {it.source}"
            except BadInput:
                kg = None
        if kg is None:
            kg, source = fp.LLAMA_INTENSITY_KG_PER_KWH, \
                "LLaMA default, US average (run config has no intensity)"
    return {"pue": pue, "pue_source": pue_source, "intensity_kg_per_kwh": kg,
            "intensity_source": source, "region": region}


def _valid(value, check) -> float | None:  # noqa: ANN001
    try:
        return check(float(value)) if value is not None else None
    except (BadInput, TypeError, ValueError):
        return None


# -- one run ----------------------------------------------------------------------------------
_KIND_LABEL = {"gpu": "GPU", "cpu": "CPU", "ram": "RAM"}


def energy_method(d: RunData) -> tuple[str, str, fp.Energy, fp.Energy]:
    """('measured' | 'estimated' | 'mixed' | 'none', a line naming sources per device kind,
    measured energy, estimated energy). Any source not read off the hardware counts as an
    estimate, so no estimate passes for a measurement."""
    measured = fp.Energy(sum(j for (src, _), j in d.joules.items() if src in MEASURED_SOURCES))
    estimated = fp.Energy(sum(j for (src, _), j in d.joules.items() if src not in MEASURED_SOURCES))
    parts = {"measured": [], "estimated": []}
    for (src, kind), _ in sorted(d.joules.items()):
        which = "measured" if src in MEASURED_SOURCES else "estimated"
        label = f"{_KIND_LABEL.get(kind, kind)} {src}"
        if which == "estimated" and src == "estimate":
            label += " (codecarbon)"
        parts[which].append(label)
    detail = "; ".join(f"{k}: {', '.join(v)}" for k, v in parts.items() if v)
    if measured.joules > 0 and estimated.joules > 0:
        kind = "mixed"
    elif parts["measured"] and not parts["estimated"]:
        kind = "measured"
    elif parts["estimated"]:
        kind = "estimated"
    else:
        kind, detail = "none", "no energy samples"
    return kind, detail, measured, estimated


def duration(d: RunData) -> tuple[float, str, datetime | None, datetime | None]:
    """Seconds the run held its devices: started_at..ended_at less carbon-aware pauses.
    Without timestamps, the first..last step or energy record stands in (and says so)."""
    r = d.run
    start = r.started_at or min(filter(None, (d.first_step_time, d.first_energy_time)), default=None)
    end = r.ended_at or max(filter(None, (d.last_step_time, d.last_energy_time)), default=None)
    basis = "started_at..ended_at"
    if r.started_at is None or r.ended_at is None:
        basis = f"{'started_at' if r.started_at else 'first record'}.." \
                f"{'ended_at' if r.ended_at else 'last record'}"
    if start is None or end is None or end < start:
        return 0.0, "no timestamps", start, end
    wall = (end - start).total_seconds()
    paused = float(r.paused_s or 0.0)
    if paused:
        basis += f" less {paused:.0f} s paused"
    return max(0.0, wall - paused), basis, start, end


def run_row(store: Store, d: RunData, ov: Overrides, plans: dict | None = None) -> dict:
    """One run's carbon row. `plans` (id -> Plan), when given, saves a query per run."""
    r, cfg = d.run, dict(d.run.config or {})
    seconds, basis, start, end = duration(d)
    workers = _int(cfg.get("workers"), 1)
    gpus_per_worker = _int(cfg.get("gpus_per_worker"), 0)
    device = cfg.get("device") or ("cuda" if gpus_per_worker > 0 else "cpu")
    on_gpu = device == "cuda" and gpus_per_worker > 0
    gpu_hours = fp.device_hours(workers, gpus_per_worker, seconds) if on_gpu else 0.0
    dev_hours = fp.device_hours(workers, max(gpus_per_worker, 1), seconds)
    a = assumptions_for(cfg, ov)
    method, detail, measured, estimated = energy_method(d)
    it = measured + estimated
    gpu = _gpu(cfg.get("gpu"))
    if method == "none" and on_gpu and gpu is not None and gpu_hours > 0:
        it = fp.it_energy_for_gpu_hours(gpu_hours, gpu.tdp_w)
        estimated = it
        method, detail = "estimated", f"estimated: GPU-hours x {gpu.label} TDP {gpu.tdp_w:.0f} W " \
                                      "(no energy samples)"
    f = fp.footprint(it, pue=a["pue"], intensity_kg_per_kwh=a["intensity_kg_per_kwh"],
                     gpu_hours=gpu_hours)
    by_kind: dict[str, float] = {}
    by_source: dict[str, float] = {}
    for (src, kind), j in d.joules.items():
        by_kind[kind] = by_kind.get(kind, 0.0) + fp.Energy(j).kwh
        by_source[src] = by_source.get(src, 0.0) + fp.Energy(j).kwh
    row = {
        "id": r.id, "name": r.name, "model": r.preset, "preset": r.preset, "status": r.status,
        "started_at": _iso(start), "ended_at": _iso(end), "duration_s": seconds,
        "duration_basis": basis, "device": device, "gpu": gpu.label if gpu else cfg.get("gpu"),
        "gpu_name": gpu.name if gpu else cfg.get("gpu"),
        "workers": workers, "gpus_per_worker": gpus_per_worker,
        "gpu_hours": gpu_hours, "device_hours": dev_hours,
        "steps": d.steps, "tokens": int(d.tokens or 0), "tokens_planned": cfg.get("tokens_planned"),
        "final_loss": d.final_loss,
        "energy_method": method, "energy_sources_detail": detail,
        "energy_kwh": f.it_energy_kwh, "measured_energy_kwh": measured.kwh,
        "estimated_energy_kwh": estimated.kwh,
        "measured_share": measured.joules / it.joules if it.joules > 0 else None,
        "energy_kwh_by_device": by_kind, "energy_kwh_by_source": by_source,
        "average_power_w": fp.average_power_w(it, seconds),
        "pue": a["pue"], "pue_source": a["pue_source"],
        "facility_energy_kwh": f.facility_energy_kwh, "energy_mwh": f.energy_mwh,
        "intensity_kg_per_kwh": a["intensity_kg_per_kwh"],
        "intensity_source": a["intensity_source"], "region": a["region"],
        "tco2eq": f.tco2eq,
        **fp.per_million_tokens(fp.Energy.from_kwh(f.facility_energy_kwh), f.tco2eq, d.tokens),
        "plan_id": r.plan_id,
    }
    row["plan"] = plan_vs_actual(store, row, plans) if r.plan_id else None
    return row


def _int(value, default: int) -> int:  # noqa: ANN001
    try:
        return int(value) if value is not None else default
    except (TypeError, ValueError):
        return default


def _gpu(name):  # noqa: ANN001
    try:
        return get_gpu(name) if name else None
    except BadInput:
        return None


def plans_of(store: Store, runs: list[RunData]) -> dict:
    from sqlalchemy import select

    from orchestrator.store import Plan

    ids = {d.run.plan_id for d in runs if d.run.plan_id}
    if not ids:
        return {}
    with store.read() as s:
        return {p.id: p for p in s.scalars(select(Plan).where(Plan.id.in_(ids)))}


def plan_vs_actual(store: Store, row: dict, plans: dict | None = None) -> dict | None:
    """The plan option the run was launched from against what it used. A run that stopped
    before its planned tokens is compared with the plan scaled to the tokens it trained."""
    plan = (plans if plans is not None else plans_of_one(store, row["plan_id"])).get(row["plan_id"])
    if plan is None:
        return {"plan_id": row["plan_id"], "note": "plan no longer in the store"}
    outputs = plan.outputs or {}
    options = outputs.get("options") or []
    if not options:
        return {"plan_id": plan.id, "note": "plan has no options"}
    chosen = outputs.get("chosen")
    option = next((o for o in options if o.get("label") == chosen), options[0])
    planned_tokens = option.get("tokens") or row.get("tokens_planned")
    scale, note = 1.0, "compared with the whole plan"
    if planned_tokens and 0 < row["tokens"] < float(planned_tokens):
        scale = row["tokens"] / float(planned_tokens)
        note = (f"run stopped at {row['tokens']:,} of {float(planned_tokens):,.0f} planned tokens: "
                f"plan scaled by {scale:.4g}")
    out = {"plan_id": plan.id, "option": option.get("label"), "planned_tokens": planned_tokens,
           "scale": scale, "note": note}
    differs = hardware_difference(outputs, row)
    if differs:  # a ratio across different hardware measures the hardware, not the plan
        out.update(comparable=False, differs=differs,
                   note=f"not compared: {differs}; plan this run's hardware (e.g. `plan --gpu "
                        f"{'cpu' if row['device'] == 'cpu' else 'NAME'}`) to hold it to a plan")
        return out
    out["comparable"] = True
    on_cpu = row["device"] == "cpu"
    gpus = float((outputs.get("assumptions") or {}).get("gpus", {}).get("value") or 1)
    # training only: serving is not part of a training run
    compared = [("energy_mwh", row["energy_mwh"]), ("tco2eq", row["tco2eq"])]
    compared.append(("hours", row["duration_s"] / 3600.0) if on_cpu
                    else ("gpu_hours", row["gpu_hours"]))
    for key, measured in compared:
        if key == "hours":
            predicted = option.get("train_gpu_hours")
            predicted = float(predicted) / gpus if predicted is not None else None
        else:
            predicted = option.get(f"train_{key}", option.get(key))
        predicted = float(predicted) * scale if predicted is not None else None
        out[f"predicted_{key}"] = predicted
        out[f"measured_{key}"] = measured
        out[f"ratio_{key}"] = measured / predicted if predicted else None
    return out


def hardware_difference(plan_outputs: dict, row: dict) -> str | None:
    """What differs between the hardware a plan priced and the hardware a run ran on (None when
    they are the same kind: this machine's CPU, or the same GPU model)."""
    a = plan_outputs.get("assumptions") or {}
    if not a.get("gpu"):
        return "the plan does not say which hardware it priced"
    planned = str(a["gpu"].get("value"))
    label = str((a.get("gpu") or {}).get("source") or planned)
    if row["device"] == "cpu":
        if planned == "cpu":
            return None
        return (f"the plan priced {a.get('gpus', {}).get('value', '?')} x {planned} GPUs, the run "
                f"ran on CPU ({row['workers']} worker(s))")
    if planned == "cpu":
        return f"the plan priced a CPU ({label}), the run ran on GPUs ({row.get('gpu') or '?'})"
    run_gpu = _gpu(row.get("gpu_name") or "")
    plan_gpu = _gpu(planned)
    if run_gpu is None or plan_gpu is None or run_gpu.name != plan_gpu.name:
        return f"the plan priced {planned} GPUs, the run ran on {row.get('gpu') or 'unknown GPUs'}"
    return None


def plans_of_one(store: Store, plan_id: str) -> dict:
    try:
        return {plan_id: store.get_plan(plan_id)}
    except BadInput:
        return {}


# -- the report -------------------------------------------------------------------------------
def totals_of(rows: list[dict], keys=SUMMED) -> dict:
    t = {k: sum(float(r.get(k) or 0.0) for r in rows) for k in keys}
    t["runs"] = len(rows)
    if "tokens" in t:
        t["tokens"] = int(t["tokens"])
    if "facility_energy_kwh" in t:
        t.update(fp.per_million_tokens(fp.Energy.from_kwh(t["facility_energy_kwh"]), t["tco2eq"],
                                       t["tokens"]))
    return t


def methodology(ov: Overrides, rows: list[dict], reference: bool) -> dict:
    pues = sorted({(r["pue"], r["pue_source"]) for r in rows})
    intensities = sorted({(r["intensity_kg_per_kwh"], r["intensity_source"]) for r in rows})
    m = {
        "formula": "IT energy kWh = sum of metered joules / 3.6e6; facility energy = IT x PUE; "
                   "MWh = facility kWh / 1000; tCO2eq = facility kWh x intensity kg/kWh / 1000 "
                   "(planners/footprint.py, the same code `plan` predicts with)",
        "gpu_hours": "workers x GPUs per worker x duration (started_at..ended_at less carbon-aware "
                     "pauses); 0 on CPU-only runs, where device_hours counts one device per worker",
        "energy": "measured = NVML energy counter (nvml) or NVML power integrated (nvml-power) on "
                  "GPUs, RAPL counters (rapl) on CPUs; estimated = codecarbon's model from TDP "
                  "and load (estimate), or GPU-hours x TDP when a run has no samples. Each run "
                  "says which.",
        "pue": [{"pue": p, "source": s} for p, s in pues] or
               ({"pue": ov.pue, "source": "--pue"} if ov.pue else []),
        "intensity": [{"intensity_kg_per_kwh": k, "source": s} for k, s in intensities],
        "overrides": {"pue": ov.pue, "intensity_kg_per_kwh": ov.intensity_kg_per_kwh,
                      "region": ov.region},
        "plan_vs_actual": "the plan option the run was launched from (outputs.chosen, else the "
                          "first); scaled by tokens trained / planned tokens when a run stopped "
                          "early; ratio = measured / predicted",
    }
    if reference:
        m["reference"] = dict(LLAMA_ASSUMPTIONS)
    return m


def carbon_report(store: Store, *, run_ids: list[str] | None = None, since: str | None = None,
                  preset: str | None = None, overrides: Overrides = Overrides(),
                  reference: str | None = None) -> dict:
    ov = overrides.checked()
    if reference is not None and reference.strip().lower() != "llama":
        raise BadInput(f"--reference {reference!r} is not known; the one reference is 'llama' "
                       "(LLaMA Table 15)")
    runs = select_runs(store, make_filters(store, run_ids, since, preset))
    plans = plans_of(store, runs)
    rows = [run_row(store, d, ov, plans) for d in runs]
    return {"runs": rows, "totals": totals_of(rows),
            "reference": llama_reference() if reference else [],
            "methodology": methodology(ov, rows, bool(reference))}
