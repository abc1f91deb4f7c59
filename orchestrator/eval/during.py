"""Evaluation during training (`train --eval-every N --eval-tasks FILE`, LLaMA §3.7): the
driver reads and checks the task files before Ray starts and sends the items with the run's
configuration; at each evaluation step every worker scores its share of the items (item i on
rank i mod world) with the model as it trains (FSDP2-sharded: every rank runs the same number
of forwards, the ranks with fewer rows run padding forwards), and the counts are summed over
the ranks."""

from __future__ import annotations

from dataclasses import asdict

from orchestrator.eval.items import Item

BATCH_SIZE = 16  # rows per forward during training


def items_for_run(spec) -> list[dict] | None:
    """The run's evaluation items as plain dicts (for the workers), every file checked."""
    from planners.errors import BadInput

    if bool(spec.eval_every) != bool(spec.eval_tasks):
        raise BadInput("--eval-every N and --eval-tasks FILE go together; give both or neither")
    if not spec.eval_tasks:
        return None
    from orchestrator.eval.readers import load_tasks

    return [asdict(it) for it in load_tasks([t for t in spec.eval_tasks.split(",") if t])]


def evaluate_shard(model, tokenizer_path: str, items: list[dict], *, rank: int, world: int,
                   device, max_len: int, batch_size: int = BATCH_SIZE) -> list[dict]:
    """[{"task", "n", "acc", "acc_norm"}] over all ranks' items, in the tasks' first order."""
    import torch
    import torch.distributed as dist

    from model.tokenizer import Tokenizer
    from orchestrator.eval import scoring

    tok = Tokenizer(tokenizer_path)
    every = [Item(d["task"], tuple(d["contexts"]), tuple(d["choices"]), d["answer"],
                  d["normalization"]) for d in items]
    tasks = list(dict.fromkeys(it.task for it in every))
    mine = every[rank::world]
    groups = scoring.requests_of(tok, mine)
    plan = scoring.plan_rows(groups, max_len)
    n_batches = len(scoring.batches(plan, batch_size))
    most = n_batches
    if dist.is_initialized() and world > 1:
        t = torch.tensor([n_batches], dtype=torch.int64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        most = int(t.item())
    was_training = model.training
    model.eval()
    try:
        lls = scoring.run_plan(model, plan, batch_size, device, extra_forwards=most - n_batches)
    finally:
        model.train(was_training)
    mine_counts = scoring.count(mine, groups, lls)
    counts = torch.tensor([[c.n, c.acc, c.acc_norm] for c in
                           (mine_counts.get(task, scoring.Counts()) for task in tasks)],
                          dtype=torch.int64)
    if dist.is_initialized() and world > 1:
        counts = counts.to(device)
        dist.all_reduce(counts)
        counts = counts.cpu()
    # n > 0 for every task once summed over the ranks (each task has items)
    return [{"task": task, "n": n, "acc": a / max(n, 1), "acc_norm": b / max(n, 1)}
            for task, (n, a, b) in zip(tasks, counts.tolist())]
