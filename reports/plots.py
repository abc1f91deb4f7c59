"""Pictures of a run: a PNG through matplotlib's Agg backend, and sparklines for the terminal."""

from __future__ import annotations

import math
import os
from pathlib import Path

from planners.errors import BadInput

BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float | None], width: int = 60) -> str:
    """Values averaged into at most `width` cells, each drawn as one of eight bar heights."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return ""
    n = min(width, len(vals))
    cells = [sum(chunk) / len(chunk) for chunk in
             (vals[i * len(vals) // n:(i + 1) * len(vals) // n] for i in range(n)) if chunk]
    lo, hi = min(cells), max(cells)
    span = hi - lo
    if span <= 1e-9 * max(abs(lo), abs(hi)):
        return BARS[3] * len(cells)  # a flat line, drawn mid-height
    return "".join(BARS[int((c - lo) / span * (len(BARS) - 1))] for c in cells)


def check_plot_path(path: str) -> Path:
    """Refuse, before any work, a plot path that cannot be written."""
    p = Path(path).expanduser()
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise BadInput(f"--plot {path!r} is a directory; give a file name such as run.png")
    if not parent.is_dir():
        raise BadInput(f"--plot {path!r} cannot be written: directory {str(parent)!r} does not "
                       "exist; give a path in an existing directory")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise BadInput(f"--plot {path!r} cannot be written: permission denied; give a writable "
                       "path")
    return p


def write_run_plot(path: str, row: dict, series: dict) -> str:
    """Loss against tokens, tokens/s against step, power by device kind against time; with
    `train --eval-every` scores, zero-shot accuracy against tokens (LLaMA's Figure 2)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    p = check_plot_path(path)
    steps, power, scores = series["steps"], series["power"], series.get("eval_tasks") or {}
    fig = Figure(figsize=(9, 12 if scores else 9), dpi=100, layout="constrained")
    axes = fig.subplots(4 if scores else 3, 1)
    ax1, ax2, ax3 = axes[:3]
    fig.suptitle(f"run {row['id']} ({row['model']}): {row['energy_kwh']:.4g} kWh IT "
                 f"[{row['energy_method']}], {row['tco2eq']:.3g} tCO2eq")
    if steps["step"]:
        ax1.plot(steps["tokens"], steps["loss"], color="tab:blue")
        ax2.plot(steps["step"], steps["tokens_per_s"], color="tab:green")
    ax1.set(xlabel="tokens trained", ylabel="loss", title="training loss")
    ax2.set(xlabel="step", ylabel="tokens/s", title="throughput")
    if power["t_s"]:
        t_min = [t / 60 for t in power["t_s"]]
        for key, color in (("gpu_w", "tab:red"), ("cpu_w", "tab:orange"), ("ram_w", "tab:purple")):
            if any(power[key]):
                ax3.plot(t_min, power[key], label=key[:-2].upper(), color=color)
        ax3.plot(t_min, power["total_w"], label="total", color="black", linewidth=1)
        ax3.legend(loc="upper right")
    ax3.set(xlabel="minutes since first energy sample", ylabel="W", title="power (IT)")
    if scores:
        ax4 = axes[3]
        for task, d in scores.items():
            line, = ax4.plot(d["tokens"], [100 * a for a in d["acc"]], marker="o", label=task)
            ax4.plot(d["tokens"], [100 * a for a in d["acc_norm"]], linestyle="--",
                     color=line.get_color())
        ax4.set(xlabel="tokens trained", ylabel="accuracy %",
                title="zero-shot accuracy (solid acc, dashed acc_norm)")
        ax4.legend(loc="lower right")
    for ax in axes:
        ax.grid(alpha=0.3)
        if not ax.has_data():
            ax.text(0.5, 0.5, "no data recorded", ha="center", va="center", transform=ax.transAxes)
    try:
        fig.savefig(p, format="png")
    except OSError as e:
        raise BadInput(f"--plot {path!r} cannot be written ({e.strerror or e}); give a writable "
                       "path") from None
    return str(p)
