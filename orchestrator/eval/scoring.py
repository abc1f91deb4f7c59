"""Log-likelihood scoring of multiple-choice items (LLaMA §3, zero-shot), as
lm-evaluation-harness computes it, so the two give the same acc and acc_norm on the same model.

The score of a choice is log P(" " + choice | BOS + context). The pair is tokenised as the
harness's `_encode_pair` does: trailing spaces of the context move to the continuation, then
encode(BOS + context) and encode(BOS + context + continuation); the continuation's tokens are
the tail of the second after as many tokens as the first has. The model reads
(context + continuation)[-(max_len + 1):][:-1]: long contexts lose their left end.

Batching: every log-likelihood is read off one row of the model's input. A row whose tokens
begin with another request's whole input scores that request too (a causal model's logits at a
position do not depend on what follows it), so the choices of an item that share a context and
differ only in their last token (BoolQ's " yes"/" no") take one row, and identical rows (the
unconditional "Answer:" requests, the same for every item) are computed once. Rows are sorted
longest first and padded on the right, `batch_size` rows to a forward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from orchestrator.eval.items import Item

UNCONDITIONAL = "Answer:"  # LLaMA §3: P(completion | context) / P(completion | "Answer:")


def encode_pair(tok, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(BOS + context tokens, continuation tokens), as lm-evaluation-harness splits them."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = tok.encode(context + continuation, bos=True)
    ctx = tok.encode(context, bos=True)
    return ctx, whole[len(ctx):]


@dataclass
class Plan:
    """The rows to run and, for each request, (row, first position, target tokens)."""
    rows: list[tuple[int, ...]] = field(default_factory=list)
    uses: list[tuple[int, int, tuple[int, ...]]] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return sum(len(r) for r in self.rows)


def plan_rows(groups: list[list[tuple[list[int], list[int]]]], max_len: int) -> Plan:
    """Rows for groups of (context, continuation) token pairs (a group: one item's requests).
    Within a group a request rides on a longer row that starts with its input; across groups
    identical rows are merged."""
    plan, index = Plan(), {}
    for group in groups:
        inputs = []
        for ctx, cont in group:
            if not cont:
                raise ValueError("an empty continuation has no log-likelihood")
            seq = (ctx + cont)[-(max_len + 1):]
            n = min(len(cont), len(seq) - 1)  # a continuation longer than the model's context
            inputs.append((tuple(seq[:-1]), tuple(seq[len(seq) - n:])))
        carriers: list[tuple[int, ...]] = []
        placed = [None] * len(inputs)
        for i in sorted(range(len(inputs)), key=lambda i: -len(inputs[i][0])):
            inp = inputs[i][0]
            row = next((c for c in carriers if c[:len(inp)] == inp), None)
            if row is None:
                carriers.append(row := inp)
            placed[i] = row
        for (inp, targets), row in zip(inputs, placed):
            if row not in index:
                index[row] = len(plan.rows)
                plan.rows.append(row)
            plan.uses.append((index[row], len(inp) - len(targets), targets))
    return plan


def batches(plan: Plan, batch_size: int) -> list[list[int]]:
    """Row indices, longest first, `batch_size` to a forward."""
    order = sorted(range(len(plan.rows)), key=lambda r: -len(plan.rows[r]))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def run_plan(model, plan: Plan, batch_size: int, device="cpu", extra_forwards: int = 0) -> list[float]:
    """The log-likelihood of each request, one forward per batch of rows. `extra_forwards`
    runs that many more (one padded row each): ranks of a sharded model must all call forward
    the same number of times."""
    import torch

    by_row: dict[int, list[int]] = {}
    for r, (row, _, _) in enumerate(plan.uses):
        by_row.setdefault(row, []).append(r)
    lls = torch.zeros(len(plan.uses), dtype=torch.float64)
    with torch.no_grad():
        for rows in batches(plan, batch_size):
            width = len(plan.rows[rows[0]])
            x = torch.zeros((len(rows), width), dtype=torch.long)
            for b, r in enumerate(rows):
                x[b, :len(plan.rows[r])] = torch.tensor(plan.rows[r])
            logits = model(x.to(device))  # (B, T, vocab)
            b_idx, t_idx, tgt, req = [], [], [], []
            for b, r in enumerate(rows):
                for q in by_row[r]:
                    _, start, targets = plan.uses[q]
                    n = len(targets)
                    b_idx += [b] * n
                    t_idx += range(start, start + n)
                    tgt += targets
                    req += [q] * n
            picked = logits[torch.tensor(b_idx, device=logits.device),
                            torch.tensor(t_idx, device=logits.device)].float()
            logp = picked.log_softmax(-1).gather(1, torch.tensor(tgt, device=picked.device)[:, None])
            lls.index_add_(0, torch.tensor(req), logp[:, 0].double().cpu())
        for _ in range(extra_forwards):
            model(torch.zeros((1, 1), dtype=torch.long, device=device))
    return lls.tolist()


# -- items ------------------------------------------------------------------------------------
def requests_of(tok, items: list[Item]) -> list[list[tuple[list[int], list[int]]]]:
    """Per item: its choices' (context, " " + choice) pairs, then, for "answer" items, the
    same choices after "Answer:"."""
    groups = []
    for it in items:
        group = [encode_pair(tok, ctx, " " + ch) for ctx, ch in zip(it.contexts, it.choices)]
        if it.normalization == "answer":
            group += [encode_pair(tok, UNCONDITIONAL, " " + ch) for ch in it.choices]
        groups.append(group)
    return groups


def _argmax(xs) -> int:
    return max(range(len(xs)), key=lambda i: xs[i])  # the first of equals, as numpy's argmax


def decide(item: Item, lls: list[float]) -> tuple[int, int]:
    """(acc pick, acc_norm pick) from the item's log-likelihoods in requests_of's order."""
    k = len(item.choices)
    cond = lls[:k]
    if item.normalization == "answer":
        normed = [c - u for c, u in zip(cond, lls[k:2 * k])]
    else:  # the choice's length in characters, without the joining space (a "" choice: 1)
        normed = [c / max(len(ch), 1) for c, ch in zip(cond, item.choices)]
    return _argmax(cond), _argmax(normed)


@dataclass
class Counts:
    """Per task: items, right by acc, right by acc_norm. Sums, so ranks can all-reduce them."""
    n: int = 0
    acc: int = 0
    acc_norm: int = 0


def count(items: list[Item], groups: list[list], lls: list[float]) -> dict[str, Counts]:
    """Per task, the items right by acc and by acc_norm (lls in requests_of's order)."""
    counts: dict[str, Counts] = {}
    pos = 0
    for it, group in zip(items, groups):
        pick, pick_norm = decide(it, lls[pos:pos + len(group)])
        pos += len(group)
        c = counts.setdefault(it.task, Counts())
        c.n += 1
        c.acc += pick == it.answer
        c.acc_norm += pick_norm == it.answer
    return counts


def score_items(model, tok, items: list[Item], *, batch_size: int = 16, max_len: int,
                device="cpu", extra_forwards: int = 0) -> tuple[dict[str, Counts], Plan]:
    groups = requests_of(tok, items)
    plan = plan_rows(groups, max_len)
    lls = run_plan(model, plan, batch_size, device, extra_forwards)
    return count(items, groups, lls), plan


def stderr_of(hits: int, n: int) -> float | None:
    """lm-evaluation-harness's `mean_stderr` of 0/1 scores: sample std (n - 1) / sqrt(n)."""
    if n < 2:
        return None
    p = hits / n
    return math.sqrt(p * (1 - p) * n / (n - 1)) / math.sqrt(n)


def summarize(counts: dict[str, Counts]) -> list[dict]:
    rows = []
    for task, c in counts.items():
        rows.append({"task": task, "n": c.n, "acc": c.acc / c.n, "acc_norm": c.acc_norm / c.n,
                     "acc_stderr": stderr_of(c.acc, c.n),
                     "acc_norm_stderr": stderr_of(c.acc_norm, c.n)})
    return rows


def perplexity(model, dataset, seq_len: int, *, batch_size: int = 8, max_tokens: int,
               device="cpu") -> dict | None:
    """exp(mean next-token loss) over the first sequences of a split (at most `max_tokens`
    targets); None when the split is too short for one sequence."""
    import torch

    n_seq = min(dataset.num_sequences(seq_len), max(1, max_tokens // seq_len))
    if dataset.num_sequences(seq_len) < 1:
        return None
    total, count = 0.0, 0
    with torch.no_grad():
        for s in range(0, n_seq, batch_size):
            idx = list(range(s, min(s + batch_size, n_seq)))
            batch = torch.from_numpy(dataset.get_batch(idx, seq_len)).to(device)
            loss = model(batch[:, :-1], batch[:, 1:])
            total += float(loss) * batch[:, 1:].numel()
            count += batch[:, 1:].numel()
    return {"perplexity": math.exp(total / count), "loss": total / count, "tokens": count,
            "seq_len": seq_len}
