"""The suite's own measurements (one entry per fault, replaced each time its test runs) with
the machine they were taken on. A plain `make test` writes them to a file outside the checkout
(so it leaves `git status` clean); `TALLY_RECORD_RELIABILITY=1` (bench/bench_reliability.sh)
merges them into the tracked bench/results/reliability.json."""

from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path

TRACKED = Path(__file__).resolve().parents[2] / "bench" / "results" / "reliability.json"
RESULTS = TRACKED if os.environ.get("TALLY_RECORD_RELIABILITY") == "1" else \
    Path(os.environ.get("TMPDIR", "/tmp")) / "tally-reliability.json"


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


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _load(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def record(fault: str, **figures) -> None:
    """Store `figures` for `fault` (injections, survived, recovery times in seconds, ...)."""
    path = Path(os.environ.get("TALLY_RELIABILITY_RESULTS", RESULTS))
    data = _load(path)
    faults = data.setdefault("faults", {})
    faults[fault] = {**figures, "date": _now()}
    _write(path, data)


def record_attempt(fault: str, survived: bool, **figures) -> None:
    """Append one attempt at `fault` (survived or not) to its entry's `attempts`, kept across
    runs, with the tally `injections` / `survived`: for faults whose outcome can vary."""
    path = Path(os.environ.get("TALLY_RELIABILITY_RESULTS", RESULTS))
    data = _load(path)
    faults = data.setdefault("faults", {})
    if "attempts" not in faults.get(fault, {}):  # an entry of the older one-shot form
        faults[fault] = {"attempts": []}
    entry = faults[fault]
    attempts = entry["attempts"]
    attempts.append({"survived": survived, **figures, "date": _now()})
    entry.update(injections=len(attempts), survived=sum(a["survived"] for a in attempts),
                 date=_now())
    _write(path, data)


def _write(path: Path, data: dict) -> None:
    data["machine"] = machine()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)
