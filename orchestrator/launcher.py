"""Ray: start or attach a cluster, pre-flight, TorchTrainer, and the driver's side of a run.

The driver (this process) owns the store. Workers run `orchestrator.train.train_loop` and talk
to the driver through a `Channel` actor; a poller thread here drains it, writes steps,
checkpoints, evaluations and energy samples to the store, and drives the progress display.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from model.presets import Preset, UnknownPreset, flops_per_token, get_preset
from orchestrator.home import Home
from orchestrator.store import Store, utcnow
from planners.errors import BadInput, RunFailed

DEFAULT_CHECKPOINT_EVERY = 100


# -- the Ray side ---------------------------------------------------------------------------
def _channel_class():
    import ray

    @ray.remote(num_cpus=0)
    class Channel:
        """Messages from workers to the driver, and one command from the driver to workers."""

        def __init__(self, last_step: int = 0):
            self.items: list[dict] = []
            self.command: str | None = None
            # The newest step whose row the driver holds or will write: a restarted worker
            # group must not resume from a checkpoint past it, or the steps between would
            # never be recorded (a driver killed before writing them, say).
            self.last_step = last_step

        def put(self, items: list[dict]) -> None:
            for item in items:
                if item.get("type") == "step":
                    self.last_step = max(self.last_step, item["step"])
                elif item.get("type") == "resumed":
                    self.last_step = item["step"]
            self.items.extend(items)

        def step_limit(self) -> int:
            return self.last_step

        def drain(self) -> list[dict]:
            out, self.items = self.items, []
            return out

        def set_command(self, command: str | None) -> None:
            self.command = command

        def get_command(self) -> str | None:
            return self.command

    return Channel


@dataclass
class RayHandle:
    address: str | None
    dashboard_url: str | None
    started_here: bool
    token_path: str | None = None


def connect(home: Home, address: str | None, *, dashboard: bool = True) -> RayHandle:
    """Attach to `address`, reuse an initialised Ray, or start a private local instance
    (dashboard on 127.0.0.1, token authentication on)."""
    import ray

    if ray.is_initialized():
        ctx = ray.get_runtime_context()
        return RayHandle(ctx.gcs_address, None, False)
    if address:
        try:
            info = ray.init(address=address, log_to_driver=False, configure_logging=False)
        except Exception as e:  # ConnectionError, RuntimeError on auth, ...
            raise BadInput(f"cannot reach the Ray cluster at {address!r} ({str(e).splitlines()[0]}); "
                           "give --address ray://HEAD:10001, HEAD:6379 or auto") from None
        return RayHandle(address, getattr(info, "dashboard_url", None), False)
    from orchestrator.dashboard import ensure_token, forget_current_cluster

    token = ensure_token(home)
    # a record of a dead `ray start` cluster would cost every run 12 s at shutdown (Ray
    # Train's placement-group cleaner waits on it); drop it, as `ray stop` would
    forget_current_cluster()
    import logging

    # Ray warns on stderr that token auth is on (we turned it on); keep stderr for our lines.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
        logging.ERROR)
    # ray.init() of a new local instance turns token authentication on by default (2.60) and
    # reads the token from RAY_AUTH_TOKEN_PATH: ours, private, instead of ~/.ray/auth_token.
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(token)
    if os.environ.get("RAY_AUTH_MODE", "token").lower() != "token":
        raise BadInput(f"RAY_AUTH_MODE={os.environ['RAY_AUTH_MODE']!r}: tally's embedded Ray "
                       "always uses token authentication; unset RAY_AUTH_MODE")
    info = ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=dashboard,
                    dashboard_host="127.0.0.1", log_to_driver=False, configure_logging=False)
    url = getattr(info, "dashboard_url", None)
    return RayHandle("local", f"http://{url}" if url and "://" not in url else url, True,
                     str(token))


def cluster_capacity() -> dict:
    import ray

    res = ray.cluster_resources()
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return {"cpus": int(res.get("CPU", 0)), "gpus": int(res.get("GPU", 0)),
            "memory_bytes": float(res.get("memory", 0)), "nodes": len(nodes)}


# -- planning a launch ----------------------------------------------------------------------
@dataclass
class LaunchPlan:
    preset: Preset
    workers: int
    device: str
    cpus_per_worker: int
    seq_len: int
    global_batch: int
    micro_batch: int
    accumulation: int
    max_steps: int
    total_steps: int
    warmup_steps: int
    lr: float
    tokens_per_step: int
    checkpoint_every: int
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "preset": self.preset.name, "params": self.preset.params, "workers": self.workers,
            "device": self.device, "cpus_per_worker": self.cpus_per_worker,
            "seq_len": self.seq_len, "global_batch_sequences": self.global_batch,
            "micro_batch": self.micro_batch, "accumulation": self.accumulation,
            "batch_tokens": self.tokens_per_step, "max_steps": self.max_steps,
            "total_steps": self.total_steps, "warmup_steps": self.warmup_steps, "lr": self.lr,
            "tokens": self.max_steps * self.tokens_per_step,
            "checkpoint_every": self.checkpoint_every, "notes": self.notes,
        }


def resolve_preset(name: str, custom: dict | None = None) -> Preset:
    if custom:
        from model.presets import ModelArgs

        fields = dict(custom)
        fields["args"] = ModelArgs(**fields["args"])
        fields["aliases"] = tuple(fields.get("aliases") or ())
        return Preset(**fields)
    try:
        return get_preset(name)
    except UnknownPreset as e:
        raise BadInput(str(e)) from None


def preset_dict(preset: Preset) -> dict:
    from dataclasses import asdict

    return asdict(preset)


def plan_launch(preset: Preset, *, workers: int, device: str, cpus_per_worker: int,
                max_steps: int | None, tokens: float | None, batch_tokens: int | None,
                micro_batch: int | None, lr: float | None, warmup_steps: int | None,
                checkpoint_every: int | None) -> LaunchPlan:
    if workers < 1:
        raise BadInput(f"--workers must be >= 1, got {workers}")
    seq_len = preset.seq_len
    batch_tokens = int(batch_tokens or preset.batch_tokens)
    if batch_tokens < seq_len:
        raise BadInput(f"--batch-tokens {batch_tokens} is smaller than one sequence "
                       f"({seq_len} tokens for {preset.name})")
    global_batch = batch_tokens // seq_len
    if global_batch % workers:  # round the global batch to a multiple of the worker count
        global_batch = max(workers, round(global_batch / workers) * workers)
    per_worker = global_batch // workers
    want = int(micro_batch) if micro_batch else min(per_worker, 8 if device == "cpu" else 16)
    if want < 1:
        raise BadInput(f"--micro-batch must be >= 1, got {micro_batch}")
    micro = max(d for d in range(1, min(want, per_worker) + 1) if per_worker % d == 0)
    notes = []
    if micro_batch and micro != int(micro_batch):
        notes.append(f"micro-batch {micro_batch} -> {micro} to divide {per_worker} sequences per worker")
    tokens_per_step = global_batch * seq_len
    if tokens is not None:
        total = max(1, int(tokens // tokens_per_step))
    elif max_steps is not None:
        total = int(max_steps)
    else:
        total = max(1, preset.train_tokens // tokens_per_step)
    steps = int(max_steps) if max_steps is not None else total
    if steps < 1:
        raise BadInput(f"--max-steps must be >= 1, got {max_steps}")
    warmup = int(warmup_steps) if warmup_steps is not None else preset.warmup_steps
    if warmup >= total:
        warmup = max(1, total // 10)
        notes.append(f"warm-up shortened to {warmup} steps (10% of a {total}-step schedule)")
    every = int(checkpoint_every) if checkpoint_every else min(DEFAULT_CHECKPOINT_EVERY, steps)
    if every < 1:
        raise BadInput(f"--checkpoint-every must be >= 1, got {checkpoint_every}")
    return LaunchPlan(preset, workers, device, cpus_per_worker, seq_len, global_batch, micro,
                      per_worker // micro, steps, total, warmup, float(lr or preset.lr),
                      tokens_per_step, every, notes)


def preflight(preset: Preset, plan: LaunchPlan, capacity: dict, gpu_name: str | None) -> dict:
    """The memory plan against the cluster: BadInput with what it needs when it cannot hold it."""
    from planners.hardware import get_gpu
    from planners.memory import plan_memory, usable_bytes

    mixed = plan.device == "cuda"
    mem = plan_memory(preset.args, seq_len=plan.seq_len, micro_batch=plan.micro_batch,
                      world_size=plan.workers, activation_checkpointing=False,
                      mixed_precision=mixed, grad_accumulation=plan.accumulation > 1)
    need = mem["total_bytes_per_device"]
    gpu = get_gpu(gpu_name or "a100-80gb")
    if plan.device == "cuda":
        if plan.workers > capacity["gpus"]:
            raise BadInput(f"--workers {plan.workers} needs {plan.workers} GPUs; this cluster has "
                           f"{capacity['gpus']}")
        if need > usable_bytes(gpu.memory_bytes):
            raise BadInput(_needs(preset, plan, gpu, capacity, need, "GPU"))
        return mem
    if plan.workers * plan.cpus_per_worker > capacity["cpus"]:
        raise BadInput(f"--workers {plan.workers} needs {plan.workers * plan.cpus_per_worker} "
                       f"CPUs; this cluster has {capacity['cpus']}")
    per_worker_memory = capacity["memory_bytes"] / max(1, plan.workers)
    if need > usable_bytes(per_worker_memory):
        raise BadInput(_needs(preset, plan, gpu, capacity, need, "CPU worker"))
    return mem


def _needs(preset: Preset, plan: LaunchPlan, gpu, capacity: dict, need: float, what: str) -> str:
    from planners.memory import NEVER_FITS, min_devices, plan_memory

    n = min_devices(preset.args, device_memory_bytes=gpu.memory_bytes, seq_len=plan.seq_len,
                    micro_batch=1, activation_checkpointing=True, mixed_precision=True)
    if n == NEVER_FITS:
        return (f"{preset.name} does not fit on {gpu.label} GPUs with FSDP alone at any count "
                f"(it needs tensor or pipeline parallelism, which tally does not do)")
    at_n = plan_memory(preset.args, seq_len=plan.seq_len, micro_batch=1, world_size=n,
                       activation_checkpointing=True, mixed_precision=True)
    return (f"{preset.name} needs at least {n} {gpu.label} GPUs ({-(-n // 8)} 8-GPU nodes): "
            f"{at_n['total_bytes_per_device'] / 1e9:.1f} GB per GPU with FSDP over {n} "
            f"(micro-batch 1, activation checkpointing); this cluster has {capacity['gpus']} GPUs "
            f"and {capacity['memory_bytes'] / 1e9:.0f} GB of memory, and the requested launch "
            f"needs {need / 1e9:.0f} GB per {what} over {plan.workers} worker(s)")


# -- running ----------------------------------------------------------------------------------
@dataclass
class TrainRequest:
    preset: str
    workers: int = 1
    max_steps: int | None = None
    tokens: float | None = None
    batch_tokens: int | None = None
    micro_batch: int | None = None
    lr: float | None = None
    warmup_steps: int | None = None
    checkpoint_every: int | None = None
    keep_last: int = 3
    seed: int = 0
    data: str = "demo"
    device: str = "auto"  # auto | cpu | cuda
    gpu: str | None = None  # catalogue name, for MFU peak and the footprint
    activation_checkpointing: bool = False
    compile: bool = False
    max_failures: int = 3
    address: str | None = None
    token_path: str | None = None  # the Jobs API's token file, for an http:// address
    storage: str | None = None
    name: str | None = None
    resume: str | None = None
    dry_run: bool = False
    plan_id: str | None = None
    pue: float | None = None
    intensity_kg_per_kwh: float | None = None
    region: str | None = None
    price_usd_per_gpu_hour: float | None = None
    meter_interval_s: float = 1.0
    meter: bool = True
    dashboard: bool = True
    # carbon- and cost-awareness (issue 9)
    carbon_aware: bool = False
    forecast: str | None = None
    deadline: str | None = None
    policy: str = "delay"
    threshold_g_per_kwh: float | None = None
    hours: float | None = None  # expected running time, for the carbon window
    max_usd: float | None = None
    max_tco2: float | None = None
    max_mwh: float | None = None
    sim_start: str | None = None  # replay a forecast from this time ...
    sim_speed: float = 1.0  # ... this many times faster than real time
    custom_preset: dict | None = None  # a preset that is not in the registry (sweeps)
    config_extra: dict | None = None  # merged into the run's config (e.g. "sweep")


class Driver:
    """Drains the channel, writes the store, feeds the meters and the progress display."""

    def __init__(self, store: Store, run_id: str, channel, plan: LaunchPlan, run_dir: Path,
                 progress: Callable[[dict], None] | None, events: Callable[[dict], None] | None,
                 meters=None, policy=None):
        self.store, self.run_id, self.channel, self.plan = store, run_id, channel, plan
        self.run_dir, self.progress, self.events, self.meters = run_dir, progress, events, meters
        self.policy, self.commanded, self.t0 = policy, None, time.monotonic()
        self.commanded_at, self.commanded_kg_per_kwh = None, None
        self.lock = threading.Lock()  # the poller thread and the main thread both poll
        self.stop = threading.Event()
        self.last: dict = {}
        self.done: dict | None = None
        self.energy_joules = 0.0
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._loop, name="tally-driver", daemon=True)

    def start(self) -> "Driver":
        self.thread.start()
        return self

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(timeout=60)
        self.poll_once()  # whatever arrived last
        if self.meters is not None:
            self._energy(self.meters.stop())

    def _loop(self) -> None:
        while not self.stop.wait(0.25):
            try:
                self.poll_once()
            except Exception as e:  # never let the display or the store kill the run
                self.errors.append(f"{type(e).__name__}: {e}")

    def poll_once(self) -> None:
        with self.lock:
            self._poll()

    def _poll(self) -> None:
        import ray

        msgs = ray.get(self.channel.drain.remote())
        steps: list[dict] = []
        for m in msgs:
            kind = m.pop("type")
            if kind == "step":
                m["time"] = datetime.utcfromtimestamp(m["time"])
                steps.append(m)
                self.last = m
                continue
            if steps:  # keep order: rows before the message that follows them
                self.store.add_steps(self.run_id, steps)
                steps = []
            self._message(kind, m)
        if steps:
            self.store.add_steps(self.run_id, steps)
            self._emit({"type": "step"}, all_steps=steps)
        if self.meters is not None:
            self._energy(self.meters.poll())
        if self.policy is not None and self.policy.active and self.last and not self.commanded:
            cmd = self.policy.command(self.last["step"], self.energy_joules,
                                      time.monotonic() - self.t0)
            if cmd:
                self.commanded, self.commanded_at = cmd, self.policy.clock.now()
                self.commanded_kg_per_kwh = self.policy.intensity_now()
                self.channel.set_command.remote(cmd)
        if self.progress and self.last:
            self.progress({**self.last, "energy_joules": self.energy_joules})

    def _message(self, kind: str, m: dict) -> None:
        if kind == "hello":
            if self.meters is not None:
                self.meters.add_node(m["node_id"], m.get("gpu_uuids") or [])
        elif kind == "resumed":
            if self.policy is not None and self.policy.guard is not None:
                # time per step is measured from here: worker start-up is not training time
                self.policy.guard.started(self.policy.clock.now(), m["step"])
            removed = self.store.delete_steps_after(self.run_id, m["step"])
            if m["step"] > 0 or removed:
                self.store.add_event(self.run_id, "resume", step=m["step"], path=m.get("path"),
                                     discarded_step_rows=removed)
            for path, reason in m.get("skipped") or []:
                self.store.add_event(self.run_id, "checkpoint-skipped", path=path, reason=reason)
        elif kind == "checkpoint":
            self.store.add_checkpoint(self.run_id, m["step"], m["path"], True)
        elif kind == "eval":
            self.store.add_event(self.run_id, "eval", **m)
        elif kind == "log":
            self.store.add_event(self.run_id, m.get("level", "info"), message=m.get("message"))
            print(f"{m.get('level', 'info')}: {m.get('message')}", file=sys.stderr)
        elif kind == "done":
            self.done = m
        self._emit({"type": kind, **m})

    def _energy(self, samples: list[dict]) -> None:
        if samples:
            self.store.add_energy(self.run_id, samples)
            self.energy_joules += sum(s["joules"] for s in samples)
            self._emit({"type": "energy", "samples": [
                {**s, "time": _utc_iso(s["time"])} for s in samples]})

    def _emit(self, event: dict, all_steps: list[dict] | None = None) -> None:
        if self.events is None:
            return
        if all_steps is not None:
            for s in all_steps:
                # naive UTC -> ISO-8601 with its offset (epoch seconds would need local time)
                self.events({"type": "step", **{k: (_utc_iso(v) if k == "time" else v)
                                                 for k, v in s.items()}})
        else:
            self.events(event)


def _utc_iso(t: datetime) -> str:
    """The store's naive-UTC time as ISO-8601 with +00:00."""
    return t.replace(tzinfo=timezone.utc).isoformat() if t.tzinfo is None else t.isoformat()


def _run_config(req: TrainRequest, plan: LaunchPlan, footprint: dict) -> dict:
    """The run's config: the launch as planned, its footprint assumptions, and the request
    exactly as given (under "request", what --resume rebuilds the run from)."""
    request = {k: v for k, v in req.__dict__.items() if k not in ("dry_run", "resume")}
    cfg = dict(plan.as_dict())
    cfg.update(footprint)
    cfg["request"] = request
    cfg.update(req.config_extra or {})
    cfg["gpus_per_worker"] = 1 if plan.device == "cuda" else 0
    cfg["tokens_planned"] = plan.max_steps * plan.tokens_per_step
    return cfg


def footprint_assumptions(req: TrainRequest, device: str) -> dict:
    """PUE, grid intensity and price for this run, each with where it came from."""
    from planners import footprint as fp
    from planners.grid import lookup
    from planners.hardware import get_gpu

    out: dict[str, Any] = {"pue": fp.check_pue(req.pue) if req.pue is not None else fp.LLAMA_PUE}
    if req.intensity_kg_per_kwh is not None:
        out["intensity_kg_per_kwh"] = fp.check_intensity(req.intensity_kg_per_kwh)
        out["intensity_source"] = "given (--intensity)"
    elif req.region:
        it = lookup(req.region)
        out.update(intensity_kg_per_kwh=it.kg_per_kwh, intensity_source=it.source,
                   region=it.region)
    else:
        out.update(intensity_kg_per_kwh=fp.LLAMA_INTENSITY_KG_PER_KWH,
                   intensity_source="assumed: LLaMA convention (US average, 0.385 kg/kWh)")
    gpu = get_gpu(req.gpu) if req.gpu else None
    out["gpu"] = gpu.name if gpu else None
    if req.price_usd_per_gpu_hour is not None:
        out["price_usd_per_gpu_hour"] = req.price_usd_per_gpu_hour
    elif device == "cuda":
        out["price_usd_per_gpu_hour"] = (gpu or get_gpu("a100-80gb")).price_usd_per_hour
    else:
        out["price_usd_per_gpu_hour"] = None
    return out


def _device(req: TrainRequest, capacity: dict) -> str:
    if req.device not in ("auto", "cpu", "cuda"):
        raise BadInput(f"--device {req.device!r} is not one of auto, cpu, cuda")
    if req.device == "auto":
        return "cuda" if capacity["gpus"] >= 1 else "cpu"
    if req.device == "cuda" and capacity["gpus"] < 1:
        raise BadInput("--device cuda, but this cluster has no GPUs; use --device cpu or "
                       "--address of a GPU cluster")
    return req.device


def _open_data(req: TrainRequest, home: Home, preset: Preset):
    from orchestrator.data import open_dataset

    ds = open_dataset(req.data, home=home, split="train")
    tok = Path(ds.tokenizer_path) if getattr(ds, "tokenizer_path", None) else None
    if tok is not None and not tok.exists():
        raise BadInput(f"the tokenizer of dataset {req.data!r} is missing ({tok}); run "
                       "`cli.py data prepare` again")
    if ds.vocab_size > preset.args.vocab_size:
        raise BadInput(f"dataset {req.data!r} has a {ds.vocab_size}-token vocabulary, larger than "
                       f"{preset.name}'s {preset.args.vocab_size}; prepare it with "
                       f"--vocab-size {preset.args.vocab_size} or pick another preset")
    return ds


def local_capacity() -> dict:
    """This machine, without starting Ray (for --dry-run)."""
    import psutil

    gpus = 0
    try:
        import torch

        gpus = torch.cuda.device_count()
    except Exception:
        pass
    return {"cpus": os.cpu_count() or 1, "gpus": gpus,
            "memory_bytes": float(psutil.virtual_memory().total) * 0.7, "nodes": 1}


def train(store: Store, home: Home, req: TrainRequest, *,
          progress: Callable[[dict], None] | None = None,
          events: Callable[[dict], None] | None = None,
          on_start: Callable[[dict], None] | None = None) -> dict:
    """Plan, pre-flight, record and run one training run; returns the run's summary."""
    if req.resume:
        prior = store.get_run(req.resume)
        cfg = dict(prior.config.get("request") or {})
        keep = {k: getattr(req, k) for k in ("max_steps", "address", "dashboard", "meter",
                                              "max_usd", "max_tco2", "max_mwh", "sim_start",
                                              "sim_speed") if getattr(req, k) is not None}
        req = TrainRequest(**{k: v for k, v in cfg.items() if k in TrainRequest.__dataclass_fields__})
        for k, v in keep.items():
            setattr(req, k, v)
        req.resume = prior.id
    if is_jobs_address(req.address) and not req.dry_run:
        return train_remote(store, home, req, progress=progress, on_start=on_start)
    preset = resolve_preset(req.preset, req.custom_preset)
    import ray

    # The embedded default is this machine: check everything against it before starting Ray,
    # so bad input costs no Ray start-up. An attached cluster is asked for its resources.
    handle = None
    if ray.is_initialized() or (req.address and not req.dry_run):
        handle = connect(home, req.address, dashboard=req.dashboard)
        capacity = cluster_capacity()
    else:
        capacity = local_capacity()
    device = _device(req, capacity)
    cpus = max(1, capacity["cpus"] // req.workers) if device == "cpu" else 1
    plan = plan_launch(preset, workers=req.workers, device=device, cpus_per_worker=cpus,
                       max_steps=req.max_steps, tokens=req.tokens, batch_tokens=req.batch_tokens,
                       micro_batch=req.micro_batch, lr=req.lr, warmup_steps=req.warmup_steps,
                       checkpoint_every=req.checkpoint_every)
    assumptions = footprint_assumptions(req, device)
    if req.dry_run:
        try:
            memory, verdict = preflight(preset, plan, capacity, req.gpu), "fits"
        except BadInput as e:
            memory, verdict = {}, str(e)
        return {"dry_run": True, "launch": plan.as_dict(), "memory": memory,
                "preflight": verdict, "capacity": capacity, "assumptions": assumptions,
                "prediction": predict(preset, plan, req, assumptions)}
    preflight(preset, plan, capacity, req.gpu)
    prediction = predict(preset, plan, req, assumptions) if device == "cuda" else {}
    from orchestrator.carbon_run import RunPolicy

    policy = RunPolicy.from_request(req, assumptions, plan.max_steps, plan.workers, prediction)
    warnings = policy.check_start(prediction)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    dataset = _open_data(req, home, preset)
    if dataset.num_sequences(plan.seq_len) < plan.global_batch:
        raise BadInput(f"dataset {req.data!r} holds {dataset.num_sequences(plan.seq_len)} sequences "
                       f"of {plan.seq_len} tokens, fewer than one global batch ({plan.global_batch})")
    if handle is None:
        handle = connect(home, req.address, dashboard=req.dashboard)
    return _run(store, home, req, preset, plan, dataset, device, assumptions, handle,
                progress, events, on_start, policy)


def predict(preset: Preset, plan: LaunchPlan, req: TrainRequest, assumptions: dict) -> dict:
    """Predicted time and footprint of the launch, through the planner's evaluate mode."""
    from planners.plan import make_plan

    try:
        p = make_plan(model=preset.name, train_tokens=plan.max_steps * plan.tokens_per_step,
                      gpu=req.gpu or "a100-80gb", gpus=plan.workers,
                      pue=assumptions["pue"], intensity=assumptions["intensity_kg_per_kwh"])
    except BadInput as e:
        return {"error": str(e)}
    given = next((o for o in p["options"] if o["label"] == "given"), p["options"][0])
    out = {"on": f"{plan.workers} x {req.gpu or 'a100-80gb'} at the planner's MFU"}
    out.update({k: given.get(k) for k in ("gpu_hours", "days", "cost_usd", "energy_mwh", "tco2eq")})
    return out


def _run(store, home, req, preset, plan, dataset, device, assumptions, handle, progress, events,
         on_start, policy) -> dict:
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from orchestrator.train import TrainConfig

    if req.resume:
        run = store.get_run(req.resume)
        run_id = run.id
        store.update_run(run_id, status="running", ended_at=None, message=None)
    else:
        cfg = _run_config(req, plan, assumptions)
        run = store.create_run(preset.name, cfg, name=req.name, status="running",
                               ray_address=handle.address if handle else None,
                               plan_id=req.plan_id)
        run_id = run.id
    store.update_run(run_id, started_at=run.started_at or utcnow())
    storage = req.storage or str(home.runs)
    run_dir = Path(storage) / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    store.update_run(run_id, storage_path=str(run_dir))
    if on_start:
        on_start({"run_id": run_id, "dashboard_url": handle.dashboard_url if handle else None,
                  "token_path": handle.token_path if handle else None,
                  "launch": plan.as_dict(), "run_dir": str(run_dir)})
    if events:
        events({"type": "run", "run_id": run_id, "preset": preset.name,
                "storage_path": str(run_dir.absolute()), "config": store.get_run(run_id).config})

    # on the driver's node: a worker node lost mid-run must not take the channel with it
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    channel = _channel_class().options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        ray.get_runtime_context().get_node_id(), soft=False)).remote(
        (store.run_summaries([run_id])[0]["last_step"] or 0) if req.resume else 0)
    tcfg = TrainConfig(
        run_id=run_id, preset=preset.name, model_args=preset.args.__dict__.copy(),
        data=str(dataset.root), checkpoint_dir=str(run_dir / "checkpoints"),
        seq_len=plan.seq_len, global_batch=plan.global_batch, micro_batch=plan.micro_batch,
        max_steps=plan.max_steps, total_steps=plan.total_steps, lr=plan.lr,
        warmup_steps=plan.warmup_steps, seed=req.seed, checkpoint_every=plan.checkpoint_every,
        keep_last=req.keep_last, device=device,
        activation_checkpointing=req.activation_checkpointing, compile=req.compile,
        peak_flops=_peak(req, device), flops_per_token=flops_per_token(preset.args, plan.seq_len),
        params=preset.params, extra={"threads": plan.cpus_per_worker})
    meters = None
    if req.meter:
        meters = _meters(run_id, run_dir, req, assumptions)
    policy.requested_at = policy.clock.now()
    start = policy.start_at()
    if start is not None and start[0] > policy.clock.now():
        store.update_run(run_id, status="waiting")
        store.add_event(run_id, "wait", until=start[0].isoformat(), **start[1])
        if events:
            events({"type": "status", "status": "waiting", "until": start[0].isoformat()})
        waited = policy.clock.sleep_until(start[0])
        store.update_run(run_id, status="running", waited_s=store.get_run(run_id).waited_s + waited)
    driver = Driver(store, run_id, channel, plan, run_dir, progress, events, meters,
                    policy).start()
    resources = {"GPU": 1} if device == "cuda" else {"CPU": plan.cpus_per_worker}
    status, message = "failed", None
    try:
        while True:  # one segment per pause
            trainer = TorchTrainer(
                _worker_entry, train_loop_config={**tcfg.as_dict(), "channel": channel},
                scaling_config=ScalingConfig(num_workers=plan.workers, use_gpu=device == "cuda",
                                             resources_per_worker=resources,
                                             placement_strategy="PACK"),
                run_config=RunConfig(name=run_id, storage_path=str(Path(storage).absolute()),
                                     failure_config=FailureConfig(max_failures=req.max_failures)))
            began = policy.clock.now()
            trainer.fit()
            driver.poll_once()
            policy.segments.append((began, policy.clock.now()))
            reason = (driver.done or {}).get("reason")
            if reason != "pause":
                status = {"budget": "budget-stopped", None: "completed",
                          "max_steps": "completed"}.get(reason, "interrupted")
                break
            step = driver.done["step"]
            resume = policy.resume_at(step) or policy.clock.now()
            store.update_run(run_id, status="paused")
            store.add_event(run_id, "pause", step=step, decided_at=driver.commanded_at.isoformat(),
                            until=resume.isoformat(),
                            intensity_kg_per_kwh=driver.commanded_kg_per_kwh)
            if events:
                events({"type": "status", "status": "paused", "until": resume.isoformat()})
            policy.clock.sleep_until(resume)
            # paused from the decision (the workers checkpoint and stop) to the restart
            paused = (policy.clock.now() - driver.commanded_at).total_seconds()
            store.update_run(run_id, status="running",
                             paused_s=store.get_run(run_id).paused_s + paused)
            store.add_event(run_id, "resume-after-pause", step=step,
                            intensity_kg_per_kwh=policy.intensity_now())
            ray.get(channel.set_command.remote(None))
            driver.commanded, driver.done = None, None
    except KeyboardInterrupt:
        status, message = "interrupted", "interrupted by the user (resume with --resume)"
    except Exception as e:  # TrainingFailedError and friends
        message = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else e}"
    finally:
        try:
            driver.finish()
            ray.kill(channel)
        except Exception as e:  # the run's status must still be written
            message = message or f"{type(e).__name__}: {e}"
            status = "failed" if status == "completed" else status
    if status == "budget-stopped":
        message = f"stopped at a checkpoint before the budget {policy.budget} was crossed " \
                  f"(spent {policy._spent}); resume with --resume {run_id} and a new budget"
    if meters is not None:
        st = meters.status()
        store.add_event(run_id, "meter", **st)
        for e in st["errors"]:
            print(f"warning: energy metering: {e}", file=sys.stderr)
    savings = policy.savings()
    if savings:
        store.add_event(run_id, "carbon", **savings)
    store.update_run(run_id, status=status, ended_at=utcnow(), message=message)
    if events:
        events({"type": "status", "status": status, "message": message})
    summary = store.run_summaries([run_id])[0]
    if status == "failed":
        log = run_dir
        raise RunFailed(f"run {run_id} failed: {message}; logs under {log} and the Ray session "
                        "logs (/tmp/ray/session_latest/logs)")
    return summary


def _worker_entry(config: dict) -> None:
    import torch

    threads = (config.get("extra") or {}).get("threads")
    if threads:
        torch.set_num_threads(int(threads))
    from orchestrator.train import train_loop

    train_loop(config)


def _peak(req: TrainRequest, device: str) -> float | None:
    if device != "cuda":
        return None  # measured by each worker: the fp32 matmul peak of its threads
    from planners.hardware import get_gpu

    return get_gpu(req.gpu or "a100-80gb").peak_flops


class NodeMeters:
    """One energy meter per node, started when the node's first worker says hello (workers on
    the same node share it; a restarted worker group finds its meter already running)."""

    def __init__(self, run_id: str, run_dir: Path, interval_s: float, assumptions: dict):
        from orchestrator.meter import check_interval

        check_interval(interval_s)
        self.run_id, self.run_dir, self.interval_s = run_id, run_dir, interval_s
        self.assumptions = assumptions
        self.groups: dict = {}

    def add_node(self, node_id: str, gpu_uuids: list[str]) -> None:
        from orchestrator.meter import start_node_meters

        if node_id in self.groups:
            return
        self.groups[node_id] = start_node_meters(
            self.run_id, str(self.run_dir), [node_id], interval_s=self.interval_s,
            gpu_uuids_by_node={node_id: gpu_uuids} if gpu_uuids else None,
            pue=self.assumptions["pue"],
            intensity_kg_per_kwh=self.assumptions["intensity_kg_per_kwh"])

    def poll(self) -> list[dict]:
        return [row for g in list(self.groups.values()) for row in g.poll()]

    def stop(self) -> list[dict]:
        return [row for g in list(self.groups.values()) for row in g.stop()]

    def status(self) -> dict:
        nodes, errors = {}, []
        for g in self.groups.values():
            st = g.status()
            nodes.update(st.get("nodes", {}))
            errors += st.get("errors", [])
        return {"nodes": nodes, "errors": errors}


def _meters(run_id: str, run_dir: Path, req: TrainRequest, assumptions: dict) -> NodeMeters:
    return NodeMeters(run_id, run_dir, req.meter_interval_s, assumptions)


# -- entry points for the job queue and remote clusters ------------------------------------
def start_job(job: dict, store: Store) -> str:
    """The queue's way to run a job (`schedule run`): blocks until the run ends; raises when it
    fails. The job's `options["train"]` holds TrainRequest fields (workers, max_steps, data...)."""
    opts = job.get("options") or {}
    fields = {k: v for k, v in (opts.get("train") or {}).items()
              if k in TrainRequest.__dataclass_fields__}
    req = TrainRequest(preset=job["preset"], **fields)
    for key in ("max_usd", "max_tco2", "max_mwh"):
        if opts.get(key) is not None:
            setattr(req, key, opts[key])
    if opts.get("policy") in ("suspend", "threshold") and opts.get("forecast"):
        req.carbon_aware, req.policy, req.forecast = True, opts["policy"], opts["forecast"]
        req.deadline, req.hours = opts.get("deadline"), opts.get("hours")
        if opts.get("threshold_g_per_kwh") is not None:
            req.threshold_g_per_kwh = opts["threshold_g_per_kwh"]
    summary = train(store, Home.resolve(), req)
    return summary["id"]


def is_jobs_address(address: str | None) -> bool:
    """http(s)://HEAD:8265 is a dashboard/Jobs API address: submit the run as a Ray job."""
    return bool(address) and address.startswith(("http://", "https://"))


_FLAGS = {  # TrainRequest field -> train option, for the command a remote job runs
    "workers": "--workers", "max_steps": "--max-steps", "tokens": "--tokens",
    "batch_tokens": "--batch-tokens", "micro_batch": "--micro-batch", "lr": "--lr",
    "warmup_steps": "--warmup-steps", "checkpoint_every": "--checkpoint-every",
    "keep_last": "--keep-last", "seed": "--seed", "data": "--data", "device": "--device",
    "gpu": "--gpu", "max_failures": "--max-failures", "storage": "--storage", "name": "--name",
    "pue": "--pue", "intensity_kg_per_kwh": "--intensity", "region": "--region",
    "price_usd_per_gpu_hour": "--price", "meter_interval_s": "--meter-interval",
    "max_usd": "--max-usd", "max_tco2": "--max-tco2", "max_mwh": "--max-mwh",
}
_SWITCHES = {"activation_checkpointing": "--activation-checkpointing", "compile": "--compile"}


def remote_argv(req: TrainRequest) -> list[str]:
    """`cli.py` arguments that run `req` as a job on the cluster it is submitted to."""
    argv = ["train", req.preset, "--address", "auto", "--events", "--no-dashboard"]
    for key, flag in _FLAGS.items():
        value = getattr(req, key)
        if value is not None and value != TrainRequest.__dataclass_fields__[key].default:
            argv += [flag, str(value)]
    argv += [flag for key, flag in _SWITCHES.items() if getattr(req, key)]
    if not req.meter:
        argv.append("--no-meter")
    return argv


def paths_for_head(req: TrainRequest, home: Home) -> TrainRequest:
    """The request with --data and --storage as absolute paths the head can open: the job runs
    in a temporary copy of this checkout with a TALLY_HOME of its own, so a dataset name or a
    relative path would not resolve there. For the head this home's `dashboard` started (same
    machine), a dataset name resolves here and checkpoints default to this home's runs/; for
    any other head both must be given as paths (or a storage URI) valid on its nodes."""
    from dataclasses import replace

    from orchestrator.dashboard import load_head
    from orchestrator.data import open_dataset
    from orchestrator.remote import check_address

    head = load_head(home)
    local = head is not None and head.get("address") == check_address(req.address)
    data, storage = req.data, req.storage
    if local:
        data = str(Path(open_dataset(data, home=home).root).resolve())  # BadInput if missing
        storage = str(Path(storage or home.runs).resolve()) if "://" not in (storage or "") \
            else storage
    else:
        if not Path(data).is_absolute():
            raise BadInput(f"--data {data!r} is not an absolute path; a job on the head at "
                           f"{req.address} has a TALLY_HOME of its own: give the dataset's "
                           "absolute path on the cluster's nodes")
        if not storage or not (Path(storage).is_absolute() or "://" in storage):
            raise BadInput(f"--storage {storage!r} must be given as an absolute path or URI "
                           "shared by the cluster's nodes (s3://BUCKET/tally, /mnt/shared) "
                           "for a job on a remote head: its own TALLY_HOME is temporary")
    return replace(req, data=data, storage=storage)


def train_remote(store: Store, home: Home, req: TrainRequest, *,
                 progress: Callable[[dict], None] | None = None,
                 on_start: Callable[[dict], None] | None = None,
                 python: str | None = None) -> dict:
    """Submit the run through Ray's Jobs API at `req.address` and record what it reports."""
    from orchestrator.remote import _client, defaults_for, run_remote

    preset = resolve_preset(req.preset)
    if req.resume:
        raise BadInput("--resume with an http:// --address is not supported; resume on the "
                       "cluster with `train --resume` in a job of its own")
    token_path, python = defaults_for(req.address, home, req.token_path, python)
    _client(req.address, token_path)  # unreachable, 401, 403: BadInput before any run exists
    req = paths_for_head(req, home)
    request = {k: v for k, v in req.__dict__.items() if k not in ("dry_run", "resume")}
    run = store.create_run(preset.name, {"preset": preset.name, "workers": req.workers,
                                         "remote": True, "request": request},
                           name=req.name, status="created", ray_address=req.address)
    if on_start:
        on_start({"run_id": run.id, "dashboard_url": req.address, "token_path": token_path,
                  "launch": None, "run_dir": None})
    last = {"energy_joules": 0.0}

    def seen(ev: dict) -> None:
        if ev.get("type") == "energy":
            last["energy_joules"] += sum(s["joules"] for s in ev.get("samples", [ev]))
        if ev.get("type") == "step" and progress:
            progress({**ev, "energy_joules": last["energy_joules"]})

    root = Path(__file__).resolve().parent.parent
    try:
        result = run_remote(store, run.id, req.address, remote_argv(req), token_path=token_path,
                            working_dir=root, python=python, on_event=seen)
    except BaseException as e:  # refused submission, Ctrl-C (run_remote stopped the job), ...
        interrupted = isinstance(e, KeyboardInterrupt)
        store.update_run(run.id, status="interrupted" if interrupted else "failed",
                         ended_at=utcnow(), message=f"{type(e).__name__}: {e}"[:500])
        raise
    summary = store.run_summaries([run.id])[0]
    if summary["status"] == "failed":
        raise RunFailed(f"remote run {run.id} (job {result['job_id']}) failed: "
                        f"{summary['message']}; `ray job logs {result['job_id']}` shows its log")
    return summary


def train_run(store: Store, preset: Preset, tokens: int, *, data: str, seed: int,
              config_extra: dict, name: str, home: Home | None = None) -> str:
    """One run of a scaling-law sweep: `preset` may be a shape outside the registry; the
    schedule spans exactly `tokens` (Chinchilla: the cosine cycle matches the run). `home`:
    the CLI's (--home), else $TALLY_HOME."""
    steps = max(1, int(tokens) // preset.batch_tokens)
    req = TrainRequest(preset=preset.name, custom_preset=preset_dict(preset), tokens=tokens,
                       max_steps=steps, batch_tokens=preset.batch_tokens, data=data, seed=seed,
                       name=name, dashboard=False, config_extra=config_extra,
                       checkpoint_every=max(steps, 1))
    return train(store, home or Home.resolve(), req)["id"]
