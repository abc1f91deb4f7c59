"""Running one training run from its specification: local (the embedded default or an
attached cluster) or through a head's Jobs API; the queue's and the sweep's entries."""

from __future__ import annotations

import sys
from typing import Callable

from model.presets import Preset
from orchestrator.store.home import Home
from orchestrator.store import Store
from orchestrator.run.launch import (_device, _open_data, fit_to_gpu, footprint_assumptions,
                                     gpus_needed, local_capacity, plan_launch, predict,
                                     preflight, preset_dict, resolve_preset)
from orchestrator.run.runtime import cluster_capacity, connect, run_on_ray
from orchestrator.run.spec import FIELDS, RunSpec, stored_settings
from orchestrator.run.storage import resolve as resolve_storage
from planners.assumptions import gpu_of
from planners.errors import BadInput

def stored_spec(store: Store, run_id: str) -> RunSpec:
    """The specification a stored run was started with (what --resume starts from); runs made
    before specifications were stored kept the same fields under "request"."""
    run = store.get_run(run_id)  # BadInput for an unknown id
    cfg = run.config or {}
    if cfg.get("remote"):
        raise BadInput(f"run {run.id} ran as a job on {run.ray_address}; resume it there "
                       "(`train --resume` in a job of its own)")
    saved = stored_settings(cfg)
    if not saved:
        raise BadInput(f"run {run.id} has no stored specification to resume from")
    return RunSpec.from_dict(saved, source=f"run {run.id}'s stored specification")


def train(store: Store, home: Home, spec: RunSpec, *, resume: str | None = None,
          dry_run: bool = False, progress: Callable[[dict], None] | None = None,
          events: Callable[[dict], None] | None = None,
          on_start: Callable[[dict], None] | None = None) -> dict:
    """Plan, pre-flight, record and run one training run; returns the run's summary.
    `resume`: a run id whose newest complete checkpoint the run continues from (`spec` is
    then that run's stored spec with whatever the user changed)."""
    spec = spec.validate()
    if resume is not None:
        resume = store.get_run(resume).id
    if spec.plan_id is not None:
        store.get_plan(spec.plan_id)  # BadInput for an unknown id, before anything starts
    storage = resolve_storage(spec.storage, home)  # BadInput on a bad --storage, no I/O
    if is_jobs_address(spec.address) and not dry_run:
        from orchestrator.run.remote import train_remote

        if resume is not None:
            raise BadInput("--resume with an http:// --address is not supported; resume on the "
                           "cluster with `train --resume` in a job of its own")
        return train_remote(store, home, spec, progress=progress, on_start=on_start)
    if spec.init_from and resume is None:  # shape and tokenizer checked against the directory
        from orchestrator.run.init_from import preflight as init_preflight

        preset = init_preflight(spec, home)  # fills in spec.preset (and custom_preset)
    else:
        preset = resolve_preset(spec.preset, spec.custom_preset)
    from orchestrator.eval.during import items_for_run

    eval_items = items_for_run(spec)  # --eval-tasks files read and checked before Ray starts
    import ray

    # The embedded default is this machine: check everything against it before starting Ray,
    # so bad input costs no Ray start-up. An attached cluster is asked for its resources.
    handle = None
    if ray.is_initialized() or (spec.address and not dry_run):
        handle = connect(home, spec.address, dashboard=spec.dashboard)
        capacity = cluster_capacity()
    else:
        capacity = local_capacity()
    if dry_run:
        return dry_run_launch(preset, spec, capacity)
    launch = plan_for(preset, spec, capacity)
    plan, device, assumptions = launch["plan"], launch["device"], launch["assumptions"]
    if assumptions.get("gpu_warning"):
        print(f"warning: {assumptions['gpu_warning']}", file=sys.stderr)
    preflight(preset, plan, capacity, gpu_of(assumptions))
    storage.check()  # the bucket exists and takes writes, before Ray starts
    prediction = predict(preset, plan, assumptions) if device == "cuda" else {}
    from orchestrator.carbon.policy import RunPolicy

    policy = RunPolicy.from_request(spec, assumptions, plan.max_steps, plan.workers, prediction)
    for w in policy.check_start(prediction):
        print(f"warning: {w}", file=sys.stderr)
    dataset = _open_data(spec, home, preset)
    if dataset.num_sequences(plan.seq_len) < plan.global_batch:
        raise BadInput(f"dataset {spec.data!r} holds {dataset.num_sequences(plan.seq_len)} sequences "
                       f"of {plan.seq_len} tokens, fewer than one global batch ({plan.global_batch})")
    if handle is None:
        handle = connect(home, spec.address, dashboard=spec.dashboard)
    return run_on_ray(store, home, spec, preset, plan, dataset, device, assumptions, handle,
                      progress, events, on_start, policy, resume, eval_items=eval_items)


def plan_for(preset: Preset, spec: RunSpec, capacity: dict, device: str | None = None) -> dict:
    """The launch of `spec` on a cluster of `capacity`: {"plan", "device", "assumptions"}."""
    device = device or _device(spec, capacity)
    cpus = max(1, capacity["cpus"] // spec.workers) if device == "cpu" else 1
    plan = plan_launch(preset, workers=spec.workers, device=device, cpus_per_worker=cpus,
                       max_steps=spec.max_steps, tokens=spec.tokens,
                       batch_tokens=spec.batch_tokens, micro_batch=spec.micro_batch, lr=spec.lr,
                       warmup_steps=spec.warmup_steps, checkpoint_every=spec.checkpoint_every,
                       activation_checkpointing=spec.activation_checkpointing)
    assumptions = footprint_assumptions(spec, device, capacity)
    gpu = gpu_of(assumptions)
    if device == "cuda" and gpu is not None:
        plan = fit_to_gpu(preset, plan, gpu, choose_micro_batch=spec.micro_batch is None)
    return {"plan": plan, "device": device, "assumptions": assumptions}


def dry_run_launch(preset: Preset, spec: RunSpec, capacity: dict) -> dict:
    """What `train --dry-run` shows: the launch on this cluster when it fits; when it does not
    and no GPUs were asked for, the launch on the GPU cluster its pre-flight says is needed."""
    launch = plan_for(preset, spec, capacity)
    plan, assumptions = launch["plan"], launch["assumptions"]
    out = {"dry_run": True, "capacity": capacity}
    try:
        memory, verdict = preflight(preset, plan, capacity, gpu_of(assumptions)), "fits"
    except BadInput as e:
        memory, verdict = {}, str(e)
        gpu_asked = spec.gpu or spec.device == "cuda"
        if launch["device"] == "cpu" and spec.device == "auto" and not gpu_asked:
            from dataclasses import replace

            from planners.hardware import LLAMA_GPU, get_gpu
            from planners.memory import NEVER_FITS

            n = gpus_needed(preset, plan.seq_len, get_gpu(LLAMA_GPU))
            if n != NEVER_FITS:
                needed = replace(spec, workers=max(n, spec.workers), micro_batch=1,
                                 activation_checkpointing=True)
                launch = plan_for(preset, needed, {**capacity, "gpus": needed.workers}, "cuda")
                plan, assumptions = launch["plan"], launch["assumptions"]
                verdict = (f"does not fit this machine ({verdict}); shown on the "
                           f"{needed.workers} x {assumptions['gpu']} cluster it needs")
                try:
                    memory = preflight(preset, plan, {**capacity, "gpus": needed.workers},
                                       gpu_of(assumptions))
                except BadInput as e:  # e.g. gradient accumulation's unsharded gradients
                    verdict += f"; there: {e}"
    out.update(launch=plan.as_dict(), memory=memory, preflight=verdict,
               assumptions=assumptions, prediction=predict(preset, plan, assumptions))
    return out


def start_job(job: dict, store: Store) -> str:
    """The queue's way to run a job (`schedule run`): blocks until the run ends; raises when it
    fails. A job holds its run's specification (`options["spec"]`); jobs queued before
    specifications existed hold RunSpec fields under `options["train"]` and the carbon and
    budget options beside them."""
    opts = job.get("options") or {}
    if opts.get("spec"):
        spec = RunSpec.from_dict(opts["spec"], source=f"job {job.get('id')}'s specification")
    else:
        legacy = {k: v for k, v in (opts.get("train") or {}).items() if k in FIELDS}
        legacy.update({k: opts[k] for k in ("max_usd", "max_tco2", "max_mwh")
                       if opts.get(k) is not None})
        if opts.get("policy") in ("suspend", "threshold") and opts.get("forecast"):
            legacy.update(carbon_aware=True, policy=opts["policy"], forecast=opts["forecast"],
                          deadline=opts.get("deadline"), hours=opts.get("hours"),
                          threshold_g_per_kwh=opts.get("threshold_g_per_kwh"))
        spec = RunSpec.from_dict({"preset": job["preset"], **legacy})
    return train(store, Home.resolve(), spec)["id"]


def is_jobs_address(address: str | None) -> bool:
    """http(s)://HEAD:8265 is a dashboard/Jobs API address: submit the run as a Ray job."""
    return bool(address) and address.startswith(("http://", "https://"))


def train_run(store: Store, preset: Preset, tokens: int, *, data: str, seed: int,
              config_extra: dict, name: str, home: Home | None = None) -> str:
    """One run of a scaling-law sweep: `preset` may be a shape outside the registry; the
    schedule spans exactly `tokens` (Chinchilla: the cosine cycle matches the run). `home`:
    the CLI's (--home), else $TALLY_HOME."""
    steps = max(1, int(tokens) // preset.batch_tokens)
    spec = RunSpec(preset=preset.name, custom_preset=preset_dict(preset), tokens=tokens,
                   max_steps=steps, batch_tokens=preset.batch_tokens, data=data, seed=seed,
                   name=name, dashboard=False, config_extra=config_extra,
                   checkpoint_every=max(steps, 1))
    return train(store, home or Home.resolve(), spec)["id"]
