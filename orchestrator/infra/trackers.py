"""Experiment trackers (`train --tracker tensorboard|mlflow`): the run's events, as the one
recorder writes them to the store (orchestrator/run/events.py `record_event`), also written to
TensorBoard event files or an MLflow run. The local driver and a remote run's follower both
record through `record_event`, so a run on a cluster is tracked on the submitting machine
exactly as a local one.

What is written (names as TensorBoard tags and MLflow metric keys):
  train/loss, train/lr, train/grad_norm, train/tokens_per_s, train/mfu   at each step
  energy/it_kwh, energy/facility_kwh, energy/co2_kg (so far), power/watts (all devices' latest
  window)                                                    at each energy batch, on the last step
  eval/val_loss                                              at each evaluation's step
Where: TensorBoard under the run's directory (`runs/<run-id>/tensorboard`); MLflow at
MLFLOW_TRACKING_URI, else `sqlite:///$TALLY_HOME/mlflow.db`, experiment MLFLOW_EXPERIMENT_NAME
or "tally", one MLflow run per tally run (tag `tally.run_id`; a resumed run continues it).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

from planners.errors import BadInput
from planners.footprint import Energy, footprint

log = logging.getLogger(__name__)

# --tracker NAME (orchestrator/run/spec.py TRACKERS) -> the module it needs; the pip extra
# that installs it has the tracker's name (pyproject.toml)
MODULES = {"tensorboard": "tensorboard", "mlflow": "mlflow"}
STEP_METRICS = ("loss", "lr", "grad_norm", "tokens_per_s", "mfu")


def check_installed(name: str) -> None:
    """BadInput when the tracker's package is not installed, naming the extra that installs
    it (the name itself is checked by RunSpec.validate)."""
    module = MODULES[name]
    if importlib.util.find_spec(module) is None:
        raise BadInput(f"--tracker {name} needs the {module} package, which is not installed: "
                       f"pip install 'tally[{name}]'")


class Tracker:
    """Turns the event stream of one run into scalars; a backend writes them."""

    def __init__(self, run_id: str, pue: float | None = None,
                 intensity_kg_per_kwh: float | None = None):
        self.run_id, self.pue, self.intensity = run_id, pue, intensity_kg_per_kwh
        self.step, self.energy_joules = 0, 0.0
        self.watts: dict[tuple, float] = {}  # (node, device) -> its latest window's power
        self.failed = False

    # -- the backend's part -------------------------------------------------------------------
    def scalars(self, step: int, values: dict[str, float], walltime: float | None) -> None:
        raise NotImplementedError

    def params(self, config: dict) -> None:
        pass

    def close(self, status: str) -> None:
        pass

    # -- the events ---------------------------------------------------------------------------
    def feed(self, event: dict) -> None:
        """One event of the protocol (orchestrator/run/events.py). A tracker that fails is
        switched off with one warning: it must never stop a run."""
        if self.failed:
            return
        try:
            self._feed(event)
        except Exception as e:  # noqa: BLE001
            self.failed = True
            log.warning("tracker %s switched off: %s: %s", type(self).__name__, type(e).__name__, e)

    def _feed(self, event: dict) -> None:
        from orchestrator.run.events import _time, energy_rows, step_rows

        kind = event.get("type")
        if kind == "run":
            cfg = event.get("config") or {}
            self.pue = cfg.get("pue", self.pue)
            self.intensity = cfg.get("intensity_kg_per_kwh", self.intensity)
            self.params(cfg)
        elif kind == "resumed" and event.get("step") is not None:
            self.step = int(event["step"])
        elif kind == "step":
            for row in step_rows(event):
                self.step = row["step"]
                self.scalars(row["step"], {f"train/{k}": float(row[k]) for k in STEP_METRICS
                                           if row.get(k) is not None}, _epoch(row["time"]))
        elif kind == "energy":
            rows = energy_rows(event)
            for r in rows:
                self.energy_joules += float(r["joules"])
                self.watts[(r["node"], r["device"])] = float(r["watts"])
            fp = footprint(Energy(self.energy_joules), **self._assumptions())
            self.scalars(self.step, {"energy/it_kwh": fp.it_energy_kwh,
                                     "energy/facility_kwh": fp.facility_energy_kwh,
                                     "energy/co2_kg": 1000 * fp.tco2eq,
                                     "power/watts": sum(self.watts.values())},
                         _epoch(max(r["time"] for r in rows)))
        elif kind == "eval" and event.get("val_loss") is not None:
            self.scalars(int(event["step"]), {"eval/val_loss": float(event["val_loss"])},
                         _epoch(_time(event.get("time"))))

    def _assumptions(self) -> dict:
        out = {}
        if self.pue is not None:
            out["pue"] = float(self.pue)
        if self.intensity is not None:
            out["intensity_kg_per_kwh"] = float(self.intensity)
        return out


def _epoch(t) -> float:  # noqa: ANN001 - the store's naive-UTC datetime
    from datetime import timezone

    return t.replace(tzinfo=timezone.utc).timestamp()


class TensorBoardTracker(Tracker):
    def __init__(self, run_id: str, logdir: Path, **assumptions):
        super().__init__(run_id, **assumptions)
        self.logdir = Path(logdir)
        self.writer = None  # opened at the first scalar, once a resumed run's step is known

    def _feed(self, event: dict) -> None:
        if event.get("type") == "resumed" and self.writer is None and event.get("step"):
            self.purge_step = int(event["step"]) + 1  # steps trained again replace the old
        super()._feed(event)

    def scalars(self, step: int, values: dict[str, float], walltime: float | None) -> None:
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(self.logdir),
                                        purge_step=getattr(self, "purge_step", None))
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, global_step=step, walltime=walltime)
        self.writer.flush()

    def close(self, status: str) -> None:
        if self.writer is not None:
            self.writer.close()


class MlflowTracker(Tracker):
    def __init__(self, run_id: str, tracking_uri: str, name: str | None = None,
                 experiment: str | None = None, **assumptions):
        super().__init__(run_id, **assumptions)
        # MLflow's SQLite store announces its table migrations at INFO on stderr
        for name in ("mlflow.store.db.utils", "alembic.runtime.migration"):
            logging.getLogger(name).setLevel(logging.WARNING)
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.tracking_uri = tracking_uri
        experiment = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or "tally"
        exp = self.client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp else self.client.create_experiment(experiment)
        found = self.client.search_runs([exp_id], f"tags.`tally.run_id` = '{run_id}'",
                                        max_results=1)
        if found:  # --resume: the same MLflow run goes on
            self.mlflow_run_id = found[0].info.run_id
            self.client.update_run(self.mlflow_run_id, status="RUNNING")
        else:
            run = self.client.create_run(exp_id, run_name=name or run_id,
                                         tags={"tally.run_id": run_id})
            self.mlflow_run_id = run.info.run_id
        self.params_logged = bool(found)

    def scalars(self, step: int, values: dict[str, float], walltime: float | None) -> None:
        from mlflow.entities import Metric

        ms = int(1000 * walltime) if walltime is not None else 0
        self.client.log_batch(self.mlflow_run_id, metrics=[
            Metric(key, value, ms, step) for key, value in values.items()])

    def params(self, config: dict) -> None:
        if self.params_logged:
            return
        from mlflow.entities import Param

        self.client.log_batch(self.mlflow_run_id, params=[
            Param(k, str(v)[:500]) for k, v in sorted(config.items())
            if isinstance(v, (str, int, float, bool)) and v is not None])
        self.params_logged = True

    def close(self, status: str) -> None:
        self.client.set_terminated(self.mlflow_run_id, status={
            "completed": "FINISHED", "failed": "FAILED"}.get(status, "KILLED"))


def open_tracker(name: str | None, run_id: str, *, run_dir: Path, home, config: dict | None = None,
                 run_name: str | None = None,
                 energy_joules: float = 0.0) -> Tracker | None:  # noqa: ANN001 (Home)
    """The tracker `train --tracker` names, for run `run_id` (None for none). `config`: the
    run's stored config (its PUE and grid intensity turn energy into CO2, its scalars are
    MLflow params); `energy_joules`: what a resumed run has spent already."""
    if not name:
        return None
    check_installed(name)
    cfg = config or {}
    assumptions = {"pue": cfg.get("pue"), "intensity_kg_per_kwh": cfg.get("intensity_kg_per_kwh")}
    if name == "tensorboard":
        tracker: Tracker = TensorBoardTracker(run_id, Path(run_dir) / "tensorboard", **assumptions)
    else:
        tracker = MlflowTracker(run_id, mlflow_uri(home), name=run_name, **assumptions)
    tracker.energy_joules = float(energy_joules or 0.0)
    if cfg:
        tracker.params(cfg)
    log.info("tracker %s for run %s: %s", name, run_id, where(tracker))
    return tracker


def mlflow_uri(home) -> str:  # noqa: ANN001 (Home)
    """MLFLOW_TRACKING_URI (MLflow's own setting), else a SQLite store in $TALLY_HOME (MLflow 3
    keeps its file store for those who ask for it: MLFLOW_ALLOW_FILE_STORE=true)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(home.root) / 'mlflow.db'}"


def where(tracker: Tracker) -> str:
    if isinstance(tracker, TensorBoardTracker):
        return f"tensorboard --logdir {tracker.logdir}"
    if isinstance(tracker, MlflowTracker):
        return f"mlflow ui --backend-store-uri {tracker.tracking_uri} (run {tracker.mlflow_run_id})"
    return type(tracker).__name__
