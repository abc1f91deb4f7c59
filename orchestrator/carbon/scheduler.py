"""Carbon-aware timing: when to start, when to pause, and what each policy would emit.

Everything here is a pure function of a `Signal` (orchestrator/carbon/signals.py) and times in UTC.
The job draws power at a constant rate while it runs (optionally shaped by `power_profile`), so
its emissions are  sum over running time of  power x intensity(t):  MWh x kg/kWh = tCO2eq.

Policies (each returns a `Schedule`: intervals of running, tCO2eq, finish time):
  now        start at `earliest`, run straight through (the baseline for savings);
  delay      start at the lowest-carbon window that still finishes by the deadline (`best_start`);
  suspend    run only in the cleanest stretches before the deadline, pausing otherwise (a
             fractional knapsack over the signal's intervals: exact for constant power);
  threshold  pause while intensity > threshold (and in gaps), resume when it falls below, but
             never pause when the remaining work needs all the time left before the deadline.
Pause/resume costs (checkpoint save + restart) are not modelled here; the driver pauses only at
checkpoints, so real pauses start up to one checkpoint interval late.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple, Sequence

from planners.errors import BadInput
from orchestrator.carbon.signals import Signal, _ts, from_ts, iso

POLICIES = ("now", "delay", "suspend", "threshold")
_EPS = 1e-6  # seconds


class StartChoice(NamedTuple):
    start: datetime
    tco2eq: float  # expected emissions starting at `start`
    tco2eq_if_now: float | None  # starting at `earliest` (None: that window crosses a gap)


@dataclass(frozen=True)
class Schedule:
    policy: str
    runs: tuple[tuple[datetime, datetime], ...]  # intervals of running, sorted
    tco2eq: float | None  # None when a running interval crosses a gap in the signal
    earliest: datetime

    @property
    def start(self) -> datetime:
        return self.runs[0][0]

    @property
    def finish(self) -> datetime:
        return self.runs[-1][1]

    @property
    def run_s(self) -> float:
        return sum((b - a).total_seconds() for a, b in self.runs)

    @property
    def waited_s(self) -> float:
        return (self.start - self.earliest).total_seconds()

    @property
    def paused_s(self) -> float:
        return (self.finish - self.start).total_seconds() - self.run_s

    def as_dict(self) -> dict:
        return {"policy": self.policy, "start": iso(self.start), "finish": iso(self.finish),
                "tco2eq": self.tco2eq, "run_hours": self.run_s / 3600,
                "waited_hours": self.waited_s / 3600, "paused_hours": self.paused_s / 3600,
                "pauses": len(self.runs) - 1,
                "runs": [[iso(a), iso(b)] for a, b in self.runs]}


# --- checks ----------------------------------------------------------------------------------

def check_window(signal: Signal, duration_s: float, earliest: datetime,
                 deadline: datetime) -> tuple[float, float]:
    """Refuse a job that cannot fit, or a signal that does not cover [earliest, deadline]."""
    if not duration_s > 0:
        raise BadInput(f"job duration must be > 0 hours, got {duration_s / 3600:g}")
    e, d = _ts(earliest), _ts(deadline)
    if d - e < duration_s - _EPS:
        raise BadInput(f"deadline {iso(deadline)} leaves {(d - e) / 3600:g} h after the start "
                       f"{iso(earliest)}, shorter than the job's {duration_s / 3600:g} h; give a "
                       "later --deadline or a shorter job")
    where = signal.path or signal.source
    if signal.start.timestamp() > e + _EPS:
        raise BadInput(f"forecast {where!r} starts at {iso(signal.start)}, after the job's "
                       f"start {iso(earliest)}; give --start inside the forecast")
    if signal.end.timestamp() < d - _EPS:
        raise BadInput(f"forecast {where!r} ends at {iso(signal.end)}, before the deadline "
                       f"{iso(deadline)}; give a forecast that covers the deadline or an "
                       "earlier --deadline")
    return e, d


def _profile(duration_s: float, power_profile: Sequence[float] | None):
    """[(offset_start_s, offset_end_s, relative_power)], relative powers averaging 1 so the
    job's energy is the same whatever its shape. `None`: constant power."""
    weights = [1.0] if not power_profile else [float(w) for w in power_profile]
    if any(not w >= 0 for w in weights) or sum(weights) <= 0:
        raise BadInput(f"power profile must be non-negative and not all zero, got {weights}")
    mean = sum(weights) / len(weights)
    n = len(weights)
    return [(duration_s * k / n, duration_s * (k + 1) / n, w / mean)
            for k, w in enumerate(weights)]


def window_tco2eq(signal: Signal, start: float, duration_s: float, energy_mwh: float,
                  power_profile: Sequence[float] | None = None) -> float | None:
    """tCO2eq of the job run from `start` (POSIX s) without pause; None if it crosses a gap."""
    weighted_s = 0.0  # integral of relative power x kg/kWh over time
    for o0, o1, w in _profile(duration_s, power_profile):
        a, b = start + o0, start + o1
        if not signal.covered(a, b):
            return None
        weighted_s += w * signal.kg_seconds(a, b)
    return energy_mwh * weighted_s / duration_s


def runs_tco2eq(signal: Signal, runs: list[tuple[float, float]], energy_mwh: float) -> float | None:
    total_s = sum(b - a for a, b in runs)
    kg_s = 0.0
    for a, b in runs:
        if not signal.covered(a, b):
            return None
        kg_s += signal.kg_seconds(a, b)
    return energy_mwh * kg_s / total_s


# --- when to start ---------------------------------------------------------------------------

def best_start(signal: Signal, duration_s: float, earliest: datetime, deadline: datetime,
               power_profile: Sequence[float] | None = None, *,
               energy_mwh: float = 1.0) -> StartChoice:
    """The start in [earliest, deadline - duration] with the least emissions (ties: earliest).

    With piecewise-constant intensity and power, emissions are piecewise linear in the start, with
    kinks only where a profile boundary meets a signal boundary, so checking those starts (and the
    two ends) finds the exact minimum. Windows that cross a gap are not candidates."""
    e, d = check_window(signal, duration_s, earliest, deadline)
    latest = d - duration_s
    offsets = {o for o0, o1, _ in _profile(duration_s, power_profile) for o in (o0, o1)}
    candidates = {e, latest} | {b - o for b in signal.boundaries() for o in offsets}
    best: tuple[float, float] | None = None
    for s in sorted(c for c in candidates if e - _EPS <= c <= latest + _EPS):
        s = min(max(s, e), latest)
        t = window_tco2eq(signal, s, duration_s, energy_mwh, power_profile)
        if t is not None and (best is None or t < best[1] - 1e-12):
            best = (s, t)
    if best is None:
        raise BadInput(f"every {duration_s / 3600:g} h window between {iso(earliest)} and "
                       f"{iso(deadline)} crosses a gap in forecast {signal.path!r} (gaps longer "
                       f"than --max-hold {signal.max_hold_s / 3600:g} h are not filled)")
    now_t = window_tco2eq(signal, e, duration_s, energy_mwh, power_profile)
    return StartChoice(from_ts(best[0]), best[1], now_t)


# --- policies --------------------------------------------------------------------------------

def _merge(runs: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for a, b in sorted(runs):
        if out and a <= out[-1][1] + _EPS:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _schedule(policy: str, signal: Signal, runs: list[tuple[float, float]], energy_mwh: float,
              earliest: float) -> Schedule:
    runs = _merge(runs)
    return Schedule(policy, tuple((from_ts(a), from_ts(b)) for a, b in runs),
                    runs_tco2eq(signal, runs, energy_mwh), from_ts(earliest))


def cleanest_slots(signal: Signal, e: float, d: float, need_s: float) -> list[tuple[float, float]]:
    """The cleanest `need_s` seconds of [e, d) (ties: earlier first), as sorted intervals."""
    pieces = sorted(signal.pieces(e, d), key=lambda p: (p[2], p[0]))
    have = sum(hi - lo for lo, hi, _ in pieces)
    if have < need_s - _EPS:
        raise BadInput(f"forecast {signal.path!r} has only {have / 3600:g} h of data between "
                       f"{iso(from_ts(e))} and {iso(from_ts(d))}, fewer than the job's "
                       f"{need_s / 3600:g} h (gaps are not filled)")
    out, left = [], need_s
    for lo, hi, _ in pieces:
        if left <= _EPS:
            break
        take = min(hi - lo, left)
        out.append((lo, lo + take))
        left -= take
    return _merge(out)


def _threshold_runs(signal: Signal, e: float, d: float, need_s: float,
                    threshold: float) -> list[tuple[float, float]]:
    runs, t, left = [], e, need_s
    while left > _EPS:
        if d - t <= left + _EPS:  # the deadline forces running from here to the end
            runs.append((t, t + left))
            break
        kg = signal.intensity_at(from_ts(t))
        if kg is not None and kg <= threshold:
            end = min(_interval_end(signal, t), t + left)
            runs.append((t, end))
            left -= end - t
            t = end
        else:
            t = min(_next_clean(signal, t, threshold), d - left)
    return runs


def _interval_end(signal: Signal, t: float) -> float:
    i = signal.index_at(t)
    return signal._t1[i] if i < len(signal._t1) else t


def _next_clean(signal: Signal, t: float, threshold: float) -> float:
    """The first time after `t` at which an interval at or below the threshold starts."""
    for i in range(signal.index_at(t), len(signal._t0)):
        if signal._kg[i] <= threshold and signal._t0[i] > t:
            return signal._t0[i]
    return float("inf")


def plan_policy(policy: str, signal: Signal, energy_mwh: float, duration_s: float,
                earliest: datetime, deadline: datetime,
                threshold_kg_per_kwh: float | None = None) -> Schedule:
    """The schedule one policy would follow over the signal."""
    e, d = check_window(signal, duration_s, earliest, deadline)
    if policy == "now":
        return _schedule(policy, signal, [(e, e + duration_s)], energy_mwh, e)
    if policy == "delay":
        s = best_start(signal, duration_s, earliest, deadline, energy_mwh=energy_mwh).start
        return _schedule(policy, signal, [(_ts(s), _ts(s) + duration_s)], energy_mwh, e)
    if policy == "suspend":
        return _schedule(policy, signal, cleanest_slots(signal, e, d, duration_s), energy_mwh, e)
    if policy == "threshold":
        if threshold_kg_per_kwh is None or threshold_kg_per_kwh < 0:
            raise BadInput(f"the threshold policy needs a threshold >= 0 g/kWh, got "
                           f"{threshold_kg_per_kwh}")
        runs = _threshold_runs(signal, e, d, duration_s, threshold_kg_per_kwh)
        return _schedule(policy, signal, runs, energy_mwh, e)
    raise BadInput(f"unknown policy {policy!r}; use one of {', '.join(POLICIES)}")


def median_intensity(signal: Signal, earliest: datetime, deadline: datetime) -> float:
    """Time-weighted median kg/kWh over [earliest, deadline): the default threshold."""
    pieces = signal.pieces(_ts(earliest), _ts(deadline))
    values = sorted((kg, hi - lo) for lo, hi, kg in pieces)
    half, acc = sum(w for _, w in values) / 2, 0.0
    for kg, w in values:
        acc += w
        if acc >= half:
            return kg
    return statistics.median(kg for kg, _ in values)


def simulate(signal: Signal, energy_mwh: float, duration_s: float, earliest: datetime,
             deadline: datetime, threshold_kg_per_kwh: float | None = None) -> dict:
    """Replay every policy over the signal: tCO2eq, finish time and savings against `now`."""
    if not energy_mwh > 0:
        raise BadInput(f"--energy-mwh must be > 0, got {energy_mwh}")
    check_window(signal, duration_s, earliest, deadline)
    threshold_source = "given"
    if threshold_kg_per_kwh is None:
        threshold_kg_per_kwh = median_intensity(signal, earliest, deadline)
        threshold_source = "median of the signal between start and deadline"
    rows = [plan_policy(p, signal, energy_mwh, duration_s, earliest, deadline,
                        threshold_kg_per_kwh).as_dict() for p in POLICIES]
    base = rows[0]["tco2eq"]
    for r in rows:
        known = base is not None and r["tco2eq"] is not None
        r["saved_tco2eq"] = base - r["tco2eq"] if known else None
        r["saved_percent"] = 100 * (base - r["tco2eq"]) / base if known and base > 0 else None
    return {"signal": signal.describe(), "energy_mwh": energy_mwh,
            "duration_hours": duration_s / 3600, "power_mw": energy_mwh / (duration_s / 3600),
            "start": iso(earliest), "deadline": iso(deadline),
            "threshold_g_per_kwh": threshold_kg_per_kwh * 1000,
            "threshold_source": threshold_source, "policies": rows}


# --- during a run ----------------------------------------------------------------------------

def should_pause(signal: Signal, now: datetime, policy: str, *,
                 remaining_s: float, deadline: datetime | None = None,
                 threshold_kg_per_kwh: float | None = None) -> bool:
    """Whether a running job should checkpoint and pause now.

    `now`/`delay` never pause once started. `threshold`: pause while intensity > threshold or in
    a gap. `suspend`: pause unless `now` lies in the cleanest stretches that still finish the
    remaining work by the deadline. Neither pauses when the remaining work needs all the time
    left before the deadline, nor past the end of the signal (nothing to wait for)."""
    if policy in ("now", "delay") or remaining_s <= 0:
        return False
    t = _ts(now)
    end = signal.end.timestamp()
    d = _ts(deadline) if deadline is not None else end
    if t >= end or d - t <= remaining_s + _EPS:
        return False
    if policy == "threshold":
        if threshold_kg_per_kwh is None:
            raise BadInput("the threshold policy needs --threshold (g CO2eq/kWh)")
        kg = signal.intensity_at(now)
        return kg is None or kg > threshold_kg_per_kwh
    if policy == "suspend":
        try:
            slots = cleanest_slots(signal, t, min(d, end), remaining_s)
        except BadInput:
            return False  # not enough known time left: run rather than miss the deadline
        return not any(a - _EPS <= t < b for a, b in slots)
    raise BadInput(f"unknown policy {policy!r}; use one of {', '.join(POLICIES)}")


def next_resume_time(signal: Signal, now: datetime, policy: str, *,
                     remaining_s: float, deadline: datetime | None = None,
                     threshold_kg_per_kwh: float | None = None) -> datetime | None:
    """When a paused job should resume (None: it should not be paused now)."""
    kw = dict(remaining_s=remaining_s, deadline=deadline,
              threshold_kg_per_kwh=threshold_kg_per_kwh)
    if not should_pause(signal, now, policy, **kw):
        return None
    t = _ts(now)
    end = signal.end.timestamp()
    d = _ts(deadline) if deadline is not None else end
    latest = d - remaining_s  # resuming later would miss the deadline
    if policy == "threshold":
        return from_ts(min(_next_clean(signal, t, threshold_kg_per_kwh), latest))
    slots = cleanest_slots(signal, t, min(d, end), remaining_s)
    return from_ts(min(next(a for a, _ in slots if a > t), latest))


def parse_when(text: str | None, base: datetime, what: str) -> datetime | None:
    """An ISO time ('2026-11-20T06:00Z') or a duration after `base` ('48h', '2d')."""
    from planners.units import parse_duration_s
    from orchestrator.carbon.signals import parse_time

    if text is None:
        return None
    try:
        return parse_time(text)[0]
    except ValueError:
        pass
    try:
        return base + timedelta(seconds=parse_duration_s(text, what))
    except BadInput:
        raise BadInput(f"{what} {text!r} is neither an ISO time (2026-11-20T06:00Z) nor a "
                       "duration (48h, 2d)") from None


def simulate_request(*, forecast: str | None, region: str | None, energy_mwh: float,
                     hours: float, deadline: str | None = None,
                     threshold_g_per_kwh: float | None = None, start: str | None = None,
                     zone: str | None = None, max_hold: str | None = None) -> dict:
    """`schedule simulate` as the user typed it: read the signal, resolve the times, simulate.

    Defaults (shown in the output): start = the forecast's first time (a static region: the
    current hour); deadline = the forecast's end (a static region: start + twice the job);
    threshold = the median intensity between start and deadline."""
    from planners.units import parse_duration_s
    from orchestrator.carbon.signals import DEFAULT_MAX_HOLD_S, load_signal, static_signal

    if (forecast is None) == (region is None):
        raise BadInput("give exactly one of --forecast FILE (a time series) or --region NAME "
                       "(a static yearly average)")
    if not hours > 0:
        raise BadInput(f"--hours must be > 0, got {hours}")
    hold_s = DEFAULT_MAX_HOLD_S if max_hold is None else (
        0.0 if str(max_hold).strip() in ("0", "0h", "0s") else
        parse_duration_s(max_hold, "--max-hold"))
    if forecast is not None:
        signal = load_signal(forecast, zone=zone, max_hold_s=hold_s)
        base = signal.start
    else:
        signal = static_signal(region)
        base = datetime.now(signal.start.tzinfo).replace(minute=0, second=0, microsecond=0)
    t0 = parse_when(start, base, "--start") if start else base
    if deadline is not None:
        t1 = parse_when(deadline, t0, "--deadline")
    else:
        t1 = signal.end if forecast is not None else t0 + timedelta(hours=2 * hours)
    if threshold_g_per_kwh is not None and not 0 <= threshold_g_per_kwh <= 5000:
        raise BadInput(f"--threshold must be between 0 and 5000 g CO2eq/kWh, got "
                       f"{threshold_g_per_kwh}")
    thr = None if threshold_g_per_kwh is None else threshold_g_per_kwh / 1000
    return simulate(signal, energy_mwh, hours * 3600, t0, t1, thr)


def savings_vs_now(signal: Signal, runs: list[tuple[datetime, datetime]], energy_mwh: float,
                   earliest: datetime) -> dict:
    """What a finished (or planned) carbon-aware run emitted against running at once from
    `earliest` for the same running time, both from the same signal: for the report."""
    spans = [(_ts(a), _ts(b)) for a, b in runs]
    run_s = sum(b - a for a, b in spans)
    if not run_s > 0:
        raise BadInput("no running time to compare")
    actual = runs_tco2eq(signal, spans, energy_mwh)
    at_once = window_tco2eq(signal, _ts(earliest), run_s, energy_mwh)
    known = actual is not None and at_once is not None
    return {"tco2eq": actual, "tco2eq_if_now": at_once,
            "saved_tco2eq": at_once - actual if known else None,
            "saved_percent": 100 * (at_once - actual) / at_once if known and at_once else None,
            "waited_s": spans[0][0] - _ts(earliest),
            "paused_s": spans[-1][1] - spans[0][0] - run_s, "signal": signal.describe()}
