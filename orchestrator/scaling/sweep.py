"""`sweep`: train an IsoFLOP ladder through the normal training path, resumably.

Each ladder point becomes one run whose config carries
    config["sweep"] = {"id", "budget_flops", "size_index", "params", "tokens", "data", "seed"}.
The sweep id is a hash of everything that defines the ladder, so running the same command again
finds the runs already finished (status "completed" with an "eval" event) and trains only the
rest. Training itself is `orchestrator.launcher.train_run`, imported only when a point is
actually trained (a dry run needs neither torch nor Ray).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from model.presets import Preset
from orchestrator.scaling.fits import final_val_loss, sweep_runs
from orchestrator.store.home import Home
from orchestrator.store import Run, Store
from planners.errors import BadInput, RunFailed
from planners.isoflop import LadderPoint, isoflop_ladder

# Assumed training throughput on this kind of 2-core CPU, counted as 6*N FLOPs per token: a
# 3.3M-parameter model ran about 8k tokens/s on one process (shared/reference/ray-and-torch.md),
# 6 * 3.3e6 * 8e3 = 1.6e11. Only used for the predicted time; override with --flops-per-s.
CPU_FLOPS_PER_S = 1.5e11
SWEEP_LR = 1e-3  # the tiny preset's peak learning rate, for every size of the ladder (--lr)
DEFAULT_VOCAB = 8192  # the ladder's vocabulary when the data set is not prepared yet (dry runs)


@dataclass(frozen=True)
class SweepItem:
    point: LadderPoint
    key: dict  # config["sweep"] of its run
    status: str  # "done" (finished, has a validation loss) or "todo"
    run_id: str | None = None  # the finished run, or the last unfinished attempt
    note: str = ""


def sweep_id(budgets: list[float], sizes: int, data: str, seed: int, **ladder) -> str:
    spec = {"budgets": sorted(float(b) for b in budgets), "sizes": sizes, "data": data,
            "seed": seed, **ladder}
    return "sweep-" + hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]


def point_key(sid: str, p: LadderPoint, data: str, seed: int) -> dict:
    return {"id": sid, "budget_flops": p.budget_flops, "size_index": p.size_index,
            "params": p.params, "tokens": p.tokens, "data": data, "seed": seed}


def _same_point(a: dict, b: dict) -> bool:
    return all(a.get(k) == b.get(k) for k in ("id", "budget_flops", "params", "tokens", "data", "seed"))


def decide(points: list[LadderPoint], sid: str, data: str, seed: int,
           runs: list[dict]) -> list[SweepItem]:
    """Which ladder points still need training. `runs`: {"id", "status", "config", "has_eval"}
    for the sweep's existing runs. A point is done when a run with its key completed and recorded
    a validation loss; anything else (failed, interrupted, never finished) is trained again."""
    items = []
    for p in points:
        key = point_key(sid, p, data, seed)
        mine = [r for r in runs if _same_point((r.get("config") or {}).get("sweep") or {}, key)]
        done = [r for r in mine if r["status"] == "completed" and r["has_eval"]]
        if done:
            items.append(SweepItem(p, key, "done", done[-1]["id"]))
        elif mine:
            last = mine[-1]
            items.append(SweepItem(p, key, "todo", last["id"],
                                   f"earlier attempt {last['id']} is {last['status']}"
                                   + ("" if last["has_eval"] else " without a validation loss")))
        else:
            items.append(SweepItem(p, key, "todo"))
    return items


def data_vocab(data: str, home: Home | None) -> int | None:
    """The vocabulary of the prepared data set's tokenizer (None when it is not prepared): the
    ladder's models must use it, or N would count embedding rows no token ever reaches."""
    from orchestrator.data import dataset_dir

    manifest = dataset_dir(data, home) / "manifest.json"
    try:
        return int(json.loads(manifest.read_text())["vocab_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def preset_for(p: LadderPoint, sid: str, lr: float = SWEEP_LR) -> Preset:
    """The ladder point as a Preset for the trainer: its shape, batch, sequence, and a schedule
    as long as the run (Chinchilla: the cosine cycle must match the run's token count)."""
    return Preset(name=f"{sid}-c{p.budget_flops:.2g}-n{p.params}", args=p.args, lr=lr,
                  batch_tokens=p.batch_tokens, train_tokens=p.tokens, seq_len=p.seq_len,
                  warmup_steps=max(1, min(100, p.steps // 20)),
                  note=f"IsoFLOP point: budget {p.budget_flops:.3g} FLOPs, size {p.size_index}")


def existing_runs(store: Store, sid: str) -> list[dict]:
    return [{"id": r.id, "status": r.status, "config": r.config,
             "has_eval": final_val_loss(store, r.id) is not None} for r in sweep_runs(store, sid)]


def run_sweep(store: Store, budgets: list[float], sizes: int, *, data: str = "demo", seed: int = 0,
              dry_run: bool = False, flops_per_s: float = CPU_FLOPS_PER_S,
              vocab_size: int | None = None, seq_len: int = 256, batch_tokens: int = 2048,
              tokens_per_param: float = 20.0, spread: float = 3.0, lr: float = SWEEP_LR,
              home: Home | None = None, progress=None) -> dict:
    """Build the ladder, decide what is left, and (unless `dry_run`) train it point by point.
    `vocab_size` None: the data set's tokenizer's (8192 when it is not prepared yet).
    Returns {"sweep_id", "points": [...], "assumptions", totals}."""
    if not flops_per_s > 0:
        raise BadInput(f"--flops-per-s {flops_per_s!r} must be > 0 (e.g. 1.5e11)")
    if not (lr > 0 and lr < 1):
        raise BadInput(f"--lr {lr!r} must be between 0 and 1 (e.g. 1e-3)")
    home = home or Home.resolve()
    have = data_vocab(data, home)
    if vocab_size is None:
        vocab_size = have or DEFAULT_VOCAB
    elif have is not None and vocab_size < have:
        raise BadInput(f"--vocab-size {vocab_size} is smaller than data set {data!r}'s "
                       f"tokenizer ({have} tokens); give at least {have} or leave it out")
    ladder_opts = dict(vocab_size=vocab_size, seq_len=seq_len, batch_tokens=batch_tokens,
                       tokens_per_param=tokens_per_param, spread=spread)
    points = isoflop_ladder(budgets, sizes, **ladder_opts)
    sid = sweep_id(budgets, sizes, data, seed, **ladder_opts,
                   **({} if lr == SWEEP_LR else {"lr": lr}))
    items = decide(points, sid, data, seed, existing_runs(store, sid))
    rows = []
    for item in items:
        run_id, status = item.run_id, item.status
        if status == "todo" and not dry_run:
            if progress:
                progress(item)
            run_id = _train(store, item, sid, data, seed, lr, home)
            ev = final_val_loss(store, run_id)
            if ev is None:
                raise RunFailed(f"sweep run {run_id} finished without a validation loss "
                                f"(no 'eval' event); see `cli.py runs show {run_id}`")
            status = "trained"
        ev = final_val_loss(store, run_id) if run_id and status != "todo" else None
        rows.append({**item.point.as_dict(), "status": status, "run_id": run_id,
                     "val_loss": ev.get("val_loss") if ev else None, "note": item.note,
                     "predicted_time_s": item.point.flops / flops_per_s})
    todo = [r for r in rows if r["status"] == "todo"]
    return {
        "sweep_id": sid, "data": data, "seed": seed, "dry_run": dry_run, "points": rows,
        "done": sum(r["status"] in ("done", "trained") for r in rows), "todo": len(todo),
        "predicted_time_s_left": sum(r["predicted_time_s"] for r in todo),
        "assumptions": {"flops_per_s": flops_per_s, "flops_counted_as": "6*N*D",
                        "lr": lr, **ladder_opts},
    }


def _train(store: Store, item: SweepItem, sid: str, data: str, seed: int, lr: float,
           home: Home) -> str:
    try:
        from orchestrator.run.launcher import train_run  # the training path (issue 5), lazily
    except ImportError as e:
        raise RunFailed(f"training is not available ({e}); `sweep --dry-run` shows the ladder") from None
    result = train_run(store, preset_for(item.point, sid, lr), item.point.tokens, data=data,
                       seed=seed, config_extra={"sweep": item.key}, home=home,
                       name=f"{sid} C={item.point.budget_flops:.2g} N={item.point.params:,}")
    if isinstance(result, str):
        run_id = result
    elif isinstance(result, dict):
        run_id = result.get("run_id") or result.get("id")
    else:
        run_id = getattr(result, "id", None)
    with store.read() as s:
        run = s.get(Run, run_id)
    if run is None or (run.config or {}).get("sweep") != item.key:
        raise RunFailed(f"train_run did not record config['sweep'] on run {run_id}; "
                        "the sweep could not resume it")
    return run_id
