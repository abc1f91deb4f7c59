"""Ray: start or attach a cluster, and run a planned launch on it with Ray Train's
TorchTrainer (one segment per carbon pause), the driver thread beside it."""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING

from model.presets import flops_per_token
from orchestrator.run.driver import Driver, _channel_class, _meters
from orchestrator.run import stopping
from orchestrator.run.launch import peak_flops, run_config
from orchestrator.run.stopping import Stopper
from orchestrator.run.storage import resolve as resolve_storage, run_location
from orchestrator.store import utcnow
from planners.errors import BadInput, RunFailed, RunInterrupted

if TYPE_CHECKING:
    from orchestrator.store.home import Home

log = logging.getLogger(__name__)

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

    _ray_messages_to_stderr()
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
    from orchestrator.infra.dashboard import ensure_token, forget_current_cluster

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


def _ray_messages_to_stderr() -> None:
    """Ray 2.60 prints the raylet's warnings to the driver's stdout ("(raylet) WARNING: 8
    PYTHON worker processes have been started ..."); `--json` promises one JSON document
    there and nothing else, so they go to stderr, where warnings belong."""
    from ray._private import worker

    if getattr(worker.print_to_stdstream, "_tally", False):
        return
    original = worker.print_to_stdstream

    def to_stderr(data, ignore_prefix: bool):  # noqa: ANN001
        return original({**data, "is_err": True}, ignore_prefix)

    to_stderr._tally = True
    worker.print_to_stdstream = to_stderr


def cluster_capacity() -> dict:
    import ray

    res = ray.cluster_resources()
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return {"cpus": int(res.get("CPU", 0)), "gpus": int(res.get("GPU", 0)),
            "memory_bytes": float(res.get("memory", 0)), "nodes": len(nodes)}


def run_on_ray(store, home, spec, preset, plan, dataset, device, assumptions, handle, progress,
               events, on_start, policy, resume: str | None = None, *,
               eval_items: list[dict] | None = None) -> dict:
    """Record the run (or reopen `resume`), then train it with TorchTrainer, one segment per
    carbon pause, the driver thread writing what the workers send. Ctrl-C or SIGTERM: the
    workers checkpoint at their next step and stop; the run ends `interrupted`, resumable.
    `eval_items`: the --eval-tasks items the launcher read and checked (eval/during.py)."""
    from orchestrator.infra import logs

    if resume:
        run = store.get_run(resume)
        run_id = run.id
        store.update_run(run_id, status="running", ended_at=None, message=None)
    else:
        cfg = run_config(spec, plan, assumptions)
        run = store.create_run(preset.name, cfg, name=spec.name, status="running",
                               ray_address=handle.address if handle else None,
                               plan_id=spec.plan_id)
        run_id = run.id
    store.update_run(run_id, started_at=run.started_at or utcnow())
    where = run_location(resolve_storage(spec.storage, home), home, run_id)
    run_dir = where.local_dir  # local files (pids, codecarbon); checkpoints may be in a bucket
    run_dir.mkdir(parents=True, exist_ok=True)
    store.update_run(run_id, storage_path=where.storage_path)
    from orchestrator.run.export import keep_tokenizer

    keep_tokenizer(run_dir, getattr(dataset, "tokenizer_path", None))
    with logs.run_log(run_dir, "driver"):
        log.info("run %s: %s on %d %s worker(s), steps to %d, storage %s", run_id, preset.name,
                 plan.workers, device, plan.max_steps, where.storage_path)
        from orchestrator.infra.trackers import open_tracker

        tracker = None
        if spec.tracker:
            tracker = open_tracker(spec.tracker, run_id, run_dir=run_dir, home=home,
                                   config=store.get_run(run_id).config, run_name=spec.name,
                                   energy_joules=store.run_summaries([run_id])[0]["energy_joules"]
                                   if resume else 0.0)
        status = "failed"
        try:
            summary = _train(store, spec, preset, plan, dataset, device, assumptions, handle,
                             progress, events, on_start, policy, resume, run_id, where,
                             logs.level_name(), tracker, eval_items)
            status = summary["status"]
        except (RunFailed, RunInterrupted) as e:
            status = "failed" if isinstance(e, RunFailed) else "interrupted"
            log.log(logging.ERROR if isinstance(e, RunFailed) else logging.WARNING, "%s", e,
                    extra=logs.FILE_ONLY)
            raise
        finally:
            if tracker is not None:
                tracker.close(status)
        log.info("run %s ended %s", run_id, status)
    return summary


def _train(store, spec, preset, plan, dataset, device, assumptions, handle, progress, events,
           on_start, policy, resume, run_id, where, log_level: str, tracker,
           eval_items: list[dict] | None) -> dict:
    """run_on_ray's segments, the driver thread beside them, and the run's end."""
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from orchestrator.infra.logs import FILE_ONLY, run_log_path
    from orchestrator.run.worker import TrainConfig

    run_dir = where.local_dir
    if on_start:
        on_start({"run_id": run_id, "dashboard_url": handle.dashboard_url if handle else None,
                  "token_path": handle.token_path if handle else None,
                  "launch": plan.as_dict(), "run_dir": str(run_dir),
                  "checkpoints": where.checkpoints})
    if events:
        events({"type": "run", "run_id": run_id, "preset": preset.name,
                "storage_path": where.storage_path, "config": store.get_run(run_id).config})

    # on the driver's node: a worker node lost mid-run must not take the channel with it
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    channel = _channel_class().options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        ray.get_runtime_context().get_node_id(), soft=False)).remote(
        (store.run_summaries([run_id])[0]["last_step"] or 0) if resume else 0)
    tcfg = TrainConfig(
        run_id=run_id, preset=preset.name, model_args=preset.args.__dict__.copy(),
        data=str(dataset.root), checkpoint_dir=where.checkpoints, run_dir=str(run_dir),
        seq_len=plan.seq_len, global_batch=plan.global_batch, micro_batch=plan.micro_batch,
        max_steps=plan.max_steps, total_steps=plan.total_steps, lr=plan.lr,
        warmup_steps=plan.warmup_steps, seed=spec.seed, checkpoint_every=plan.checkpoint_every,
        keep_last=spec.keep_last, device=device,
        activation_checkpointing=spec.activation_checkpointing, compile=spec.compile,
        sync_each_micro_batch=plan.sync_each_micro_batch,
        peak_flops=peak_flops(assumptions, device), flops_per_token=flops_per_token(preset.args, plan.seq_len),
        params=preset.params, extra={"threads": plan.cpus_per_worker}, init_from=spec.init_from,
        eval_every=spec.eval_every, eval_items=eval_items, log_level=log_level)
    meters = None
    if spec.meter:
        meters = _meters(run_id, run_dir, spec, assumptions)
    policy.requested_at = policy.clock.now()
    driver = None
    resources = {"GPU": 1} if device == "cuda" else {"CPU": plan.cpus_per_worker}
    status, message, signum = "failed", None, None
    stopper = Stopper(lambda sig: ray.get(channel.set_command.remote("interrupt"), timeout=10))
    try:
        with stopper, store.driving(run_id):
            start = policy.start_at()
            if start is not None and start[0] > policy.clock.now():
                store.update_run(run_id, status="waiting")
                store.add_event(run_id, "wait", until=start[0].isoformat(), **start[1])
                if events:
                    events({"type": "status", "status": "waiting", "until": start[0].isoformat()})
                    events({"type": "wait", "until": start[0].isoformat(), **start[1]})
                waited = policy.clock.sleep_until(start[0])
                store.update_run(run_id, status="running",
                                 waited_s=store.get_run(run_id).waited_s + waited)
            driver = Driver(store, run_id, channel, plan, run_dir, progress, events, meters,
                            policy, tracker).start()
            while True:  # one segment per pause
                trainer = _trainer_class(TorchTrainer, stopper)(
                    _worker_entry, train_loop_config={**tcfg.as_dict(), "channel": channel},
                    scaling_config=ScalingConfig(num_workers=plan.workers,
                                                 use_gpu=device == "cuda",
                                                 resources_per_worker=resources,
                                                 placement_strategy="PACK"),
                    run_config=RunConfig(name=run_id, storage_path=where.ray_storage,
                                         failure_config=FailureConfig(
                                             max_failures=spec.max_failures),
                                         worker_runtime_env={"env_vars": where.worker_env}))
                began = policy.clock.now()
                stopper.training = True
                trainer.fit()
                stopper.training = False
                driver.poll_once()
                policy.segments.append((began, policy.clock.now()))
                reason = (driver.done or {}).get("reason")
                if reason != "pause":
                    status = {"budget": "budget-stopped", None: "completed",
                              "max_steps": "completed"}.get(reason, "interrupted")
                    break
                step = driver.done["step"]
                resume_at = policy.resume_at(step) or policy.clock.now()
                store.update_run(run_id, status="paused")
                store.add_event(run_id, "pause", step=step,
                                decided_at=driver.commanded_at.isoformat(),
                                until=resume_at.isoformat(),
                                intensity_kg_per_kwh=driver.commanded_kg_per_kwh)
                if events:
                    events({"type": "status", "status": "paused", "until": resume_at.isoformat()})
                policy.clock.sleep_until(resume_at)
                # paused from the decision (the workers checkpoint and stop) to the restart
                paused = (policy.clock.now() - driver.commanded_at).total_seconds()
                store.update_run(run_id, status="running",
                                 paused_s=store.get_run(run_id).paused_s + paused)
                store.add_event(run_id, "resume-after-pause", step=step,
                                intensity_kg_per_kwh=policy.intensity_now())
                ray.get(channel.set_command.remote(None))
                driver.commanded, driver.done = None, None
    except KeyboardInterrupt as e:  # Interrupted (SIGINT, SIGTERM) or a bare KeyboardInterrupt
        status, signum = "interrupted", getattr(e, "signum", signal.SIGINT)
    except Exception as e:  # TrainingFailedError and friends
        message = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else e}"
        log.error("training failed: %s: %s", type(e).__name__, e, extra=FILE_ONLY)
    finally:
        try:
            if driver is not None:
                driver.finish()
            ray.kill(channel)
        except BaseException as e:  # the run's status must still be written
            message = message or f"{type(e).__name__}: {e}"
            status = "failed" if status == "completed" else status
    if status == "interrupted":
        signum = signum or stopper.signum or signal.SIGINT
        last = store.run_summaries([run_id])[0]["last_step"]
        message = (f"stopped by {stopping.name(signum)} at step {last or 0}; resume with "
                   f"`tally train --resume {run_id}`")
    if status == "budget-stopped":
        message = f"stopped at a checkpoint before the budget {policy.budget} was crossed " \
                  f"(spent {policy._spent}); resume with --resume {run_id} and a new budget"
    if meters is not None:
        st = meters.status()
        store.add_event(run_id, "meter", **st)
        for e in st["errors"]:
            log.warning("energy metering: %s", e)
    savings = policy.savings()
    if savings:
        store.add_event(run_id, "carbon", **savings)
    store.update_run(run_id, status=status, ended_at=utcnow(), message=message)
    if events:
        events({"type": "status", "status": status, "message": message})
    summary = store.run_summaries([run_id])[0]
    if status == "interrupted":
        raise RunInterrupted(f"run {run_id} {message}", signum)
    if status == "failed":
        raise RunFailed(f"run {run_id} failed: {message}; log: {run_log_path(run_dir)} (the Ray "
                        "session's own logs: /tmp/ray/session_latest/logs)")
    return summary


def _trainer_class(base, stopper: Stopper):
    """TorchTrainer whose Ctrl-C is ours: Ray Train 2.60 replaces the driver's SIGINT handler
    inside fit() with one that aborts the run without a checkpoint and exits 1
    (DataParallelTrainer._register_sigint_handler). The stopper asks the workers to checkpoint
    and stop instead, and aborts the controller itself only on a second signal."""

    class Trainer(base):
        def _register_sigint_handler(self, controller) -> None:  # noqa: ANN001
            stopper.abort = lambda: ray_get(controller.abort.remote(), timeout=30)

    return Trainer


def ray_get(ref, timeout: float | None = None):  # noqa: ANN001
    import ray

    return ray.get(ref, timeout=timeout)


def _worker_entry(config: dict) -> None:
    import torch

    threads = (config.get("extra") or {}).get("threads")
    if threads:
        torch.set_num_threads(int(threads))
    from orchestrator.run.worker import train_loop

    train_loop(config)
