"""`schedule simulate` figures recomputed independently; bad input; the queue's decisions."""

from __future__ import annotations

import csv
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from planners.errors import RunFailed
from orchestrator.store.home import Home
from orchestrator.carbon.queue import add_job, list_jobs, plan_queue, run_queue
from orchestrator.store import open_store
from tests.conftest import assert_bad_input

DATA = Path(__file__).parent.parent / "data" / "forecasts"
WEEK = DATA / "de_week_hourly.csv"
UTC = timezone.utc


def week_hours() -> list[float]:
    with open(WEEK) as f:
        return [float(r["g_per_kwh"]) / 1000 for r in csv.DictReader(f)]  # kg/kWh, hourly


def recompute(kg: list[float], energy_mwh: float, hours: int, start: int, deadline: int,
              threshold: float) -> dict:
    """The four policies by plain hourly loops (the fixture is hourly and the job whole hours)."""
    p = energy_mwh / hours  # MWh per hour of running
    window = kg[start:deadline]
    out = {"now": p * sum(window[:hours])}
    out["delay"] = min(p * sum(window[s:s + hours]) for s in range(len(window) - hours + 1))
    out["suspend"] = p * sum(sorted(window)[:hours])
    total, left = 0.0, hours
    for k, c in enumerate(window):
        if left == 0:
            break
        if c <= threshold or len(window) - k <= left:
            total += p * c
            left -= 1
    out["threshold"] = total
    return out


@pytest.mark.parametrize("energy, hours, start_h, deadline_h, threshold", [
    (10.0, 24, 0, 72, None), (3.0, 8, 30, 80, 300), (50.0, 40, 0, 168, 250), (1.0, 5, 100, 105, 200),
])
def test_simulate_week_figures_recomputed(run_cli, energy, hours, start_h, deadline_h, threshold):
    kg = week_hours()
    start = datetime(2026, 11, 16, tzinfo=UTC) + timedelta(hours=start_h)
    args = ["schedule", "simulate", "--forecast", WEEK, "--energy-mwh", energy, "--hours", hours,
            "--start", start.isoformat(), "--deadline", f"{deadline_h - start_h}h", "--json"]
    if threshold is not None:
        args += ["--threshold", threshold]
    res = run_cli(*args)
    assert res.code == 0, res.stderr
    doc = res.json()
    thr = doc["threshold_g_per_kwh"] / 1000
    if threshold is None:  # the median of the window (time-weighted; hourly, so the middle value)
        window = sorted(kg[start_h:deadline_h])
        assert thr == window[(len(window) - 1) // 2]
    want = recompute(kg, energy, hours, start_h, deadline_h, thr)
    got = {r["policy"]: r for r in doc["policies"]}
    for policy, t in want.items():
        assert got[policy]["tco2eq"] == pytest.approx(t, rel=1e-9), policy
        assert got[policy]["saved_tco2eq"] == pytest.approx(want["now"] - t, rel=1e-9, abs=1e-12)
        assert got[policy]["run_hours"] == pytest.approx(hours)
        finish = datetime.fromisoformat(got[policy]["finish"])
        assert finish <= start + timedelta(hours=deadline_h - start_h)
    if deadline_h - start_h > hours:  # a variable grid and room to move: time-shifting pays
        assert got["suspend"]["saved_percent"] > 5


def test_simulate_human_table(run_cli):
    res = run_cli("schedule", "simulate", "--forecast", WEEK, "--energy-mwh", 10, "--hours", 24,
                  "--deadline", "72h")
    assert res.code == 0, res.stderr
    for word in ("now", "delay", "suspend", "threshold", "saved", "median"):
        assert word in res.stdout


@pytest.mark.parametrize("args, needles", [
    (["--forecast", WEEK, "--deadline", "200h"], ["before the deadline"]),
    (["--forecast", WEEK, "--deadline", "10h"], ["shorter than the job"]),
    (["--forecast", DATA / "bad_units.csv"], ["unknown units"]),
    (["--forecast", DATA / "watttime_percentile.json"], ["units 'percentile'"]),
    (["--forecast", DATA / "empty.csv"], ["empty"]),
    (["--forecast", DATA / "unknown_format.json"], ["no known format"]),
    (["--region", "gcp:mars-central1"], ["unknown region"]),
    (["--forecast", WEEK, "--region", "DEU"], ["exactly one of"]),
    (["--forecast", WEEK, "--start", "yesterday"], ["--start"]),
    (["--forecast", WEEK, "--threshold", "-3"], ["--threshold"]),
    (["--forecast", DATA / "em_history.json", "--start", "2026-11-20T01:00Z", "--deadline",
      "2026-11-20T12:00Z", "--hours", "9"], ["crosses a gap"]),
])
def test_simulate_bad_input(run_cli, args, needles):
    base = ["schedule", "simulate", "--energy-mwh", "5"]
    if "--hours" not in args:
        base += ["--hours", "24"]
    assert_bad_input(run_cli(*base, *args), *needles)


def test_static_region_saves_nothing(run_cli):
    res = run_cli("schedule", "simulate", "--region", "FRA", "--energy-mwh", 2, "--hours", 5,
                  "--json")
    assert res.code == 0
    assert {r["saved_tco2eq"] for r in res.json()["policies"]} == {0.0}


# --- the queue -------------------------------------------------------------------------------

@pytest.fixture
def store(home):
    return open_store(None, Home.resolve(str(home)))


NOW = datetime(2026, 11, 16, 0, tzinfo=UTC)


def test_queue_orders_by_priority_waits_for_windows_and_backfills(store):
    high = add_job(store, "small", priority=9, forecast=str(WEEK), hours=6, energy_mwh=1.0,
                   deadline="2026-11-18T00:00Z", now=NOW)
    first = plan_queue(list_jobs(store), NOW)[0]
    # the high-priority job waits for its cleanest 6 h before its deadline
    assert first.job_id == high["id"] and first.action == "wait"
    assert first.expected_tco2eq < first.tco2eq_if_now
    at = datetime.fromisoformat(first.start_at)
    gap_h = (at - NOW) / timedelta(hours=1)
    assert gap_h > 3
    too_long = add_job(store, "tiny", priority=5, hours=gap_h + 1, now=NOW)
    fits = add_job(store, "tiny", priority=4, hours=gap_h - 1, now=NOW)
    low = add_job(store, "tiny", priority=0, hours=1, now=NOW)
    d = {x.job_id: x for x in plan_queue(list_jobs(store), NOW)}
    # a job that would still run at the high-priority start waits; one that ends before backfills
    assert d[too_long["id"]].action == "wait" and "higher-priority" in d[too_long["id"]].reason
    assert d[fits["id"]].action == "start"
    assert d[low["id"]].action == "wait" and "another job" in d[low["id"]].reason
    # at its chosen start, the high-priority job starts first
    later = [(x.job_id, x.action) for x in plan_queue(list_jobs(store), at)]
    assert later[0] == (high["id"], "start") and {a for _, a in later[1:]} == {"wait"}


def test_queue_refuses_over_budget_and_missed_deadline(store):
    a = add_job(store, "tiny", priority=1, forecast=str(WEEK), hours=4, energy_mwh=10.0,
                max_tco2=2.0, deadline="2026-11-17T00:00Z", now=NOW)
    b = add_job(store, "tiny", priority=0, hours=4, deadline="2026-11-16T03:00Z",
                now=NOW - timedelta(hours=2))
    d = {x.job_id: x for x in plan_queue(list_jobs(store), NOW)}
    assert d[a["id"]].action == "refuse" and "--max-tco2" in d[a["id"]].reason
    assert d[b["id"]].action == "refuse" and "deadline" in d[b["id"]].reason


def test_threshold_job_waits_while_the_grid_is_dirty(store):
    j = add_job(store, "tiny", forecast=str(WEEK), policy="threshold", threshold_g_per_kwh=300,
                hours=3, energy_mwh=1.0, deadline="2026-11-19T00:00Z", now=NOW)
    d = plan_queue(list_jobs(store), NOW)[0]
    assert d.action == "wait"
    kg = week_hours()
    first_clean = next(h for h, c in enumerate(kg) if c <= 0.3)
    assert datetime.fromisoformat(d.start_at) == NOW + timedelta(hours=first_clean)
    assert j["options"]["threshold_g_per_kwh"] == 300


def test_dry_run_of_the_queue_changes_nothing(store):
    add_job(store, "tiny", hours=1, now=NOW)
    res = run_queue(store, now=NOW, dry_run=True)
    assert res["dry_run"] and res["decisions"][0]["action"] == "start"
    assert [j["status"] for j in list_jobs(store)] == ["queued"]  # not started, still queued


def test_schedule_cli_add_list_and_bad_input(run_cli, home):
    res = run_cli("schedule", "add", "tiny", "--priority", "3", "--hours", "2", "--json")
    assert res.code == 0, res.stderr
    job = res.json()
    listed = run_cli("schedule", "list", "--json").json()
    assert [j["id"] for j in listed] == [job["id"]] and listed[0]["priority"] == 3
    dry = run_cli("schedule", "run", "--dry-run", "--json").json()
    assert dry["decisions"][0]["job_id"] == job["id"]
    assert_bad_input(run_cli("schedule", "add", "huge"), "unknown preset")
    assert_bad_input(run_cli("schedule", "add", "tiny", "--cost-usd", "80", "--max-usd", "60"),
                     "exceeds --max-usd")
    assert_bad_input(run_cli("schedule", "add", "tiny", "--policy", "threshold", "--forecast",
                             WEEK, "--hours", "2"), "needs --threshold")
    assert_bad_input(run_cli("schedule", "add", "tiny", "--forecast", DATA / "empty.csv",
                             "--hours", "2"), "empty")
    assert_bad_input(run_cli("schedule", "add", "tiny", "--hours", "5", "--deadline", "2h"),
                     "sooner than")
    assert_bad_input(run_cli("schedule", "add", "tiny", "--policy", "suspend"), "needs --forecast")
    assert_bad_input(run_cli("schedule", "add", "tiny", "--forecast", WEEK), "needs --hours")
    assert_bad_input(run_cli("schedule", "list", "--status", "lost"), "unknown job status")
    assert_bad_input(run_cli("schedule", "run", "--now", "soon"), "--now")


def test_suspend_job_without_deadline_uses_the_whole_forecast(store):
    add_job(store, "tiny", forecast=str(WEEK), policy="suspend", hours=10, energy_mwh=1.0,
            now=NOW)
    d = plan_queue(list_jobs(store), NOW)[0]
    kg = week_hours()
    cleanest = sorted(range(len(kg)), key=lambda h: (kg[h], h))[:10]
    assert d.action == "wait"
    assert datetime.fromisoformat(d.start_at) == NOW + timedelta(hours=min(cleanest))
    assert d.expected_tco2eq == pytest.approx(sum(kg[h] for h in cleanest) / 10)
    assert d.tco2eq_if_now == pytest.approx(sum(kg[:10]) / 10)
