"""Planning a launch, pure: the batch and schedule, the pre-flight against the cluster's
capacity, the footprint assumptions and the predicted time and footprint. No Ray here: every
check runs before Ray starts (the embedded default is this machine)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from orchestrator.store.home import Home
from orchestrator.run.spec import RunSpec

from model.presets import Preset, UnknownPreset, get_preset
from planners.errors import BadInput

DEFAULT_CHECKPOINT_EVERY = 100


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
    activation_checkpointing: bool = False
    # reduce-scatter the gradients after every micro-batch instead of only the last: FSDP2
    # otherwise keeps each worker's unsharded fp32 gradients between micro-batches
    sync_each_micro_batch: bool = False

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
            "activation_checkpointing": self.activation_checkpointing,
            "sync_each_micro_batch": self.sync_each_micro_batch,
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
                checkpoint_every: int | None,
                activation_checkpointing: bool = False) -> LaunchPlan:
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
                      tokens_per_step, every, notes, activation_checkpointing)


def launch_memory(preset: Preset, plan: LaunchPlan) -> dict:
    """The memory plan of one launch (planners/memory.py): what each worker holds at its peak."""
    from planners.memory import plan_memory

    return plan_memory(preset.args, seq_len=plan.seq_len, micro_batch=plan.micro_batch,
                       world_size=plan.workers, activation_checkpointing=plan.activation_checkpointing,
                       mixed_precision=plan.device == "cuda",
                       grad_accumulation=plan.accumulation > 1 and not plan.sync_each_micro_batch)


def fit_to_gpu(preset: Preset, plan: LaunchPlan, gpu, *, choose_micro_batch: bool) -> LaunchPlan:
    """The launch adjusted to the GPU's usable memory (less the stated margin): the largest
    divisor of each worker's sequences (up to the planned micro-batch) when
    `choose_micro_batch` (no --micro-batch given), and, with gradient accumulation, gradients
    reduce-scattered after every micro-batch when FSDP2's unsharded accumulated gradients do not
    fit. Unchanged when nothing fits (the pre-flight then says what the launch needs)."""
    from dataclasses import replace

    from planners.memory import usable_bytes

    cap = usable_bytes(gpu.memory_bytes)
    per_worker = plan.global_batch // plan.workers
    micros = range(plan.micro_batch, 0, -1) if choose_micro_batch else [plan.micro_batch]
    for micro in micros:
        if per_worker % micro:
            continue
        for sync in (False, True) if micro < per_worker else (False,):
            trial = replace(plan, micro_batch=micro, accumulation=per_worker // micro,
                            sync_each_micro_batch=sync)
            if launch_memory(preset, trial)["total_bytes_per_device"] > cap:
                continue
            notes = list(plan.notes)
            if micro != plan.micro_batch:
                notes.append(f"micro-batch {micro}: the largest that fits {gpu.label} memory")
            if sync:
                notes.append("gradients reduce-scattered after every micro-batch: the unsharded "
                             f"accumulated gradients would not fit {gpu.label} memory")
            return replace(trial, notes=notes)
    return plan


def preflight(preset: Preset, plan: LaunchPlan, capacity: dict, gpu) -> dict:
    """The memory plan against the cluster: BadInput with what it needs when it cannot hold it.
    `gpu`: the launch's GPU (planners.hardware.GPU), None for CPU workers."""
    from planners.memory import usable_bytes

    mem = launch_memory(preset, plan)
    need = mem["total_bytes_per_device"]
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
        raise BadInput(_needs(preset, plan, None, capacity, need, "CPU worker"))
    return mem


def gpus_needed(preset: Preset, seq_len: int, gpu) -> int:
    """The fewest GPUs of type `gpu` that hold `preset` with FSDP (micro-batch 1, activation
    checkpointing); NEVER_FITS when no count does."""
    from planners.memory import min_devices

    return min_devices(preset.args, device_memory_bytes=gpu.memory_bytes, seq_len=seq_len,
                       micro_batch=1, activation_checkpointing=True, mixed_precision=True)


def _needs(preset: Preset, plan: LaunchPlan, gpu, capacity: dict, need: float, what: str) -> str:
    from planners.hardware import LLAMA_GPU, get_gpu
    from planners.memory import NEVER_FITS, plan_memory

    gpu = gpu or get_gpu(LLAMA_GPU)
    n = gpus_needed(preset, plan.seq_len, gpu)
    if n == NEVER_FITS:
        return (f"{preset.name} does not fit on {gpu.label} GPUs with FSDP alone at any count "
                f"(it needs tensor or pipeline parallelism, which tally does not do)")
    at_n = plan_memory(preset.args, seq_len=plan.seq_len, micro_batch=1, world_size=n,
                       activation_checkpointing=True, mixed_precision=True)
    nodes = -(-n // 8)
    return (f"{preset.name} needs at least {n} {gpu.label} GPUs ({nodes} 8-GPU "
            f"node{'s' if nodes > 1 else ''}): "
            f"{at_n['total_bytes_per_device'] / 1e9:.1f} GB per GPU with FSDP over {n} "
            f"(micro-batch 1, activation checkpointing); this cluster has {capacity['gpus']} GPUs "
            f"and {capacity['memory_bytes'] / 1e9:.0f} GB of memory, and the requested launch "
            f"needs {need / 1e9:.0f} GB per {what} over {plan.workers} worker(s)")


def run_config(spec: RunSpec, plan: LaunchPlan, footprint: dict) -> dict:
    """The run's config: the launch as planned, its footprint assumptions, and the run's
    specification exactly as given (under "spec", what --resume starts from)."""
    cfg = dict(plan.as_dict())
    cfg.update(footprint)
    cfg["spec"] = spec.to_dict()
    cfg.update(spec.config_extra or {})
    cfg["gpus_per_worker"] = 1 if plan.device == "cuda" else 0
    cfg["tokens_planned"] = plan.max_steps * plan.tokens_per_step
    return cfg


def footprint_assumptions(spec: RunSpec, device: str, capacity: dict) -> dict:
    """GPU, PUE, grid intensity and price for this launch, each with where it came from."""
    from planners.assumptions import resolve

    return resolve(gpu=spec.gpu, detected_gpu=capacity.get("gpu_name"), device=device,
                   pue=spec.pue, intensity_kg_per_kwh=spec.intensity_kg_per_kwh,
                   region=spec.region, price_usd_per_gpu_hour=spec.price_usd_per_gpu_hour)


def _device(spec: RunSpec, capacity: dict) -> str:
    if spec.device not in ("auto", "cpu", "cuda"):
        raise BadInput(f"--device {spec.device!r} is not one of auto, cpu, cuda")
    if spec.device == "auto":
        return "cuda" if capacity["gpus"] >= 1 else "cpu"
    if spec.device == "cuda" and capacity["gpus"] < 1:
        raise BadInput("--device cuda, but this cluster has no GPUs; use --device cpu or "
                       "--address of a GPU cluster")
    return spec.device


def _open_data(spec: RunSpec, home: Home, preset: Preset):
    from orchestrator.data import open_dataset

    ds = open_dataset(spec.data, home=home, split="train")
    tok = Path(ds.tokenizer_path) if getattr(ds, "tokenizer_path", None) else None
    if tok is not None and not tok.exists():
        raise BadInput(f"the tokenizer of dataset {spec.data!r} is missing ({tok}); run "
                       "`cli.py data prepare` again")
    if ds.vocab_size > preset.args.vocab_size:
        raise BadInput(f"dataset {spec.data!r} has a {ds.vocab_size}-token vocabulary, larger than "
                       f"{preset.name}'s {preset.args.vocab_size}; prepare it with "
                       f"--vocab-size {preset.args.vocab_size} or pick another preset")
    return ds


def local_capacity() -> dict:
    """This machine, without starting Ray: CPUs, memory, and its GPUs as NVML names them."""
    import psutil

    from orchestrator.energy.nvml import device_names

    names = device_names()
    return {"cpus": os.cpu_count() or 1, "gpus": len(names),
            "gpu_name": names[0] if names else None,
            "memory_bytes": float(psutil.virtual_memory().total) * 0.7, "nodes": 1}


def predict(preset: Preset, plan: LaunchPlan, assumptions: dict) -> dict:
    """Predicted time and footprint of a GPU launch, through the planner's evaluate mode."""
    from planners.plan import make_plan

    if not assumptions.get("gpu"):
        return {}
    try:
        p = make_plan(model=preset.name, train_tokens=plan.max_steps * plan.tokens_per_step,
                      gpu=assumptions["gpu"], gpus=plan.workers, pue=assumptions["pue"],
                      intensity=assumptions["intensity_kg_per_kwh"],
                      price=assumptions.get("price_usd_per_gpu_hour"))
    except BadInput as e:
        return {"error": str(e)}
    given = next((o for o in p["options"] if o["label"] == "given"), p["options"][0])
    out = {"on": f"{plan.workers} x {assumptions['gpu']} at the planner's MFU"}
    out.update({k: given.get(k) for k in ("gpu_hours", "days", "cost_usd", "energy_mwh", "tco2eq")})
    return out


def peak_flops(assumptions: dict, device: str) -> float | None:
    """The MFU denominator per worker: the GPU's dense bf16 peak; None on CPU (each worker
    measures the fp32 matmul peak of its threads)."""
    from planners.assumptions import gpu_of

    gpu = gpu_of(assumptions)
    return gpu.peak_flops if device == "cuda" and gpu else None
