"""Carbon signals: a grid's intensity over time, read from files (never the network).

A `Signal` is a sorted series of non-overlapping intervals (start, end, kg CO2eq per kWh) in UTC,
possibly with gaps between them (time we know nothing about). Sources:

  - static averages from codecarbon's bundled data (`static_signal("DEU")`, via planners/grid.py);
  - files, format detected from content:
      Electricity Maps  JSON  {"history"|"forecast"|"data": [{"datetime", "carbonIntensity"}]}, g/kWh
      WattTime          JSON  {"data": [{"point_time", "value"}], "meta": {"units": ...}}, lbs/MWh
      UK National Grid  JSON  {"data": [{"from", "to", "intensity": {"forecast", "actual"}}]}, g/kWh
      plain CSV               header `time,zone,g_per_kwh` (or kg_per_kwh / lbs_per_mwh)

Decisions where the feeds are silent:
  - Times carrying a zone offset are converted to UTC; times without one are read as UTC and
    counted (`naive_times`), so the report can say so.
  - A malformed row (missing or non-numeric value, value outside 0..5000 g/kWh, unreadable time,
    repeated or overlapping time) is skipped and counted with its reason. A file in which no row
    is usable is refused.
  - Point feeds (Electricity Maps, WattTime, CSV) give the start of each interval; it lasts the
    feed's resolution (the median spacing of its points). A missing point is bridged by holding
    the last value for at most `max_hold_s` past that resolution (default 1 h); a longer silence
    is a gap. The UK feed gives from/to; a hole of at most `max_hold_s` between two intervals is
    bridged the same way. Windows that cross a gap are refused by the scheduler (not guessed).
"""

from __future__ import annotations

import bisect
import csv
import json
import math
import statistics
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import NamedTuple

from planners.errors import BadInput
from planners.grid import LBS_PER_MWH_TO_G_PER_KWH, lookup

DEFAULT_MAX_HOLD_S = 3600.0
MAX_G_PER_KWH = 5000.0  # same bound as planners.footprint.check_intensity (5 kg/kWh)
_FAR_PAST = datetime(1970, 1, 1, tzinfo=timezone.utc)
_FAR_FUTURE = datetime(2200, 1, 1, tzinfo=timezone.utc)


class Interval(NamedTuple):
    start: datetime
    end: datetime
    kg_per_kwh: float


@dataclass(frozen=True)
class Signal:
    """Sorted, non-overlapping intervals of grid intensity (UTC), with what reading them cost."""

    intervals: tuple[Interval, ...]
    source: str  # "electricitymaps", "watttime", "uk-national-grid", "csv", "static"
    zone: str | None = None
    path: str | None = None
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> rows skipped
    naive_times: int = 0  # rows whose time had no zone and was read as UTC
    bridged: int = 0  # missing points bridged by holding the last value
    max_hold_s: float = DEFAULT_MAX_HOLD_S

    def __post_init__(self):
        if not self.intervals:
            raise BadInput(f"carbon signal {self.path or self.source!r} holds no usable interval")
        # Parallel float arrays (POSIX seconds) for the arithmetic.
        object.__setattr__(self, "_t0", [i.start.timestamp() for i in self.intervals])
        object.__setattr__(self, "_t1", [i.end.timestamp() for i in self.intervals])
        object.__setattr__(self, "_kg", [i.kg_per_kwh for i in self.intervals])
        # Running integrals at each interval's start: kg/kWh x seconds, and seconds covered.
        cum_kg, cum_s, a, b = [0.0], [0.0], 0.0, 0.0
        for t0, t1, kg in zip(self._t0, self._t1, self._kg):
            a, b = a + kg * (t1 - t0), b + (t1 - t0)
            cum_kg.append(a)
            cum_s.append(b)
        object.__setattr__(self, "_cum_kg", cum_kg)
        object.__setattr__(self, "_cum_s", cum_s)

    @property
    def start(self) -> datetime:
        return self.intervals[0].start

    @property
    def end(self) -> datetime:
        return self.intervals[-1].end

    @property
    def gaps(self) -> list[tuple[datetime, datetime]]:
        return [(a.end, b.start) for a, b in zip(self.intervals, self.intervals[1:])
                if b.start > a.end]

    def intensity_at(self, t: datetime) -> float | None:
        """kg CO2eq/kWh at `t`, or None in a gap or outside the signal."""
        x = _ts(t)
        i = bisect.bisect_right(self._t0, x) - 1
        if i >= 0 and x < self._t1[i]:
            return self._kg[i]
        return None

    def integral(self, x: float) -> tuple[float, float]:
        """(integral of kg/kWh dt, seconds covered) from the signal's start to `x` (POSIX s)."""
        i = bisect.bisect_right(self._t0, x) - 1
        if i < 0:
            return 0.0, 0.0
        part = max(0.0, min(x, self._t1[i]) - self._t0[i])
        return self._cum_kg[i] + self._kg[i] * part, self._cum_s[i] + part

    def index_at(self, x: float) -> int:
        """Index of the first interval ending after `x` (len(intervals) if none)."""
        return bisect.bisect_right(self._t1, x)

    def pieces(self, a: float, b: float) -> list[tuple[float, float, float]]:
        """(start_s, end_s, kg_per_kwh) of the intervals clipped to [a, b), in order."""
        i = max(bisect.bisect_right(self._t0, a) - 1, 0)
        out = []
        while i < len(self._t0) and self._t0[i] < b:
            lo, hi = max(a, self._t0[i]), min(b, self._t1[i])
            if hi > lo:
                out.append((lo, hi, self._kg[i]))
            i += 1
        return out

    def _same(self, a: float, b: float) -> int | None:
        """The interval holding both ends of [a, b) (exact arithmetic there), else None."""
        i = bisect.bisect_right(self._t0, a) - 1
        return i if i >= 0 and i == bisect.bisect_left(self._t0, b) - 1 else None

    def covered(self, a: float, b: float) -> bool:
        """True when every instant of [a, b) has a value."""
        i = self._same(a, b)
        if i is not None:
            return b <= self._t1[i] + 1e-6
        return self.integral(b)[1] - self.integral(a)[1] >= (b - a) - 1e-6

    def kg_seconds(self, a: float, b: float) -> float:
        """Integral of kg/kWh over [a, b) in seconds (gaps count zero)."""
        i = self._same(a, b)
        if i is not None:
            return self._kg[i] * max(0.0, min(b, self._t1[i]) - a)
        return self.integral(b)[0] - self.integral(a)[0]

    def boundaries(self) -> list[float]:
        return sorted(set(self._t0) | set(self._t1))

    def describe(self) -> dict:
        """What was read and what was assumed, for reports and --json."""
        static = self.source == "static"  # one value for all time: no start or end to show
        return {"source": self.source, "zone": self.zone, "path": self.path,
                "start": None if static else iso(self.start),
                "end": None if static else iso(self.end), "intervals": len(self.intervals),
                "skipped_rows": dict(self.skipped), "naive_times_read_as_utc": self.naive_times,
                "bridged_points": self.bridged, "max_hold_s": self.max_hold_s,
                "gaps": [[iso(a), iso(b)] for a, b in self.gaps]}


def iso(t: datetime | None) -> str | None:
    if t is None:
        return None
    return t.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _ts(t: datetime) -> float:
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.timestamp()


def from_ts(x: float) -> datetime:
    return datetime.fromtimestamp(round(x, 3), tz=timezone.utc)


def parse_time(text: str) -> tuple[datetime, bool]:
    """ISO 8601 -> (UTC datetime, whether it had no zone). Raises ValueError."""
    t = datetime.fromisoformat(str(text).strip())
    if t.tzinfo is None:
        return t.replace(tzinfo=timezone.utc), True
    return t.astimezone(timezone.utc), False


def static_signal(region: str) -> Signal:
    """A constant signal at the region's yearly average (codecarbon's bundled data)."""
    it = lookup(region)  # BadInput for an unknown region
    return Signal((Interval(_FAR_PAST, _FAR_FUTURE, it.kg_per_kwh),), source="static",
                  zone=it.region, path=it.source, max_hold_s=0.0)


# --- reading files ---------------------------------------------------------------------------

class _Reader:
    """Collects rows as (start, end|None, g_per_kwh) and counts what it skips."""

    def __init__(self):
        self.rows: list[tuple[datetime, datetime | None, float]] = []
        self.skipped: Counter[str] = Counter()
        self.naive = 0
        self.zones: set[str] = set()

    def add(self, start, value, end=None, scale: float = 1.0) -> None:
        try:
            t0, naive0 = parse_time(start)
            t1, naive1 = parse_time(end) if end is not None else (None, False)
        except (TypeError, ValueError):
            self.skipped["unreadable time"] += 1
            return
        try:
            g = float(value) * scale
        except (TypeError, ValueError):
            self.skipped["missing or non-numeric value"] += 1
            return
        if not math.isfinite(g) or not 0 <= g <= MAX_G_PER_KWH:
            self.skipped[f"value outside 0..{MAX_G_PER_KWH:g} g/kWh"] += 1
            return
        if t1 is not None and t1 <= t0:
            self.skipped["end not after start"] += 1
            return
        self.naive += naive0 or naive1
        self.rows.append((t0, t1, g))


def load_signal(path: str | Path, *, zone: str | None = None,
                max_hold_s: float = DEFAULT_MAX_HOLD_S) -> Signal:
    """Read a forecast/history file in any supported format (detected from its content)."""
    p = Path(path)
    if not p.is_file():
        raise BadInput(f"forecast file {str(path)!r} does not exist; give a JSON (Electricity "
                       "Maps, WattTime, UK National Grid) or CSV (time,zone,g_per_kwh) file")
    if max_hold_s < 0:
        raise BadInput(f"--max-hold must be >= 0, got {max_hold_s}")
    text = p.read_text(encoding="utf-8-sig", errors="replace")
    if not text.strip():
        raise BadInput(f"forecast file {str(path)!r} is empty")
    r = _Reader()
    stripped = text.lstrip()
    if stripped[0] in "[{":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise BadInput(f"forecast file {str(path)!r} is not valid JSON ({e.msg} at line "
                           f"{e.lineno})") from None
        source, file_zone = _read_json(doc, r, str(path))
    else:
        source, file_zone = "csv", None
        _read_csv(text, r, str(path), zone)
    if source == "csv":
        if len(r.zones) > 1 and zone is None:
            raise BadInput(f"forecast file {str(path)!r} holds several zones "
                           f"({', '.join(sorted(r.zones))}); choose one with --zone")
        file_zone = zone or (next(iter(r.zones)) if r.zones else None)
    if not r.rows:
        reasons = ", ".join(f"{n} {k}" for k, n in r.skipped.items()) or "no rows"
        raise BadInput(f"forecast file {str(path)!r} has no usable row ({reasons})")
    intervals, bridged = _to_intervals(r, max_hold_s)
    return Signal(tuple(intervals), source=source, zone=file_zone, path=str(path),
                  skipped=dict(r.skipped), naive_times=r.naive, bridged=bridged,
                  max_hold_s=max_hold_s)


def _read_json(doc, r: _Reader, path: str) -> tuple[str, str | None]:
    formats = "Electricity Maps (carbonIntensity, datetime), WattTime (point_time, value) or UK " \
              "National Grid (from, to, intensity.forecast)"
    zone = None
    if isinstance(doc, dict):
        meta = doc.get("meta") if isinstance(doc.get("meta"), dict) else {}
        zone = doc.get("zone") or meta.get("region")
        for key in ("history", "forecast", "data"):
            if isinstance(doc.get(key), list):
                rows = doc[key]
                break
        else:
            raise BadInput(f"forecast file {path!r} is in no known format; expected {formats}")
    elif isinstance(doc, list):
        rows = doc
    else:
        raise BadInput(f"forecast file {path!r} is in no known format; expected {formats}")
    # UK regional responses nest one more level: data: [{regionid, data: [...]}]
    if rows and all(isinstance(x, dict) and isinstance(x.get("data"), list) for x in rows):
        rows = [y for x in rows for y in x["data"]]
    dicts = [x for x in rows if isinstance(x, dict)]
    if not dicts:
        raise BadInput(f"forecast file {path!r} holds no rows; expected {formats}")
    keys = Counter(k for x in dicts for k in x)
    r.skipped["not an object"] += len(rows) - len(dicts)
    if not r.skipped["not an object"]:
        del r.skipped["not an object"]
    if keys["carbonIntensity"] and keys["datetime"]:
        _check_units(doc, path, _G_UNITS, "gCO2eq/kWh (Electricity Maps)")
        for x in dicts:
            r.add(x.get("datetime"), x.get("carbonIntensity"))
        return "electricitymaps", zone
    if keys["point_time"] and keys["value"]:
        _check_units(doc, path, _LBS_UNITS, "lbs_co2_per_mwh (WattTime)")
        for x in dicts:
            r.add(x.get("point_time"), x.get("value"), scale=LBS_PER_MWH_TO_G_PER_KWH)
        return "watttime", zone or next((x.get("ba") for x in dicts if x.get("ba")), None)
    if keys["from"] and keys["intensity"]:
        _check_units(doc, path, _G_UNITS, "gCO2/kWh (UK National Grid)")
        for x in dicts:
            i = x.get("intensity") if isinstance(x.get("intensity"), dict) else {}
            value = i.get("forecast") if i.get("forecast") is not None else i.get("actual")
            r.add(x.get("from"), value, end=x.get("to"))
        return "uk-national-grid", zone or "GB"
    raise BadInput(f"forecast file {path!r} is in no known format (its rows have keys "
                   f"{', '.join(sorted(keys)[:6])}); expected {formats}")


_G_UNITS = {"gco2eq/kwh", "g/kwh", "gco2/kwh", "gco2eq_per_kwh", "g_co2_per_kwh"}
_LBS_UNITS = {"lbs_co2_per_mwh", "lbs/mwh", "lb/mwh"}


def _check_units(doc, path: str, accepted: set[str], expected: str) -> None:
    """Refuse a file that declares units other than its format's (WattTime's `meta.units`,
    a `unit` field): we would otherwise convert the wrong way."""
    if not isinstance(doc, dict):
        return
    meta = doc.get("meta") if isinstance(doc.get("meta"), dict) else {}
    declared = meta.get("units") or doc.get("unit") or doc.get("units")
    if declared is not None and str(declared).strip().lower() not in accepted:
        raise BadInput(f"forecast file {path!r} declares units {declared!r}; this format is "
                       f"read in {expected}")


_CSV_UNITS = {"g_per_kwh": 1.0, "kg_per_kwh": 1000.0, "lbs_per_mwh": LBS_PER_MWH_TO_G_PER_KWH}


def _read_csv(text: str, r: _Reader, path: str, zone: str | None) -> None:
    reader = csv.reader(text.splitlines())
    header = [h.strip().lower() for h in next(reader, [])]
    if len(header) < 2 or "time" not in header:
        raise BadInput(f"forecast file {path!r} is in no known format; a CSV needs the header "
                       "time,zone,g_per_kwh")
    value_cols = [h for h in header if h not in ("time", "zone", "end")]
    if len(value_cols) != 1 or value_cols[0] not in _CSV_UNITS:
        raise BadInput(f"forecast file {path!r}: unknown units column "
                       f"{','.join(value_cols) or '(none)'!r}; use one of "
                       f"{', '.join(_CSV_UNITS)} (header time,zone,g_per_kwh)")
    col, scale = header.index(value_cols[0]), _CSV_UNITS[value_cols[0]]
    it, iz = header.index("time"), header.index("zone") if "zone" in header else None
    for row in reader:
        if not row or all(not c.strip() for c in row) or row[0].lstrip().startswith("#"):
            continue
        if len(row) != len(header):
            r.skipped["wrong number of columns"] += 1
            continue
        z = row[iz].strip() if iz is not None else None
        if z:
            r.zones.add(z)
        if zone is not None and z is not None and z.lower() != zone.lower():
            continue
        r.add(row[it], row[col], scale=scale)
    if zone is not None and not r.rows and not r.skipped:
        raise BadInput(f"forecast file {path!r} has no rows for zone {zone!r}; it holds "
                       f"{', '.join(sorted(r.zones)) or 'none'}")


def _to_intervals(r: _Reader, max_hold_s: float) -> tuple[list[Interval], int]:
    rows = sorted(r.rows, key=lambda x: x[0])
    # Repeated start times: keep the first, count the others.
    uniq = []
    for row in rows:
        if uniq and row[0] == uniq[-1][0]:
            r.skipped["repeated time"] += 1
            continue
        uniq.append(row)
    hold = timedelta(seconds=max_hold_s)
    out: list[Interval] = []
    bridged = 0
    if all(end is not None for _, end, _ in uniq):  # from/to feed
        for t0, t1, g in uniq:
            if out and t0 < out[-1].end:
                r.skipped["overlapping interval"] += 1
                continue
            if out and out[-1].end < t0 <= out[-1].end + hold:
                out[-1] = out[-1]._replace(end=t0)
                bridged += 1
            out.append(Interval(t0, t1, g / 1000.0))
        return out, bridged
    starts = [t0 for t0, _, _ in uniq]
    spacings = [(b - a).total_seconds() for a, b in zip(starts, starts[1:])]
    step = timedelta(seconds=statistics.median(spacings) if spacings else 3600.0)
    for k, (t0, _, g) in enumerate(uniq):
        nxt = starts[k + 1] if k + 1 < len(starts) else None
        if nxt is not None and nxt - t0 <= step + hold:
            end = nxt
            bridged += nxt - t0 > step
        else:
            end = t0 + step
        out.append(Interval(t0, end, g / 1000.0))
    return out, bridged
