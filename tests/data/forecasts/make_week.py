"""Writes de_week_hourly.csv: one week of hourly grid intensity for a German-like variable grid.

Synthetic (no network, no real data): a fossil base that wind and solar push down.
  intensity_g = 540 (all-fossil-ish base)
                - 320 x wind(t)       wind: a front blowing in on day 2-3, calm at the weekend,
                                      interpolated smoothly (cosine) between daily levels
                - 200 x solar(t)      solar: sin bump 08:00-16:00 UTC, scaled per day by cloud cover
                + 35 in the evening peak (16:00-19:00), - 25 at night (00:00-05:00),
                - 30 on Saturday and Sunday (lower demand)
clamped to 120..600 g/kWh and rounded to whole grams. The levels are chosen so the week spans
about what Germany's grid shows (roughly 150 to 550 g/kWh). Deterministic: rerun to regenerate.
"""

import math
from datetime import datetime, timedelta, timezone
from pathlib import Path

START = datetime(2026, 11, 16, tzinfo=timezone.utc)  # a Monday
WIND = [0.25, 0.55, 0.95, 0.85, 0.45, 0.10, 0.20, 0.30]  # at 00:00 of each day (+1 to close)
SUN = [0.6, 0.3, 0.2, 0.5, 0.9, 1.0, 0.7]  # clear-sky fraction per day


def intensity_g(h: int) -> int:
    day, hour = divmod(h, 24)
    x = hour / 24
    wind = WIND[day] + (WIND[day + 1] - WIND[day]) * (1 - math.cos(math.pi * x)) / 2
    solar = SUN[day] * max(0.0, math.sin(math.pi * (hour - 8) / 8)) if 8 <= hour <= 16 else 0.0
    g = 540 - 320 * wind - 200 * solar
    g += 35 if 16 <= hour <= 19 else 0
    g -= 25 if hour <= 5 else 0
    g -= 30 if day >= 5 else 0
    return round(min(600, max(120, g)))


def write(path: Path, start: datetime = START) -> None:
    lines = ["time,zone,g_per_kwh"]
    for h in range(7 * 24):
        t = start + timedelta(hours=h)
        lines.append(f"{t.isoformat().replace('+00:00', 'Z')},DE,{intensity_g(h)}")
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    # No arguments: regenerate the fixture. `make_week.py OUT START`: the same week shifted to
    # START (ISO time), e.g. to demo the queue against the present.
    import sys

    if len(sys.argv) == 3:
        write(Path(sys.argv[1]), datetime.fromisoformat(sys.argv[2]).astimezone(timezone.utc))
    else:
        write(Path(__file__).with_name("de_week_hourly.csv"))
