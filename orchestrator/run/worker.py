"""The per-worker training loop: FSDP2, AdamW, LLaMA's schedule, DCP checkpoints, metrics.

Runs inside each Ray Train worker (`train_loop(config)`), never opens the store: rank 0 sends
step metrics, checkpoints and evaluations to the driver through a `Channel` actor, and reads the
driver's commands (stop at the next checkpoint) from it. Recipe: LLaMA §2.3 — AdamW (0.9, 0.95),
weight decay 0.1 on 2-D weights, clipping 1.0, linear warm-up then cosine decay to 10%.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)
LOG_EVERY = 10  # rank 0 logs every this many steps (and the last), every rank at debug


@dataclass
class TrainConfig:
    run_id: str
    preset: str
    model_args: dict
    data: str  # prepared dataset directory
    checkpoint_dir: str  # a local path or a storage URI (s3://, gs://: see storage.py)
    seq_len: int
    global_batch: int  # sequences per optimiser step, across all workers
    micro_batch: int  # sequences per forward/backward on one worker
    max_steps: int  # stop after this step (this invocation)
    total_steps: int  # the schedule's horizon (warm-up + cosine)
    lr: float
    warmup_steps: int
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 100
    keep_last: int = 3
    device: str = "cpu"  # cpu | cuda
    activation_checkpointing: bool = False
    compile: bool = False
    sync_each_micro_batch: bool = False  # reduce-scatter gradients after every micro-batch
    peak_flops: float | None = None  # per worker; None: measure the fp32 matmul peak (CPU)
    eval_batches: int = 4
    flops_per_token: int = 0
    params: int = 0
    extra: dict = field(default_factory=dict)
    init_from: str | None = None  # a Hugging Face or Meta directory: the weights of step 0
    run_dir: str = ""  # this run's local directory (pid files); "": checkpoint_dir's parent
    eval_every: int | None = None  # checkpoint and score eval_items every N steps
    eval_items: list | None = None  # orchestrator/eval items as dicts, read by the driver
    log_level: str = "warning"  # the CLI's --log-level (the run log keeps info and above)

    def as_dict(self) -> dict:
        return asdict(self)


def lr_at(step: int, *, peak: float, warmup: int, total: int, min_ratio: float) -> float:
    """Learning rate for 1-based `step`: linear warm-up, cosine decay to min_ratio*peak, flat."""
    if step <= warmup:  # warm-up
        return peak * step / max(1, warmup)
    if step >= total:  # after the horizon
        return peak * min_ratio
    progress = (step - warmup) / max(1, total - warmup)  # cosine decay
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def measure_matmul_peak(seconds: float = 0.5, n: int = 1024) -> float:
    """Best fp32 matmul FLOP/s on this worker's threads: the CPU 'peak' for MFU."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        for _ in range(4):
            torch.mm(a, b)
        best = max(best, 4 * 2 * n**3 / (time.perf_counter() - t))
    return best


def memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    import psutil

    return int(psutil.Process().memory_info().rss)


def apply_fsdp(model, *, mixed_precision: bool, mesh=None):
    """FSDP2 per transformer block and at the root (embeddings, final norm, output); with mixed
    precision, bf16 parameters in compute and fp32 gradient reduction. The memory plan
    (planners/memory.py) is held to PyTorch's tracker of exactly this wrapping
    (tests/unit/test_memory_tracker.py)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    kwargs: dict = {"mesh": mesh} if mesh is not None else {}
    if mixed_precision:
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16,
                                                   reduce_dtype=torch.float32)
    for block in model.layers:
        fully_shard(block, **kwargs)
    fully_shard(model, **kwargs)
    return model


def build_model(cfg: TrainConfig, device: torch.device):
    """LLaMA on `device`, sharded with FSDP2 per block and at the root."""
    from model.llama import Transformer
    from model.presets import ModelArgs

    args = ModelArgs(**cfg.model_args)
    big = cfg.params > 2e9  # too big to build whole on one host: build on meta, init shards
    torch.manual_seed(cfg.seed)
    if big:
        with torch.device("meta"):
            model = Transformer(args, activation_checkpointing=cfg.activation_checkpointing)
    else:  # whole and seeded, so every world size starts from the same weights
        model = Transformer(args, activation_checkpointing=cfg.activation_checkpointing)
        model.init_weights(cfg.seed)
    if dist.is_initialized():
        apply_fsdp(model, mixed_precision=cfg.device == "cuda")
    if big:
        model.to_empty(device=device)
        model.init_weights(cfg.seed)
    else:
        model.to(device)
    if cfg.compile:
        for block in model.layers:
            block.compile()
    return model


class _Reporter:
    """Rank 0's link to the driver: fire-and-forget messages, command polling."""

    def __init__(self, channel, rank: int):
        self.channel, self.rank = channel, rank

    def send(self, kind: str, **payload: Any) -> None:
        if self.channel is not None:
            self.channel.put.remote([{"type": kind, **payload}])

    def command(self) -> str | None:
        if self.channel is None:
            return None
        import ray

        return ray.get(self.channel.get_command.remote())


def _all_mean(x: float, device: torch.device) -> float:
    if not dist.is_initialized():
        return x
    t = torch.tensor([x], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()


def _all_max(x: float, device: torch.device) -> float:
    if not dist.is_initialized():
        return x
    t = torch.tensor([x], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def _broadcast(obj: Any) -> Any:
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def evaluate(model, cfg: TrainConfig, device: torch.device, rank: int, world: int) -> float | None:
    """Mean loss over the first eval_batches*micro_batch*world sequences of the validation split."""
    from orchestrator.data import open_dataset
    from planners.errors import BadInput

    try:
        val = open_dataset(cfg.data, split="val")
    except BadInput:  # no validation split: nothing to evaluate
        return None
    n = val.num_sequences(cfg.seq_len)
    per_rank = cfg.eval_batches * cfg.micro_batch
    if n < per_rank * world:
        per_rank = max(1, n // world)
    if n == 0:
        return None
    model.eval()
    total = 0.0
    idx = list(range(rank * per_rank, (rank + 1) * per_rank))
    chunks = [idx[i:i + cfg.micro_batch] for i in range(0, len(idx), cfg.micro_batch)]
    with torch.no_grad():
        for chunk in chunks:
            batch = torch.from_numpy(val.get_batch(chunk, cfg.seq_len)).to(device)
            total += float(model(batch[:, :-1], batch[:, 1:]).item())
    model.train()
    return _all_mean(total / len(chunks), device)


def train_loop(config: dict) -> None:
    """The Ray Train worker function: the loop below, appending to the run's log (rank in each
    line); an exception is logged there with its traceback before Ray sees it."""
    import ray.train

    from orchestrator.infra.logs import run_log

    rank = ray.train.get_context().get_world_rank()
    if not config.get("run_dir"):
        return _train_loop(config)
    with run_log(config["run_dir"], f"rank {rank}", config.get("log_level")):
        try:
            _train_loop(config)
        except Exception:
            log.exception("rank %d failed", rank)
            raise


def _train_loop(config: dict) -> None:
    import ray.train

    from orchestrator.run import checkpoint as ckpt
    from orchestrator.data import Sampler, open_dataset
    from orchestrator.data.loader import Prefetcher

    channel = config.pop("channel", None)
    cfg = TrainConfig(**config)
    ctx = ray.train.get_context()
    rank, world, local_rank = ctx.get_world_rank(), ctx.get_world_size(), ctx.get_local_rank()
    if cfg.device == "cuda":
        import ray.train.torch

        device = ray.train.torch.get_device()
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    reporter = _Reporter(channel if rank == 0 else None, rank)
    # every rank says where it runs: the driver starts one energy meter per node
    if channel is not None:
        import ray

        channel.put.remote([{"type": "hello", "rank": rank, "local_rank": local_rank,
                             "node_id": ray.get_runtime_context().get_node_id(),
                             "hostname": socket.gethostname(), "pid": os.getpid(),
                             "gpu_uuids": _visible_gpu_uuids() if cfg.device == "cuda" else []}])
    pid_dir = Path(cfg.run_dir or Path(cfg.checkpoint_dir).parent) / "workers"
    pid_dir.mkdir(parents=True, exist_ok=True)
    (pid_dir / f"rank{rank}.pid").write_text(str(os.getpid()))
    log.info("rank %d of %d on %s (pid %d, %s)", rank, world, socket.gethostname(), os.getpid(),
             device)

    data = open_dataset(cfg.data, split="train")
    n_seq = data.num_sequences(cfg.seq_len)
    sampler = Sampler(n_seq, cfg.seed, cfg.global_batch, rank, world)
    per_rank = cfg.global_batch // world
    accum = per_rank // cfg.micro_batch

    model = build_model(cfg, device)
    # fused: one kernel over all parameters (CPU and CUDA, DTensor shards included); on CPU it
    # is about 6x faster than the per-parameter loop (bench/results/model_cpu.md)
    optimizer = torch.optim.AdamW(model.optimizer_groups(cfg.weight_decay), lr=cfg.lr,
                                  betas=cfg.betas, fused=True)

    start = 0
    limit = _broadcast(ray.get(channel.step_limit.remote()) if channel is not None and rank == 0
                       else None)
    found = ckpt.find_latest(cfg.checkpoint_dir, max_step=limit)
    if found is not None:
        for path, reason in found.skipped:
            reporter.send("log", level="warning", message=f"checkpoint {ckpt.basename(path)} "
                          f"not usable ({reason}); falling back to the previous complete one")
        if found.step >= 0:
            extra = ckpt.load(found.path, model, optimizer)
            start = int(extra.get("step", found.step))
            reporter.send("resumed", step=start, path=str(found.path),
                          skipped=[[str(p), r] for p, r in found.skipped])
            log.info("resumed from %s at step %d", found.path, start)
    if start == 0 and cfg.init_from:
        from orchestrator.run.init_from import load_into

        load_into(model, cfg.init_from)  # every rank keeps its shard of each tensor
        reporter.send("log", level="info", message=f"weights initialised from {cfg.init_from}")
    if start == 0:
        reporter.send("resumed", step=0, path=None,
                      skipped=[[str(p), r] for p, r in (found.skipped if found else [])])

    # CPU: the fp32 matmul peak of these threads, measured here (the best of the workers, so a
    # worker slowed by a neighbour at that moment does not inflate MFU), re-checked every 50
    # steps and never lowered.
    peak = cfg.peak_flops or _all_max(measure_matmul_peak(1.0), device)
    tokens_per_step = cfg.global_batch * cfg.seq_len
    last_saved = start
    stop_reason = None
    step = start
    loader = Prefetcher(data, sampler, cfg.seq_len, cfg.micro_batch, first_step=start,
                        last_step=cfg.max_steps, pin=device.type == "cuda")
    for step in range(start + 1, cfg.max_steps + 1):
        t0 = time.perf_counter()
        lr = lr_at(step, peak=cfg.lr, warmup=cfg.warmup_steps, total=cfg.total_steps,
                   min_ratio=cfg.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        micro_batches = loader.next()  # sampler step `step - 1`, read ahead on a thread
        loss_sum = 0.0
        for m in range(accum):
            batch = micro_batches[m].to(device, non_blocking=True)
            if hasattr(model, "set_requires_gradient_sync"):
                model.set_requires_gradient_sync(m == accum - 1 or cfg.sync_each_micro_batch)
            loss = model(batch[:, :-1], batch[:, 1:])
            (loss / accum).backward()
            loss_sum += float(loss.detach())
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        if hasattr(norm, "full_tensor"):
            norm = norm.full_tensor()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss_mean = _all_mean(loss_sum / accum, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        tokens_per_s = tokens_per_step / dt
        if not cfg.peak_flops and step % 50 == 0:
            peak = max(peak, _all_max(measure_matmul_peak(0.2), device))
        mfu = cfg.flops_per_token * tokens_per_s / (peak * world) if cfg.flops_per_token else None
        if rank == 0:
            _ray_metrics(loss_mean, tokens_per_s, mfu, cfg.run_id)
        log.log(logging.INFO if rank == 0 and (step % LOG_EVERY == 0 or step == cfg.max_steps)
                else logging.DEBUG, "step %d loss %.4f lr %.3g %.0f tokens/s", step, loss_mean,
                lr, tokens_per_s)
        reporter.send("step", step=step, tokens=step * tokens_per_step, loss=loss_mean, lr=lr,
                      grad_norm=float(norm), tokens_per_s=tokens_per_s, mfu=mfu,
                      memory_bytes=memory_bytes(device), time=time.time())
        command = _broadcast(reporter.command() if rank == 0 else None)
        eval_due = bool(cfg.eval_every and cfg.eval_items) and (
            step % cfg.eval_every == 0 or step == cfg.max_steps)
        due = step % cfg.checkpoint_every == 0 or step == cfg.max_steps or command is not None \
            or eval_due
        if due:
            path = ckpt.save(cfg.checkpoint_dir, step, model, optimizer,
                             {"step": step, "tokens": step * tokens_per_step},
                             keep_last=cfg.keep_last)
            last_saved = step
            reporter.send("checkpoint", step=step, path=str(path))
            log.debug("checkpoint at step %d saved: %s", step, path)
        if eval_due:  # the checkpoint just saved, scored (sharded over the ranks)
            from orchestrator.eval.during import evaluate_shard

            tasks = evaluate_shard(model, data.tokenizer_path, cfg.eval_items, rank=rank,
                                   world=world, device=device,
                                   max_len=cfg.model_args["max_seq_len"])
            reporter.send("eval-tasks", step=step, tokens=step * tokens_per_step, tasks=tasks,
                          time=time.time())
        if command is not None:
            stop_reason = command
            break
    loader.close()
    if stop_reason is None and last_saved == cfg.max_steps:
        val_loss = evaluate(model, cfg, device, rank, world)
        reporter.send("eval", step=step, tokens=step * tokens_per_step, val_loss=val_loss,
                      params=cfg.params)
    reporter.send("done", step=step, reason=stop_reason or "max_steps")
    log.info("rank %d done at step %d (%s)", rank, step, stop_reason or "max_steps")
    # Release everything before Ray tears the process group down (avoids SIGABRT at exit).
    del model, optimizer
    gc.collect()


def _ray_metrics(loss: float, tokens_per_s: float, mfu: float | None, run_id: str) -> None:
    """Training gauges on the node's Prometheus endpoint (never fails the step)."""
    try:
        from orchestrator.energy.meter import report_training_metrics

        report_training_metrics(loss, tokens_per_s, mfu or 0.0, run_id)
    except Exception:
        pass


def _visible_gpu_uuids() -> list[str]:
    try:
        from orchestrator.energy.meter import visible_gpu_uuids

        return visible_gpu_uuids()
    except Exception:
        return []
