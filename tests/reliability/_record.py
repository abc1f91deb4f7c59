"""The suite's own measurements, merged into bench/results/reliability.json (one entry per
fault, replaced each time its test runs) with the machine they were taken on."""

from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results" / "reliability.json"


def machine() -> dict:
    import torch

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__}


def record(fault: str, **figures) -> None:
    """Store `figures` for `fault` (injections, survived, recovery times in seconds, ...)."""
    path = Path(os.environ.get("TALLY_RELIABILITY_RESULTS", RESULTS))
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    data["machine"] = machine()
    faults = data.setdefault("faults", {})
    faults[fault] = {**figures, "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)
