"""Rendering of `eval`: per task n, acc and acc_norm with their standard errors, and the
validation perplexity (or why there is none)."""

from __future__ import annotations

from rich.table import Table


def _pm(x: float, se: float | None) -> str:
    return f"{100 * x:.1f}" + (f" ± {100 * se:.1f}" if se is not None else "")


def tasks_table(rows: list[dict]) -> Table:
    t = Table()
    for name, justify in (("task", "left"), ("n", "right"), ("acc %", "right"),
                          ("acc_norm %", "right")):
        t.add_column(name, justify=justify)
    for r in rows:
        t.add_row(r["task"], str(r["n"]), _pm(r["acc"], r["acc_stderr"]),
                  _pm(r["acc_norm"], r["acc_norm_stderr"]))
    return t


def render_eval(c, res: dict) -> None:
    s = res["source"]
    what = f"run {s['run_id']} step {s['step']}" if s["kind"] == "run" else \
        f"{s['path']} ({s['format']})"
    c.print(f"{what}: {res['items']} items, {res['requests']} log-likelihoods in {res['rows']} "
            f"rows, {res['forwards']} forwards of {res['batch_size']} on {res['device']} "
            f"({res['items_per_s']:.1f} items/s)")
    c.print(tasks_table(res["tasks"]))
    v = res["validation"]
    if v["perplexity"] is None:
        c.print(f"validation perplexity: absent ({v['absent']})")
    else:
        c.print(f"validation perplexity {v['perplexity']:.2f} (loss {v['loss']:.4f}) on "
                f"{v['tokens']:,} tokens of {v['data']!r} ({v['split']}, sequences of "
                f"{v['seq_len']})")


def history_table(rows: list[dict]) -> Table:
    """`train --eval-every`'s scores: one row per evaluation step and task."""
    t = Table(title="evaluation during training (zero-shot)")
    for name in ("step", "tokens", "task", "n", "acc %", "acc_norm %"):
        t.add_column(name, justify="left" if name == "task" else "right")
    for r in rows:
        t.add_row(str(r["step"]), f"{r['tokens']:,}", r["task"], str(r["n"]),
                  f"{100 * r['acc']:.1f}", f"{100 * r['acc_norm']:.1f}")
    return t


def by_task(rows: list[dict]) -> dict[str, dict[str, list]]:
    """{task: {"tokens": [...], "acc": [...], "acc_norm": [...]}} in step order (for plots)."""
    out: dict[str, dict[str, list]] = {}
    for r in rows:
        d = out.setdefault(r["task"], {"step": [], "tokens": [], "acc": [], "acc_norm": []})
        for k in d:
            d[k].append(r[k])
    return out
