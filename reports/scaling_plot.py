"""A PNG of a fit: the IsoFLOP curves (final validation loss against model size, one colour per
compute budget), the fitted law along each budget, and its compute-optimal size marked."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from planners.errors import BadInput
from planners.fitting import compute_optimal, predict


def _budget_groups(rows: list[dict]) -> dict[float, list[dict]]:
    """Group runs by their nominal budget (sweep runs) or 6ND to two significant figures."""
    groups: dict[float, list[dict]] = {}
    for r in rows:
        c = float(r.get("budget_flops") or 6.0 * r["params"] * r["tokens"])
        c = float(f"{c:.2g}")
        groups.setdefault(c, []).append(r)
    return dict(sorted(groups.items()))


def plot_fit(record: dict, path: str | Path) -> Path:
    """Write the PNG for a stored fit record (`orchestrator.fits.load_fit`) to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise BadInput(f"--plot {str(path)!r} must name a .png file")
    if not path.parent.is_dir():
        raise BadInput(f"--plot {str(path)!r}: directory {str(path.parent)!r} does not exist")
    c = record["constants"]
    rows = record["details"].get("residuals") or []
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    groups = _budget_groups(rows)
    colours = plt.cm.viridis(np.linspace(0, 0.85, max(1, len(groups))))
    all_n = [r["params"] for r in rows]
    lo, hi = min(all_n) / 2, max(all_n) * 2
    for colour, (budget, pts) in zip(colours, groups.items()):
        n = np.array([p["params"] for p in pts])
        ax.scatter(n, [p["loss"] for p in pts], color=colour, zorder=3,
                   label=f"C = {budget:.2g} FLOPs")
        grid = np.geomspace(lo, hi, 200)
        ax.plot(grid, predict(c, grid, budget / (6 * grid)), color=colour, lw=1.2)
        n_opt, _ = compute_optimal(c, budget)
        if math.isfinite(n_opt) and lo <= n_opt <= hi:
            ax.scatter([n_opt], [predict(c, n_opt, budget / (6 * n_opt))], marker="*", s=140,
                       color=colour, edgecolor="black", zorder=4)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("parameters N")
    ax.set_ylabel("final validation loss (nats/token)")
    ax.set_title(f"fit {record['name']}: E={c['E']:.3g} A={c['A']:.3g} B={c['B']:.3g} "
                 f"alpha={c['alpha']:.3f} beta={c['beta']:.3f}  (* = compute-optimal)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path
