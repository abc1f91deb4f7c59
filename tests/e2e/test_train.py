"""Training through Ray for real: FSDP2 on CPU workers, checkpoints, resume, a killed worker.

All tests share one local Ray instance (`ray_local`), one small prepared dataset (`train_home`)
and one uninterrupted, metered reference run (`reference_run`), all session fixtures in
tests/conftest.py that tests/test_train_scheduling.py and tests/test_sweep_e2e.py share too.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from orchestrator.store.home import Home
from orchestrator.store import EnergySample, RunEvent, Step, Store
from tests.conftest import FAST, SCHEDULE, assert_bad_input  # noqa: F401 (FAST: other suites)


@pytest.fixture
def tcli(run_cli, train_home, ray_local, monkeypatch):
    monkeypatch.setenv("TALLY_HOME", str(train_home))
    monkeypatch.delenv("TALLY_DB", raising=False)
    return run_cli


def _losses(home: Path, run_id: str) -> list[tuple[int, float]]:
    store = Store(Home(home).db_url)
    with store.read() as s:
        return [(r.step, r.loss) for r in s.scalars(
            select(Step).where(Step.run_id == run_id).order_by(Step.step))]


def _train(tcli, *args: str) -> dict:
    res = tcli("train", "tiny", *FAST, *args, "--json")
    assert res.code == 0, res.stderr
    return res.json()


def test_train_tiny_two_workers_records_the_run(tcli, train_home, reference_run):
    run = reference_run
    rows = tcli("runs", "--json").json()
    row = next(r for r in rows if r["id"] == run["id"])
    assert row["preset"] == "tiny" and row["status"] == "completed"
    assert row["steps"] == 8 and row["tokens"] == 8 * 1024
    losses = [loss for _, loss in _losses(train_home, run["id"])]
    assert losses[-1] < losses[0] - 0.5, losses  # it learns
    shown = tcli("runs", "show", run["id"], "--json").json()
    assert [c["step"] for c in shown["checkpoints"]] == [2, 4, 6, 8]
    assert all(c["complete"] for c in shown["checkpoints"])
    on_disk = sorted(p.name for p in (Path(shown["run"]["storage_path"]) / "checkpoints").iterdir())
    assert on_disk == ["step-00000004", "step-00000006", "step-00000008"]  # --keep-last 3
    store = Store(Home(train_home).db_url)
    with store.read() as s:
        evals = list(s.scalars(select(RunEvent).where(RunEvent.run_id == run["id"],
                                                      RunEvent.kind == "eval")))
    assert len(evals) == 1 and evals[0].details["val_loss"] > 0


def test_one_and_two_workers_agree_on_the_same_global_batch(tcli, train_home, reference_run):
    one = _train(tcli, *SCHEDULE, "--workers", "1", "--max-steps", "4")
    a, b = _losses(train_home, one["id"]), _losses(train_home, reference_run["id"])[:4]
    assert [s for s, _ in a] == [s for s, _ in b] == [1, 2, 3, 4]
    for (_, la), (_, lb) in zip(a, b):
        assert la == pytest.approx(lb, rel=1e-4, abs=1e-5)


def test_resume_gives_the_losses_of_an_uninterrupted_run(tcli, train_home, reference_run):
    half = _train(tcli, *SCHEDULE, "--workers", "2", "--max-steps", "4")
    # corrupt the newest checkpoint: the resume must fall back to step 2 and say so
    run_dir = Path(tcli("runs", "show", half["id"], "--json").json()["run"]["storage_path"])
    shard = next((run_dir / "checkpoints" / "step-00000004").glob("*.distcp"))
    shard.write_bytes(b"\0" * shard.stat().st_size)
    res = tcli("train", "--resume", half["id"], "--max-steps", "8", "--json")
    assert res.code == 0, res.stderr
    assert "falling back" in res.stderr
    a, b = _losses(train_home, reference_run["id"]), _losses(train_home, half["id"])
    assert [s for s, _ in b] == list(range(1, 9))
    for (_, la), (_, lb) in zip(a, b):
        assert la == pytest.approx(lb, rel=1e-6)
    store = Store(Home(train_home).db_url)
    with store.read() as s:
        kinds = [e.kind for e in s.scalars(select(RunEvent).where(RunEvent.run_id == half["id"]))]
    assert "checkpoint-skipped" in kinds and "resume" in kinds
    assert store.get_run(half["id"]).status == "completed"


# A SIGKILLed worker: tests/reliability/test_worker_kill.py (unbroken history, same model).


def test_bad_train_input(tcli, train_home):
    assert_bad_input(tcli("train", "huge"), "unknown preset", "tiny")
    assert_bad_input(tcli("train", "tiny", "--workers", "64", *FAST), "needs 64 CPUs")
    assert_bad_input(tcli("train", "tiny", "--data", "nope", *FAST), "nope")
    assert_bad_input(tcli("train", "--resume", "no-such-run"), "no-such-run")
    assert_bad_input(tcli("train", "tiny", "--max-steps", "zero"), "--max-steps")
    assert_bad_input(tcli("train"), "PRESET")


def test_33b_exits_2_with_what_it_needs_and_dry_run_prints_the_plan(tcli):
    res = tcli("train", "33b", "--no-dashboard")
    assert_bad_input(res, "33b needs at least", "GB per GPU")
    res = tcli("train", "33b", "--dry-run", "--json")
    assert res.code == 0, res.stderr
    plan = res.json()
    assert plan["dry_run"] is True and plan["launch"]["preset"] == "33b"
    # shown on the GPU cluster its pre-flight says it needs: the batch rounded to its workers
    launch = plan["launch"]
    assert launch["device"] == "cuda" and launch["workers"] >= 8
    assert launch["global_batch_sequences"] % launch["workers"] == 0
    assert abs(launch["batch_tokens"] - 4 * 2**20) <= launch["workers"] * 2048


def test_two_workers_on_one_node_are_metered_once(tcli, train_home, reference_run):
    """One meter per node: the reference run (2 workers on this one machine, metered) has one
    meter, whose rows sum to the run's energy in `runs --json`."""
    run_id = reference_run["id"]
    store = Store(Home(train_home).db_url)
    with store.read() as s:
        rows = list(s.scalars(select(EnergySample).where(EnergySample.run_id == run_id)))
        meter = [e.details for e in s.scalars(select(RunEvent).where(
            RunEvent.run_id == run_id, RunEvent.kind == "meter"))]
    assert rows, "no energy was recorded"
    assert len({r.node for r in rows}) == 1
    assert len(meter) == 1 and len(meter[0]["nodes"]) == 1
    cpu_times = sorted(r.time for r in rows if r.device == "cpu")
    assert len(cpu_times) == len(set(cpu_times))  # one CPU row per window, not one per worker
    assert {r.source for r in rows} <= {"estimate", "rapl"}
    listed = next(r for r in tcli("runs", "--json").json() if r["id"] == run_id)
    assert listed["energy_joules"] == pytest.approx(sum(r.joules for r in rows))
    assert listed["energy_kwh"] > 0 and listed["tco2eq"] > 0
