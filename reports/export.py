"""Files from a report: a flat CSV of its rows, and codecarbon's emissions.csv columns so
dashboards that read codecarbon output can read our runs."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from pathlib import Path

from planners.errors import BadInput


def _writable(path: str, flag: str) -> Path:
    p = Path(path).expanduser()
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir() or not parent.is_dir() or not os.access(parent, os.W_OK) \
            or (p.exists() and not os.access(p, os.W_OK)):
        raise BadInput(f"{flag} {path!r} cannot be written; give a file path in an existing, "
                       "writable directory")
    return p


def check_paths(**paths: str | None) -> None:
    """Refuse unwritable output paths before any work: check_paths(csv=..., emissions_csv=...)."""
    for flag, path in paths.items():
        if path is not None:
            _writable(path, "--" + flag.replace("_", "-"))


def _open(p: Path, path: str, flag: str):
    try:
        return open(p, "w", newline="", encoding="utf-8")
    except OSError as e:
        raise BadInput(f"{flag} {path!r} cannot be written ({e.strerror or e}); give a file path "
                       "in an existing, writable directory") from None


def write_csv(path: str, rows: list[dict], flag: str = "--csv") -> str:
    """One line per row; nested values (dicts, lists) as JSON text."""
    p = _writable(path, flag)
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    with _open(p, path, flag) as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in r.items()})
    return str(p)


def emissions_columns() -> list[str]:
    """codecarbon's emissions.csv header: the fields of its EmissionsData, in order."""
    from codecarbon.output_methods.emissions_data import EmissionsData

    return [f.name for f in dataclasses.fields(EmissionsData)]


def emissions_row(r: dict) -> dict:
    """A carbon-report row in codecarbon's units: seconds, kg CO2eq, W and kWh, power and energy
    multiplied by PUE as codecarbon does (its `pue` column says by how much)."""
    from importlib.metadata import version

    pue = r["pue"]
    seconds = r["duration_s"]
    by_dev = dict(r.get("energy_kwh_by_device") or {})
    if not by_dev and r["energy_kwh"]:
        by_dev = {"gpu": r["energy_kwh"]}  # a GPU-hours x TDP estimate
    kwh = {k: by_dev.get(k, 0.0) * pue for k in ("cpu", "gpu", "ram")}
    region = r.get("region") or ""
    provider, _, cloud_region = region.partition(":") if ":" in region else ("", "", "")
    iso = region.upper() if len(region) == 3 and region.isalpha() else ""
    kg = r["tco2eq"] * 1000.0
    return {
        "timestamp": r["ended_at"], "project_name": "tally", "run_id": r["id"],
        "experiment_id": r["preset"], "duration": seconds, "emissions": kg,
        "emissions_rate": kg / seconds if seconds else 0.0,
        "cpu_power": kwh["cpu"] * 3.6e6 / seconds if seconds else 0.0,
        "gpu_power": kwh["gpu"] * 3.6e6 / seconds if seconds else 0.0,
        "ram_power": kwh["ram"] * 3.6e6 / seconds if seconds else 0.0,
        "cpu_energy": kwh["cpu"], "gpu_energy": kwh["gpu"], "ram_energy": kwh["ram"],
        "energy_consumed": r["facility_energy_kwh"], "water_consumed": 0.0,
        "country_name": "", "country_iso_code": iso,
        "region": "" if provider else region, "cloud_provider": provider,
        "cloud_region": cloud_region, "os": "", "python_version": "",
        "codecarbon_version": f"tally export, codecarbon {version('codecarbon')} columns",
        "cpu_count": "", "cpu_model": "", "gpu_count": r["workers"] * r["gpus_per_worker"],
        "gpu_model": r.get("gpu") or "", "longitude": "", "latitude": "", "ram_total_size": "",
        "tracking_mode": "machine", "cpu_utilization_percent": "", "gpu_utilization_percent": "",
        "ram_utilization_percent": "", "ram_used_gb": "", "on_cloud": "Y" if provider else "N",
        "pue": pue, "wue": 0.0,
    }


def write_emissions_csv(path: str, rows: list[dict]) -> str:
    p = _writable(path, "--emissions-csv")
    cols = emissions_columns()
    with _open(p, path, "--emissions-csv") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            e = emissions_row(r)
            w.writerow({c: e.get(c, "") for c in cols})
    return str(p)
