"""The run specification: every option of a training run, once, typed and validated.

`RunSpec` is built once (from the command line, a run file, a queued job or a stored run),
validated once (`validate`, every range check lives here), stored as JSON with the run, and is
the only thing local runs, remote jobs, the queue, `--resume` and sweeps pass around. The
`train` command's options are generated from its fields (`OPTIONS`): adding an option means
adding one field.

Run files (`train --config run.toml`, TOML or YAML; JSON is YAML) hold the same keys, flat or in
tables named after the groups below ([model], [data], [schedule], [placement], [storage],
[evaluation], [footprint], [carbon], [budget], [metering], [run]); an unknown key is bad input
naming it.
Options given on the command line override the file.
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from planners.assumptions import OPTION_HELP
from planners.errors import BadInput

GROUPS = ("model", "data", "schedule", "placement", "storage", "evaluation", "footprint",
          "carbon", "budget", "metering", "run")
DEVICES = ("auto", "cpu", "cuda")
CARBON_POLICIES = ("delay", "suspend", "threshold")
TRACKERS = ("tensorboard", "mlflow")  # orchestrator/infra/trackers.py


def opt(default: Any, group: str, help: str, *, flag: str | None = None, kind: str = "",
        cli: bool = True) -> Any:
    """A spec field: its default, its group, its `train` option (flag, help) and how a value
    typed by a person is read (kind: count, int_count, or the field's own type)."""
    meta = {"group": group, "help": help, "flag": flag, "kind": kind, "cli": cli}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class RunSpec:
    # -- model
    preset: str = opt("", "model", "Model preset (`models` lists them).", cli=False)
    custom_preset: dict | None = opt(None, "model", "A shape outside the registry (sweeps).",
                                     cli=False)
    init_from: str | None = opt(None, "model", "Start from a Hugging Face or Meta Llama "
                                "directory's weights (its shape when no PRESET is given); the "
                                "data must use its tokenizer.model.")
    # -- data
    data: str = opt("demo", "data", "Prepared dataset: a name under $TALLY_HOME/data or a path.")
    seed: int = opt(0, "data", "Seed for the weights and the data order.")
    # -- batch and schedule
    max_steps: int | None = opt(None, "schedule", "Stop after this many optimiser steps.",
                                kind="int_count")
    tokens: float | None = opt(None, "schedule", "Training tokens for the schedule (2B, 1.4T); "
                               "default the preset's.", kind="count")
    batch_tokens: int | None = opt(None, "schedule", "Global batch in tokens (default the "
                                   "preset's).", kind="int_count")
    micro_batch: int | None = opt(None, "schedule", "Sequences per forward/backward on one "
                                  "worker.")
    lr: float | None = opt(None, "schedule", "Peak learning rate (default the preset's).")
    warmup_steps: int | None = opt(None, "schedule", "Linear warm-up steps (default the "
                                   "preset's).")
    # -- placement and devices
    workers: int = opt(1, "placement", "Ray Train workers (one GPU each on GPU nodes).")
    device: str = opt("auto", "placement", "auto, cpu or cuda.")
    gpu: str | None = opt(None, "placement", OPTION_HELP["gpu"])
    activation_checkpointing: bool = opt(False, "placement", "Recompute each block in backward.")
    compile: bool = opt(False, "placement", "torch.compile each block.")
    max_failures: int = opt(3, "placement", "Worker-group restarts Ray may make.")
    address: str | None = opt(None, "placement", "Ray cluster address (ray://HEAD:10001, auto) "
                              "or a head's Jobs API (http://HEAD:8265); default: a private "
                              "local Ray instance.")
    token_path: str | None = opt(None, "placement", "With --address http://...: the head's "
                                 "token file (default: the one `dashboard` made).")
    dashboard: bool = opt(True, "placement", "Start the local Ray with its dashboard.")
    # -- storage
    storage: str | None = opt(None, "storage", "Checkpoint storage: a path, file://, s3:// or "
                              "gs:// URI (shared on a cluster); default $TALLY_HOME/runs.")
    checkpoint_every: int | None = opt(None, "storage", "Steps between checkpoints (default "
                                       "100).")
    keep_last: int = opt(3, "storage", "Complete checkpoints to keep.")
    # -- evaluation during training (LLaMA §3.7, Figure 2)
    eval_every: int | None = opt(None, "evaluation", "Checkpoint and score --eval-tasks every N "
                                 "steps (and at the last step), sharded over the workers.")
    eval_tasks: str | None = opt(None, "evaluation", "Task files for --eval-every, "
                                 "comma-separated (as `eval --tasks`).")
    # -- footprint assumptions
    pue: float | None = opt(None, "footprint", OPTION_HELP["pue"])
    intensity_kg_per_kwh: float | None = opt(None, "footprint", OPTION_HELP["intensity"],
                                             flag="--intensity")
    region: str | None = opt(None, "footprint", OPTION_HELP["region"])
    price_usd_per_gpu_hour: float | None = opt(None, "footprint", OPTION_HELP["price"],
                                               flag="--price")
    # -- carbon policy
    carbon_aware: bool = opt(False, "carbon", "Time the run by a carbon-intensity forecast "
                             "(--forecast, --policy).")
    forecast: str | None = opt(None, "carbon", "Intensity forecast file (Electricity Maps, "
                               "WattTime, UK National Grid JSON, or time,zone,g_per_kwh CSV).")
    deadline: str | None = opt(None, "carbon", "Finish by: ISO time or a duration from now "
                               "(48h).")
    policy: str = opt("delay", "carbon", "delay (start in the cleanest window), suspend (run "
                      "only in the cleanest hours) or threshold (pause above --threshold).")
    threshold_g_per_kwh: float | None = opt(None, "carbon", "g CO2eq/kWh above which --policy "
                                            "threshold pauses.", flag="--threshold")
    hours: float | None = opt(None, "carbon", "Expected running time in hours, for the carbon "
                              "window (default: the prediction).")
    sim_start: str | None = opt(None, "carbon", "Replay the forecast from this ISO time instead "
                                "of now (demos, tests).")
    sim_speed: float = opt(1.0, "carbon", "With --sim-start: simulated seconds per real second.")
    # -- budgets
    max_usd: float | None = opt(None, "budget", "Budget in dollars: refuse or stop at a "
                                "checkpoint before it is spent.", flag="--max-usd")
    max_tco2: float | None = opt(None, "budget", "Budget in tCO2eq.", flag="--max-tco2")
    max_mwh: float | None = opt(None, "budget", "Budget in MWh of facility energy.",
                                flag="--max-mwh")
    # -- metering
    meter: bool = opt(True, "metering", "Meter energy (NVML, codecarbon), one meter per node.")
    meter_interval_s: float = opt(1.0, "metering", "Energy sampling window in seconds.",
                                  flag="--meter-interval")
    # -- the run itself
    name: str | None = opt(None, "run", "A name for the run.")
    plan_id: str | None = opt(None, "run", "A plan id from `plan`, for plan-vs-actual.",
                              flag="--plan")
    config_extra: dict | None = opt(None, "run", "Merged into the run's config (sweeps).",
                                    cli=False)
    tracker: str | None = opt(None, "run", "Also write the run's metrics to tensorboard (event "
                              "files in the run directory) or mlflow (MLFLOW_TRACKING_URI, "
                              "default sqlite:///$TALLY_HOME/mlflow.db); docs/observability.md.")

    # -- reading and writing ------------------------------------------------------------------
    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict, *, source: str = "the run specification") -> "RunSpec":
        """Exactly the fields of a spec (an unknown key is bad input naming it), each coerced
        and checked by its kind; validated."""
        return cls().updated(d, source=source).validate()

    @classmethod
    def from_json(cls, text: str, *, source: str = "the run specification") -> "RunSpec":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise BadInput(f"{source} is not JSON ({e})") from None
        if not isinstance(d, dict):
            raise BadInput(f"{source} is not a JSON object")
        return cls.from_dict(d, source=source)

    def updated(self, values: dict, *, source: str = "the command line") -> "RunSpec":
        """A copy with `values` (field name -> value as a person wrote it) read in."""
        known = FIELDS
        new = {}
        for key, value in values.items():
            if key not in known:
                raise BadInput(f"{source}: unknown key {key!r}; known: {', '.join(known)}")
            new[key] = coerce(key, value, source)
        return replace(self, **new)

    # -- validation (every range check of a run's options lives here) -------------------------
    def validate(self) -> "RunSpec":
        def need(ok: bool, key: str, what: str) -> None:
            if not ok:
                raise BadInput(f"{flag(key)} {what}, got {getattr(self, key)!r}")

        if not self.preset and not self.custom_preset and not self.init_from:
            raise BadInput("train needs a PRESET (`models` lists them), --init-from DIR or "
                           "--resume RUN_ID")
        need(self.workers >= 1, "workers", "must be >= 1 (one Ray Train worker at least)")
        for key in ("max_steps", "batch_tokens", "micro_batch", "checkpoint_every", "eval_every"):
            v = getattr(self, key)
            need(v is None or v >= 1, key, "must be >= 1")
        need(self.tokens is None or self.tokens > 0, "tokens", "must be > 0")
        need(self.warmup_steps is None or self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
        need(self.lr is None or (math.isfinite(self.lr) and self.lr > 0), "lr", "must be > 0")
        need(self.keep_last >= 1, "keep_last", "must be >= 1 (the newest checkpoint is kept)")
        need(self.max_failures >= 0, "max_failures", "must be >= 0")
        need(self.device in DEVICES, "device", f"is not one of {', '.join(DEVICES)}")
        need(self.meter_interval_s > 0 and math.isfinite(self.meter_interval_s),
             "meter_interval_s", "must be > 0 seconds")
        need(self.sim_speed > 0 and math.isfinite(self.sim_speed), "sim_speed", "must be > 0")
        need(self.policy in CARBON_POLICIES, "policy", f"is not one of {', '.join(CARBON_POLICIES)}")
        need(self.hours is None or self.hours > 0, "hours", "must be > 0")
        need(self.threshold_g_per_kwh is None or 0 <= self.threshold_g_per_kwh <= 5000,
             "threshold_g_per_kwh", "must be between 0 and 5000 g CO2eq/kWh")
        for key in ("max_usd", "max_tco2", "max_mwh"):
            v = getattr(self, key)
            need(v is None or (math.isfinite(v) and v > 0), key, "must be > 0")
        from planners import footprint as fp

        if self.pue is not None:
            fp.check_pue(self.pue)
        if self.intensity_kg_per_kwh is not None:
            fp.check_intensity(self.intensity_kg_per_kwh)
            if self.region:
                raise BadInput("--intensity and --region both set the grid intensity; give one")
        need(self.price_usd_per_gpu_hour is None or self.price_usd_per_gpu_hour >= 0,
             "price_usd_per_gpu_hour", "must be >= 0")
        if self.storage:
            from orchestrator.run.storage import parse

            parse(self.storage)  # BadInput naming what is accepted; no I/O
        if self.gpu:
            from planners.hardware import get_gpu

            get_gpu(self.gpu)  # BadInput naming the known GPUs
        need(self.tracker is None or self.tracker in TRACKERS, "tracker",
             f"is not one of {', '.join(TRACKERS)}")
        if self.tracker:
            from orchestrator.infra.trackers import check_installed

            check_installed(self.tracker)  # one of the trackers, its package installed
        return self

    # -- what a remote job runs ---------------------------------------------------------------
    def for_remote_job(self) -> "RunSpec":
        """The spec a job on the head runs: attached to the cluster it runs on, no dashboard
        of its own, no local token file; the plan stays with the submitting store (its run
        record links it), and so does the tracker (fed from the job's events here); everything
        else, the carbon policy included, goes with the job."""
        return replace(self, address="auto", dashboard=False, token_path=None, plan_id=None,
                       tracker=None)


FIELDS: dict[str, Any] = {f.name: f for f in fields(RunSpec)}
OPTIONS = [f for f in fields(RunSpec) if f.metadata["cli"]]


def flag(key: str) -> str:
    f = FIELDS[key]
    return f.metadata.get("flag") or "--" + key.replace("_", "-")


def default(key: str) -> Any:
    f = FIELDS[key]
    return f.default if f.default is not MISSING else f.default_factory()


def coerce(key: str, value: Any, source: str) -> Any:
    """A value as a person wrote it (command line, run file) -> the field's type."""
    from planners.units import parse_count, parse_int_count

    f = FIELDS[key]
    kind, typ = f.metadata["kind"], str(f.type)
    where = f"{source}: {flag(key)}" if source != "the command line" else flag(key)
    if value is None:
        return None
    if kind == "count":
        return parse_count(value, where)
    if kind == "int_count":
        return parse_int_count(value, where)
    try:
        if typ.startswith("bool"):
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "1", "yes", "on"):
                return True
            if str(value).lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if typ.startswith("int"):
            if isinstance(value, bool) or (isinstance(value, float) and value != int(value)):
                raise ValueError
            return int(value)
        if typ.startswith("float"):
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if typ.startswith("dict"):
            if not isinstance(value, dict):
                raise ValueError
            return value
        if isinstance(value, (dict, list)):
            raise ValueError
        return str(value)
    except (TypeError, ValueError):
        raise BadInput(f"{where} {value!r} is not {_kind_word(typ)}") from None


def _kind_word(typ: str) -> str:
    for prefix, word in (("bool", "true or false"), ("int", "a whole number"),
                         ("float", "a number"), ("dict", "a table")):
        if typ.startswith(prefix):
            return word
    return "a string"


# -- run files ------------------------------------------------------------------------------
def read_run_file(path: str) -> dict:
    """The keys of a TOML or YAML run file (JSON is YAML), group tables flattened."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"--config {path!r} cannot be read ({e.__class__.__name__}: "
                       f"{getattr(e, 'strerror', None) or e})") from None
    if p.suffix.lower() == ".toml":
        import tomllib

        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise BadInput(f"--config {path}: not valid TOML ({e})") from None
    elif p.suffix.lower() in (".yaml", ".yml", ".json"):
        import yaml

        try:
            doc = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise BadInput(f"--config {path}: not valid YAML ({str(e).splitlines()[0]})") from None
    else:
        raise BadInput(f"--config {path!r}: use a .toml, .yaml, .yml or .json run file")
    if not isinstance(doc, dict):
        raise BadInput(f"--config {path}: the file must hold a table of options")
    flat: dict = {}
    for key, value in doc.items():
        key = str(key).replace("-", "_")
        if key in GROUPS and isinstance(value, dict):
            for k, v in value.items():
                k = str(k).replace("-", "_")
                if k not in FIELDS or FIELDS[k].metadata["group"] != key:
                    raise BadInput(f"--config {path}: unknown key {k!r} in [{key}]; known there: "
                                   + ", ".join(n for n, f in FIELDS.items()
                                               if f.metadata["group"] == key))
                flat[k] = v
        elif key in FIELDS:
            flat[key] = value
        else:
            raise BadInput(f"--config {path}: unknown key {key!r}; known: "
                           f"{', '.join(FIELDS)} (or the tables {', '.join(GROUPS)})")
    return flat


def build(base: RunSpec | None, file: str | None, given: dict) -> RunSpec:
    """defaults (or `base`, a stored run's spec) <- the run file <- options given on the
    command line; validated."""
    spec = base or RunSpec()
    if file:
        spec = spec.updated(read_run_file(file), source=f"--config {file}")
    return spec.updated(given).validate()


def stored_settings(config: dict | None) -> dict:
    """A stored run's specification as a plain dict (`config["spec"]`); runs made before
    specifications were stored kept the same fields under `config["request"]`."""
    cfg = config or {}
    return cfg.get("spec") or {k: v for k, v in (cfg.get("request") or {}).items() if k in FIELDS}
