"""When to run: the best start is the true minimum (brute force), policies keep the deadline,
and the run-time pause decisions replay the planned schedules."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from planners.errors import BadInput
from orchestrator.carbon.scheduler import (best_start, cleanest_slots, next_resume_time, plan_policy,
                                    should_pause)
from orchestrator.carbon.signals import Interval, Signal, load_signal

DATA = Path(__file__).parent.parent / "data" / "forecasts"
UTC = timezone.utc
T0 = datetime(2026, 11, 20, tzinfo=UTC)
MIN = timedelta(minutes=1)


def brute_force_minute(sig: Signal, duration_min: int, e: datetime, d: datetime,
                       weights=None):
    """Every start on the minute grid; emissions summed minute by minute (kg/kWh x minutes)."""
    weights = weights or [1.0]
    mean = sum(weights) / len(weights)
    best = None
    s = e
    while s + duration_min * MIN <= d:
        total, ok = 0.0, True
        for m in range(duration_min):
            kg = sig.intensity_at(s + m * MIN)
            if kg is None:
                ok = False
                break
            w = weights[m * len(weights) // duration_min] / mean
            total += kg * w
        if ok and (best is None or total < best[1] - 1e-12):
            best = (s, total)
        s += MIN
    return best


@pytest.mark.parametrize("name, hours, deadline_h", [
    ("em_history.json", 2, 12), ("em_history.json", 3.5, 12), ("uk_national.json", 1.5, 6.5),
    ("watttime_v3.json", 0.5, 3), ("plain.csv", 2, 17), ("em_history.json", 1, 4.5),
])
def test_best_start_is_the_brute_force_minimum_on_every_fixture(name, hours, deadline_h):
    sig = load_signal(DATA / name)
    e, d = sig.start, sig.start + timedelta(hours=deadline_h)
    choice = best_start(sig, hours * 3600, e, d, energy_mwh=60.0)  # 1 MWh per minute-hour unit
    bf_start, bf_kg_min = brute_force_minute(sig, int(hours * 60), e, d)
    # energy 60 MWh over `hours` -> per minute 1/hours MWh; t = sum(kg) x 60 / (hours x 60)
    assert choice.tco2eq == pytest.approx(bf_kg_min / hours, rel=1e-9)
    assert choice.start == bf_start


def test_best_start_with_a_power_profile_is_the_brute_force_minimum():
    sig = load_signal(DATA / "de_week_hourly.csv")
    e, d = sig.start, sig.start + timedelta(hours=30)
    weights = [1, 3, 1, 0.5]
    choice = best_start(sig, 8 * 3600, e, d, weights, energy_mwh=8 * 60)
    bf_start, bf = brute_force_minute(sig, 8 * 60, e, d, weights)
    assert choice.tco2eq == pytest.approx(bf, rel=1e-9) and choice.start == bf_start


@st.composite
def signals(draw):
    n = draw(st.integers(2, 12))
    t, intervals = T0, []
    for _ in range(n):
        t += draw(st.sampled_from([0, 0, 0, 7, 45, 90])) * MIN  # sometimes a gap
        length = draw(st.integers(5, 120)) * MIN
        intervals.append(Interval(t, t + length, draw(st.integers(20, 600)) / 1000))
        t += length
    return Signal(tuple(intervals), source="test", max_hold_s=0)


@settings(max_examples=40, deadline=None)
@given(sig=signals(), frac=st.floats(0.05, 0.9))
def test_best_start_matches_brute_force_on_random_signals(sig, frac):
    span = int((sig.end - sig.start) / MIN)
    duration = max(1, int(span * frac))
    bf = brute_force_minute(sig, duration, sig.start, sig.end)
    if bf is None:
        with pytest.raises(BadInput, match="crosses a gap"):
            best_start(sig, duration * 60, sig.start, sig.end, energy_mwh=1.0)
        return
    choice = best_start(sig, duration * 60, sig.start, sig.end, energy_mwh=duration / 60)
    assert choice.tco2eq == pytest.approx(bf[1] / 60, rel=1e-9, abs=1e-12)
    assert sig.start <= choice.start <= sig.end - duration * MIN


@settings(max_examples=40, deadline=None)
@given(sig=signals(), frac=st.floats(0.05, 0.9))
def test_suspend_takes_the_cleanest_minutes(sig, frac):
    e, d = sig.start, sig.end
    minutes = [sig.intensity_at(e + k * MIN) for k in range(int((d - e) / MIN))]
    known = sorted(kg for kg in minutes if kg is not None)
    need = max(1, int(len(minutes) * frac))
    if need > len(known):
        with pytest.raises(BadInput, match="fewer than"):
            plan_policy("suspend", sig, 1.0, need * 60, e, d)
        return
    s = plan_policy("suspend", sig, need / 60, need * 60, e, d)
    assert s.run_s == pytest.approx(need * 60)
    assert s.tco2eq == pytest.approx(sum(known[:need]) / 60, rel=1e-9)
    assert s.finish <= d


def test_policies_keep_the_deadline_and_never_beat_suspend():
    sig = load_signal(DATA / "de_week_hourly.csv")
    e = sig.start + timedelta(hours=5)
    for hours, slack in ((6, 6), (24, 48), (30, 30), (10, 100)):
        d = e + timedelta(hours=hours + slack)
        res = {p: plan_policy(p, sig, 1.0, hours * 3600, e, d, 0.3)
               for p in ("now", "delay", "suspend", "threshold")}
        for s in res.values():
            assert s.finish <= d and s.run_s == pytest.approx(hours * 3600) and s.start >= e
        assert res["suspend"].tco2eq <= min(r.tco2eq for r in res.values()) + 1e-12
        assert res["delay"].tco2eq <= res["now"].tco2eq + 1e-12


def test_threshold_runs_below_threshold_and_is_forced_by_the_deadline():
    sig = load_signal(DATA / "em_history.json")  # 400, 380x2, 300, 280, gap, 200, 210, 220, 350
    s = plan_policy("threshold", sig, 1.0, 2 * 3600, sig.start, sig.end, 0.25)
    assert [(a.hour, b.hour) for a, b in s.runs] == [(8, 10)]
    # 5 h of work, threshold 0.25, deadline 12:00: the clean 08-11 is not enough, so it must
    # start by 07:00 -- which is in the gap, so that window's emissions are unknown (None).
    forced = plan_policy("threshold", sig, 1.0, 5 * 3600, sig.start, sig.end, 0.25)
    assert forced.runs[0][0] == sig.start + timedelta(hours=7) and forced.tco2eq is None
    with pytest.raises(BadInput, match="needs a threshold"):
        plan_policy("threshold", sig, 1.0, 3600, sig.start, sig.end, None)


def test_window_and_deadline_are_checked():
    sig = load_signal(DATA / "em_history.json")
    with pytest.raises(BadInput, match="shorter than the job"):
        best_start(sig, 5 * 3600, sig.start, sig.start + timedelta(hours=4))
    with pytest.raises(BadInput, match="before the deadline"):
        best_start(sig, 3600, sig.start, sig.end + timedelta(hours=1))
    with pytest.raises(BadInput, match="after the job's start"):
        best_start(sig, 3600, sig.start - timedelta(hours=1), sig.end)
    with pytest.raises(BadInput, match="crosses a gap"):  # only 5 h windows are 00-05 and 07-12
        best_start(sig, 5 * 3600, sig.start + timedelta(hours=1), sig.end)


@pytest.mark.parametrize("policy, threshold", [("threshold", 0.3), ("suspend", None)])
def test_should_pause_replays_the_planned_schedule(policy, threshold):
    """A driver that asks should_pause every minute runs exactly the planned intervals."""
    sig = load_signal(DATA / "de_week_hourly.csv")
    e = sig.start
    d = e + timedelta(hours=48)
    work = 20 * 3600
    plan = plan_policy(policy, sig, 1.0, work, e, d, threshold)
    ran, t, left = [], e, float(work)
    while left > 0:
        kw = dict(remaining_s=left, deadline=d, threshold_kg_per_kwh=threshold)
        if should_pause(sig, t, policy, **kw):
            resume = next_resume_time(sig, t, policy, **kw)
            assert resume > t
            t = resume
            continue
        ran.append(t)
        left -= 60
        t += MIN
    planned = {a + k * MIN for a, b in plan.runs for k in range(int((b - a) / MIN))}
    assert set(ran) == planned


def test_no_pause_for_now_or_delay_or_past_the_signal_or_when_the_deadline_is_tight():
    sig = load_signal(DATA / "em_history.json")
    kw = dict(remaining_s=3600, threshold_kg_per_kwh=0.1)
    assert not should_pause(sig, sig.start, "delay", deadline=sig.end, **kw)
    assert should_pause(sig, sig.start, "threshold", deadline=sig.end, **kw)
    assert not should_pause(sig, sig.end + MIN, "threshold", deadline=None, **kw)
    assert not should_pause(sig, sig.end - timedelta(hours=1), "threshold", deadline=sig.end, **kw)
    assert should_pause(sig, sig.start + timedelta(hours=6), "suspend", remaining_s=3600,
                        deadline=sig.end)  # in the gap
    assert cleanest_slots(sig, sig.start.timestamp(), sig.end.timestamp(), 3600) == [
        ((sig.start + timedelta(hours=8)).timestamp(), (sig.start + timedelta(hours=9)).timestamp())]


def test_savings_vs_now_matches_the_simulated_policy():
    from orchestrator.carbon.scheduler import savings_vs_now

    sig = load_signal(DATA / "de_week_hourly.csv")
    e, d = sig.start, sig.start + timedelta(hours=48)
    now = plan_policy("now", sig, 3.0, 12 * 3600, e, d)
    sus = plan_policy("suspend", sig, 3.0, 12 * 3600, e, d)
    rep = savings_vs_now(sig, list(sus.runs), 3.0, e)
    assert rep["tco2eq"] == pytest.approx(sus.tco2eq) and rep["tco2eq_if_now"] == pytest.approx(now.tco2eq)
    assert rep["saved_tco2eq"] == pytest.approx(now.tco2eq - sus.tco2eq)
    assert rep["paused_s"] == pytest.approx(sus.paused_s) and rep["waited_s"] == sus.waited_s
