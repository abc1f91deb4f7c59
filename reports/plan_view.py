"""Terminal renderings of `plan` and `models`."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from reports.fmt import num, pct, si


def render_plan(c: Console, plan: dict) -> None:
    t = plan["target"]
    fit = plan["fit"]
    c.print(f"Target loss {plan['target_loss']:.4f} nats/token (ppl {t['perplexity']:.2f}): "
            f"{t['meaning']}. Fit {fit['name']}: E={fit['E']:g} A={fit['A']:g} B={fit['B']:g} "
            f"alpha={fit['alpha']:g} beta={fit['beta']:g}.")
    d = plan["demand"]
    a = plan["assumptions"]
    c.print(f"Serving {si(d['inference_tokens'])} tokens ({si(d['prompt_tokens'])} prompt, "
            f"{si(d['output_tokens'])} generated). Days: training on {a['gpus']['value']} x "
            f"{a['gpu']['value']}. FLOPs, GPU-hours, $, MWh and tCO2eq: training + serving.")
    tb = Table(title=f"plan {plan.get('id', '')}".strip())
    cols = ["option", "params", "tokens", "tok/param", "loss", "FLOPs", "GPU-hours", "days",
            "cost $", "MWh", "tCO2eq", "FLOPs saved", "$ saved", "CO2 saved"]
    for col in cols:
        tb.add_column(col, justify="left" if col == "option" else "right", no_wrap=True)
    for o in plan["options"]:
        s = o["savings_vs_chinchilla"]
        tb.add_row(o["label"], si(o["params"]), si(o["tokens"]), f"{o['tokens_per_param']:.1f}",
                   f"{o['loss']:.4f}", f"{o['total_flops']:.3g}", si(o["gpu_hours"]), f"{o['days']:.1f}",
                   si(o["cost_usd"]), f"{o['energy_mwh']:.4g}", f"{o['tco2eq']:.4g}",
                   pct(s["flops_pct"]), pct(s["cost_usd_pct"]), pct(s["tco2eq_pct"]))
    c.print(tb)
    c.print("Assumptions:")
    for key, v in a.items():
        value = f"{v['value']:g}" if isinstance(v["value"], float) else v["value"]
        c.print(f"  {key} = {value}  ({v['source']})")
    m = plan["memory"]
    sh = m["shape"]
    c.print(f"Memory for {m['for']} ({si(m['params'])} params; dim {sh['dim']}, {sh['n_layers']} "
            f"layers, {sh['n_heads']} heads, {sh['source']}), FSDP full sharding, "
            f"{'bf16 mixed precision' if m['mixed_precision'] == 'bf16' else 'fp32'}, seq "
            f"{m['seq_len']} x micro-batch {m['micro_batch']}, {m['gpu']} "
            f"({m['device_memory_bytes'] / 1e9:.0f} GB less a {m['margin']:.0%} margin = "
            f"{m['usable_bytes_per_device'] / 1e9:.1f} GB usable; --memory-margin):")
    for key, name in (("with_checkpointing", "with activation checkpointing"),
                      ("without_checkpointing", "without")):
        r = m[key]
        need = "FSDP alone cannot hold it on any number of GPUs (one gathered block and the " \
            "activations exceed a GPU; it needs tensor or pipeline parallelism)" \
            if r["min_gpus"] is None else \
            f"needs at least {r['min_gpus']} GPUs ({r['min_nodes']} node" \
            f"{'s' if r['min_nodes'] > 1 else ''} of 8)"
        terms = ", ".join(f"{t} {r[k] / 1e9:.2f}" for t, k in (
            ("parameters", "params_bytes"), ("gradients", "grads_bytes"),
            ("optimiser", "optimizer_bytes"), ("unsharded units", "unsharded_bytes"),
            ("activations", "activations_bytes")))
        c.print(f"  {name}: {r['total_bytes_per_device'] / 1e9:.1f} GB per GPU on "
                f"{r['world_size']} GPUs at its peak ({r['peak_phase']}: {terms} GB); {need}")
    if plan.get("fit_interval") is not None:
        render_fit_interval(c, plan["fit_interval"], fit["name"])
    if plan.get("regions"):
        render_regions(c, plan["regions"], plan["regions_for"])
    if plan.get("id"):
        c.print(f"Stored as plan {plan['id']}.")


def render_regions(c: Console, rows: list[dict], label: str) -> None:
    t = Table(title=f"where to train ({label}, training only)")
    for col in ("rank", "region", "kg/kWh", "MWh", "tCO2eq", "x best", "$/GPU-h", "cost $",
                "intensity source"):
        t.add_column(col, justify="left" if col in ("region", "intensity source") else "right",
                     no_wrap=col != "intensity source")
    for r in rows:
        t.add_row(str(r["rank"]), r["region"], f"{r['intensity_kg_per_kwh']:.3f}",
                  f"{r['energy_mwh']:.4g}", f"{r['tco2eq']:.4g}",
                  num(r["tco2eq_vs_best"], ".2f"), num(r["price_usd_per_gpu_hour"], ".2f"),
                  si(r["cost_usd"]), r["intensity_source"])
    c.print(t)


def render_fit_interval(c: Console, fi: dict, name: str) -> None:
    if not fi["rows"]:
        c.print(f"Fit {name} has no bootstrap draws: refit with --bootstrap N to see its "
                "uncertainty.")
        return
    t = Table(title=f"across fit {name}'s uncertainty: {fi['n_bootstrap']} bootstrap refits, "
                    f"ranked by compute-optimal N at {fi['budget_flops']:.3g} FLOPs")
    for col in ("pct", "E", "alpha", "beta", "option", "params", "tokens", "tok/param",
                "GPU-hours", "cost $", "tCO2eq"):
        t.add_column(col, justify="left" if col == "option" else "right", no_wrap=True)
    for row in fi["rows"]:
        k = row["constants"]
        head = [f"p{round(100 * row['quantile'])}", f"{k['E']:.3f}", f"{k['alpha']:.3f}",
                f"{k['beta']:.3f}"]
        if row["unreachable"]:
            t.add_row(*head, "target loss <= E: unreachable", *[""] * 6)
        for i, o in enumerate(row["options"]):
            t.add_row(*(head if i == 0 else [""] * 4), o["label"], si(o["params"]),
                      si(o["tokens"]), f"{o['tokens_per_param']:.1f}", si(o["gpu_hours"]),
                      si(o["cost_usd"]), f"{o['tco2eq']:.4g}")
    c.print(t)


def models_table(rows: list[dict]) -> Table:
    t = Table(title="model presets")
    cols = [("name", "name"), ("params", "params"), ("dim", "dim"), ("layers", "n_layers"),
            ("heads", "n_heads"), ("kv heads", "n_kv_heads"), ("ffn hidden", "ffn_hidden"), ("vocab", "vocab_size"),
            ("seq", "seq_len"), ("peak lr", "lr"), ("batch tokens", "batch_tokens"),
            ("train tokens", "train_tokens")]
    for head, _ in cols:
        t.add_column(head, justify="left" if head == "name" else "right", no_wrap=True)
    for r in rows:
        t.add_row(*[f"{r[k]:,}" if isinstance(r[k], int) and k != "name" else
                    (f"{r[k]:.1e}" if k == "lr" else str(r[k])) for _, k in cols])
    return t
