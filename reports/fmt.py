"""Small number and duration formats shared by the terminal renderings."""

from __future__ import annotations

from typing import Any


def si(x: float | None, unit: str = "") -> str:
    if x is None:
        return ""
    for div, s in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{s}{unit}"
    return f"{x:.3g}{unit}"


def num(x: Any, fmt: str) -> str:
    return "" if x is None else format(x, fmt)


def pct(x: float) -> str:
    return "" if abs(x) < 0.05 else f"{x:+.1f}%"


def dur(seconds: float | None) -> str:
    """1h 05m, 12m 30s, 45s; blank for none."""
    if not seconds:
        return ""
    s = round(seconds)
    h, m = divmod(s // 60, 60)
    return f"{h}h {m:02d}m" if h else (f"{m}m {s % 60:02d}s" if m else f"{s}s")


def secs(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"
