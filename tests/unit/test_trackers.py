"""Experiment trackers (orchestrator/infra/trackers.py): a run's event stream, recorded through
the one recorder (record_event), read back with TensorBoard's own event reader and with
MLflow's client; `--tracker` is checked by the run specification."""

import json
import sys
from pathlib import Path

import pytest

from orchestrator.infra.trackers import open_tracker
from orchestrator.run.events import record_event
from orchestrator.run.spec import RunSpec
from orchestrator.store import open_store
from orchestrator.store.home import Home
from planners.errors import BadInput
from planners.footprint import Energy, footprint

EVENTS = Path(__file__).parents[1] / "data" / "run_events.jsonl"


def stream() -> list[dict]:
    """The `@tally` lines a run prints under `train --events` (what a remote follower reads)."""
    return [json.loads(line.removeprefix("@tally ")) for line in EVENTS.read_text().splitlines()]


def record_run(tmp_path: Path, name: str) -> tuple[dict, list[dict]]:
    """Every event of the stream recorded for a new run, with tracker `name` fed beside."""
    home = Home(tmp_path)
    store = open_store(None, home)
    events = stream()
    run = store.create_run("tiny", {"preset": "tiny"}, status="running")
    tracker = open_tracker(name, run.id, run_dir=home.run_dir(run.id), home=home)
    for ev in events:
        record_event(store, run.id, ev, tracker)
    tracker.close("completed")
    assert store.run_summaries([run.id])[0]["last_step"] == 6  # the store got them too
    store.close()
    return {"run_id": run.id, "tracker": tracker, "home": home}, events


def expected(events: list[dict]) -> dict[str, dict[int, float]]:
    """tag -> {step: value}: every step's scalars, the energy so far after each energy batch
    (at the step before it), and the evaluation."""
    out: dict[str, dict[int, float]] = {}
    step, joules = 0, 0.0
    for ev in events:
        if ev["type"] == "step":
            step = ev["step"]
            for k in ("loss", "lr", "grad_norm", "tokens_per_s", "mfu"):
                out.setdefault(f"train/{k}", {})[step] = ev[k]
        elif ev["type"] == "energy":
            joules += sum(s["joules"] for s in ev["samples"])
            fp = footprint(Energy(joules), pue=1.1, intensity_kg_per_kwh=0.385)  # the run's
            out.setdefault("energy/it_kwh", {})[step] = fp.it_energy_kwh
            out.setdefault("energy/co2_kg", {})[step] = 1000 * fp.tco2eq
            out.setdefault("power/watts", {})[step] = ev["samples"][-1]["watts"]
        elif ev["type"] == "eval":
            out.setdefault("eval/val_loss", {})[ev["step"]] = ev["val_loss"]
    return out


def test_tensorboard_event_files_hold_every_steps_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, events = record_run(tmp_path, "tensorboard")
    logdir = tmp_path / "runs" / run["run_id"] / "tensorboard"
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    acc.Reload()
    want = expected(events)
    assert set(want) <= set(acc.Tags()["scalars"])
    for tag, by_step in want.items():
        got = {e.step: e.value for e in acc.Scalars(tag)}
        assert got == pytest.approx(by_step, rel=1e-5), tag
    assert acc.Scalars("train/loss")[0].wall_time == pytest.approx(1796173211.0)  # 2026-12-02 01:00:11Z


def test_mlflow_store_holds_metrics_params_and_status(tmp_path, monkeypatch):
    from orchestrator.infra.trackers import mlflow_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    assert mlflow_uri(Home(tmp_path)) == f"sqlite:///{tmp_path}/mlflow.db"  # the default
    # a local file store (MLflow's SQLite store takes seconds to create its tables)
    uri = f"file://{tmp_path}/mlruns"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    run, events = record_run(tmp_path, "mlflow")
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("tally")
    (found,) = client.search_runs([exp.experiment_id], f"tags.`tally.run_id` = '{run['run_id']}'")
    assert found.info.status == "FINISHED"
    assert found.data.params["preset"] == "tiny" and found.data.params["pue"] == "1.1"
    for key, by_step in expected(events).items():
        got = {m.step: m.value for m in client.get_metric_history(found.info.run_id, key)}
        assert got == pytest.approx(by_step, rel=1e-6), key

    # a resumed run continues the same MLflow run, its energy counted on from what it spent
    again = open_tracker("mlflow", run["run_id"], run_dir=tmp_path, home=run["home"],
                         energy_joules=3.6e6)
    assert again.mlflow_run_id == found.info.run_id
    again.feed({"type": "energy", "node": "n0", "device": "cpu", "window_s": 1.0,
                "joules": 3.6e6, "watts": 10.0, "source": "rapl"})
    history = client.get_metric_history(found.info.run_id, "energy/it_kwh")
    assert [m.value for m in history if m.step == 0] == [2.0]  # 1 kWh before, 1 kWh now
    again.close("failed")
    assert client.get_run(found.info.run_id).info.status == "FAILED"


def test_tracker_choice_and_missing_package(monkeypatch):
    assert RunSpec(preset="tiny", tracker="tensorboard").validate().tracker == "tensorboard"
    with pytest.raises(BadInput, match="--tracker is not one of tensorboard, mlflow, got 'wandb'"):
        RunSpec(preset="tiny", tracker="wandb").validate()
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed
    with pytest.raises(BadInput, match=r"needs the mlflow package.*pip install 'tally\[mlflow\]'"):
        RunSpec(preset="tiny", tracker="mlflow").validate()
    # the job on a head does not track: the submitting machine does, from its events
    assert RunSpec(preset="tiny", tracker="tensorboard").for_remote_job().tracker is None


def test_a_failing_tracker_never_stops_the_run(tmp_path, caplog):
    from orchestrator.infra.trackers import Tracker

    class Broken(Tracker):
        def scalars(self, step, values, walltime):
            raise OSError("disk full")

    t = Broken("r")
    for ev in stream():
        t.feed(ev)
    assert t.failed
    assert [r.getMessage() for r in caplog.records if r.name.endswith("trackers")] == \
        ["tracker Broken switched off: OSError: disk full"]
