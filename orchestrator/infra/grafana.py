"""tally's Grafana dashboard (grafana/tally.json: power, energy and CO2eq by run and node; loss,
tokens/s, MFU), provisioned beside Ray's own dashboards.

Ray's dashboard writes Grafana's provisioning under `<session>/metrics/grafana/` when it starts
(it deletes and rewrites that folder): a `Ray` provider whose folder is
`<session>/metrics/grafana/dashboards` (or RAY_METRICS_GRAFANA_DASHBOARD_OUTPUT_DIR), which
Grafana started with `--config <session>/metrics/grafana/grafana.ini` reads. A dashboard copied
there appears in Grafana's Ray folder beside Ray's. `dashboard` does it for the head it starts;
the cluster files run `python -m orchestrator.infra.grafana` after `ray start --head`.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

DASHBOARD = Path(__file__).parent / "grafana" / "tally.json"
TARGET_NAME = "tally_grafana_dashboard.json"
RAY_DEFAULT = "default_grafana_dashboard.json"  # what Ray writes last-but-not-least there
OUTPUT_DIR_ENV = "RAY_METRICS_GRAFANA_DASHBOARD_OUTPUT_DIR"  # Ray's own setting


def dashboards_dir(session_dir: str | Path) -> Path:
    return Path(os.environ.get(OUTPUT_DIR_ENV) or Path(session_dir) / "metrics" / "grafana" /
                "dashboards")


def provision(session_dir: str | Path, timeout_s: float = 60.0) -> Path | None:
    """Copy tally's dashboard beside Ray's once Ray has written its own (so Ray's rewrite of
    the folder cannot remove ours); the path, or None when Ray wrote none in `timeout_s`
    (a head without its dashboard)."""
    folder = dashboards_dir(session_dir)
    deadline = time.monotonic() + timeout_s
    while not (folder / RAY_DEFAULT).exists():
        if time.monotonic() > deadline:
            return None
        time.sleep(0.25)
    target = folder / TARGET_NAME
    tmp = target.with_suffix(".tmp")
    shutil.copyfile(DASHBOARD, tmp)
    os.replace(tmp, target)  # Grafana never reads half a file
    return target


def main(argv: list[str]) -> int:
    """`python -m orchestrator.infra.grafana [SESSION_DIR]` (default /tmp/ray/session_latest)."""
    session = argv[0] if argv else "/tmp/ray/session_latest"
    path = provision(session)
    if path is None:
        print(f"tally: no Ray Grafana dashboards under {dashboards_dir(session)} "
              "(a head started without its dashboard?)", file=sys.stderr)
        return 1
    print(f"tally: Grafana dashboard {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
