"""Carbon-aware pauses, budget stops and the job queue, on real training through Ray.

Forecasts are replayed faster than real time (`--sim-start`, `--sim-speed`): the driver and the
scheduler run their real code paths; only the clock they read is scaled.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from orchestrator.store.home import Home
from orchestrator.store import EnergySample, RunEvent, Step, Store
from tests.e2e.test_train import FAST, SCHEDULE, _losses, tcli  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow


def _events(home: Path, run_id: str, kind: str) -> list[dict]:
    store = Store(Home(home).db_url)
    with store.read() as s:
        return [e.details for e in s.scalars(select(RunEvent).where(
            RunEvent.run_id == run_id, RunEvent.kind == kind).order_by(RunEvent.id))]


def _forecast(tmp_path: Path) -> Path:
    """Half-hourly: clean (100 g) until 00:30, dirty (500 g) until 02:30, clean again. A
    threshold of 300 g pauses a run that is training between 00:30 and 02:30 until 02:30."""
    rows = ["time,zone,g_per_kwh"]
    for half in range(24):
        g = 500 if 1 <= half <= 4 else 100
        rows.append(f"2026-11-20T{half // 2:02d}:{30 * (half % 2):02d}:00Z,DE,{g}")
    path = tmp_path / "forecast.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_threshold_pause_and_resume_equals_an_unpaused_run(tcli, train_home, reference_run,
                                                           tmp_path):
    # The replayed clock starts as the dirty hours begin (00:30); at 120x, worker start-up
    # (10-60 s here) lands the first step inside them (00:50-02:30), so the run pauses at a
    # checkpoint until 02:30 (at most 50 s of real time), restarts and resumes. Same launch as
    # the uninterrupted `reference_run` (SCHEDULE, 2 workers, 8 steps).
    paused = tcli("train", "tiny", *FAST, *SCHEDULE, "--workers", "2", "--max-steps", "8",
                  "--carbon-aware", "--policy", "threshold", "--threshold", "300",
                  "--forecast", str(_forecast(tmp_path)), "--hours", "1", "--deadline", "11h",
                  "--sim-start", "2026-11-20T00:30:00Z", "--sim-speed", "120", "--json")
    assert paused.code == 0, paused.stderr
    run = paused.json()
    assert run["status"] == "completed"
    pauses = _events(train_home, run["id"], "pause")
    assert pauses, "the dirty hours should have paused the run"
    assert run["paused_s"] > 0
    a, b = _losses(train_home, reference_run["id"]), _losses(train_home, run["id"])
    assert [s for s, _ in b] == list(range(1, 9))  # unbroken, no duplicate
    assert [la for _, la in a] == pytest.approx([lb for _, lb in b], rel=1e-6)
    va = _events(train_home, reference_run["id"], "eval")[-1]["val_loss"]
    vb = _events(train_home, run["id"], "eval")[-1]["val_loss"]
    assert va == pytest.approx(vb, rel=1e-6)  # the same final model
    carbon = _events(train_home, run["id"], "carbon")[-1]
    assert carbon["paused_s"] > 0 and carbon["tco2eq_if_now"] is not None
    listed = next(r for r in tcli("runs", "--json").json() if r["id"] == run["id"])
    assert listed["paused_s"] > 0


def test_budget_stop_at_a_checkpoint_before_the_budget_then_resume(tcli, train_home):
    budget_mwh = 1.2e-7  # a few steps of this machine's estimated CPU+RAM power, x PUE 1.1
    args = ["--workers", "1", "--max-steps", "60", "--checkpoint-every", "50",
            "--batch-tokens", "1024", "--micro-batch", "2", "--no-dashboard",
            "--meter-interval", "0.5"]
    res = tcli("train", "tiny", *args, "--max-mwh", str(budget_mwh), "--json")
    assert res.code == 0, res.stderr
    run = res.json()
    assert run["status"] == "budget-stopped", run
    store = Store(Home(train_home).db_url)
    shown = tcli("runs", "show", run["id"], "--json").json()
    last = run["last_step"]
    assert 0 < last < 60
    assert shown["checkpoints"][-1]["step"] == last and shown["checkpoints"][-1]["complete"]
    with store.read() as s:
        t_last = s.scalar(select(Step.time).where(Step.run_id == run["id"], Step.step == last))
        joules = sum(s.scalars(select(EnergySample.joules).where(
            EnergySample.run_id == run["id"], EnergySample.time <= t_last)))
    assert joules * 1.1 / 3.6e9 <= budget_mwh  # stopped before the budget was crossed
    again = tcli("train", "--resume", run["id"], "--max-mwh", "1", "--json")
    assert again.code == 0, again.stderr
    assert again.json()["status"] == "completed" and again.json()["last_step"] == 60
    assert [s for s, _ in _losses(train_home, run["id"])] == list(range(1, 61))


def test_queue_runs_a_job_through_the_launcher(tcli, train_home):
    res = tcli("schedule", "add", "tiny", "--max-steps", "3", "--batch-tokens", "1024",
               "--priority", "2", "--json")
    assert res.code == 0, res.stderr
    job = res.json()
    ran = tcli("schedule", "run", "--json")
    assert ran.code == 0, ran.stderr
    started = ran.json()["started"]
    assert [s["job_id"] for s in started] == [job["id"]] and started[0]["status"] == "done"
    run_id = started[0]["run_id"]
    assert [s for s, _ in _losses(train_home, run_id)] == [1, 2, 3]
    listed = tcli("schedule", "list", "--json").json()
    assert next(j for j in listed if j["id"] == job["id"])["run_id"] == run_id
