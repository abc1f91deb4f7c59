"""Terminal renderings of runs, `train`, `export` and data sets."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table

from reports.fmt import dur, num

SHOWN_EVENTS = 20  # `runs show` lists the last events; --json has every one


def runs_table(rows: list[dict]) -> Table | str:
    if not rows:
        return "No runs yet. Start one with `python cli.py train tiny`."
    t = Table(title=f"{len(rows)} run(s)")
    # a Ray job id column only for remote runs; carbon-aware waits and pauses only when some
    # run has them
    jobs = any(r.get("job_id") for r in rows)
    extra = [(col, key) for col, key in (("waited", "waited_s"), ("paused", "paused_s"))
             if any(r.get(key) for r in rows)]
    cols = ["id", "preset", "status", "steps", "tokens", "final loss", "energy kWh", "tCO2eq",
            *[col for col, _ in extra], "created (UTC)", *(["job"] if jobs else [])]
    for col in cols:
        t.add_column(col, no_wrap=True, justify="left" if col in ("id", "preset", "status",
                                                                  "created (UTC)", "job") else "right")
    for r in rows:
        t.add_row(r["id"], r["preset"], r["status"], str(r["steps"]), f"{r['tokens']:,}",
                  num(r["final_loss"], ".4f"), num(r.get("energy_kwh"), ".4f"),
                  num(r.get("tco2eq"), ".2e"),
                  *[dur(r.get(key)) for _, key in extra], (r["created_at"] or "")[:19],
                  *([r.get("job_id") or ""] if jobs else []))
    return t


def render_run(c: Console, info: dict) -> None:
    run = info["run"]
    t = Table(show_header=False, title=f"run {run['id']}")
    t.add_column("key", style="bold")
    t.add_column("value")
    for key, value in run.items():
        if key != "config":
            t.add_row(key, "" if value is None else str(value))
    c.print(t)
    c.print("config: " + json.dumps(run.get("config", {}), default=str))
    if info.get("checkpoints"):
        ct = Table(title="checkpoints")
        for col in ("step", "complete", "path"):
            ct.add_column(col)
        for ck in info["checkpoints"]:
            ct.add_row(str(ck["step"]), str(ck["complete"]), ck["path"])
        c.print(ct)
    if info.get("eval_tasks"):
        from reports.eval import history_table

        c.print(history_table(info["eval_tasks"]))
    events = info.get("events") or []
    if events:
        shown = events[-SHOWN_EVENTS:]
        et = Table(title=f"events ({len(events)}" + (f", the last {len(shown)}; --json has all)"
                                                     if len(shown) < len(events) else ")"))
        for col in ("time (UTC)", "kind", "details"):
            et.add_column(col, no_wrap=col != "details")
        for e in shown:
            et.add_row((e["time"] or "")[:19], e["kind"], json.dumps(e["details"], default=str))
        c.print(et)


def render_train(c: Console, result: dict) -> None:
    if result.get("dry_run"):
        t = Table(title="launch plan (dry run: nothing started)", show_header=False)
        t.add_column("key", style="bold")
        t.add_column("value")
        for k, v in result["launch"].items():
            t.add_row(k, f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v))
        t.add_row("pre-flight", result.get("preflight", ""))
        mem = result.get("memory") or {}
        if mem.get("total_bytes_per_device"):
            t.add_row("memory per device", f"{mem['total_bytes_per_device'] / 1e9:.2f} GB")
        for k, v in (result.get("prediction") or {}).items():
            t.add_row(f"predicted {k}", num(v, ",.4g") if isinstance(v, (int, float)) else str(v))
        for k, v in result.get("assumptions", {}).items():
            t.add_row(k, str(v))
        c.print(t)
        return
    c.print(runs_table([result]))


def render_export(c: Console, info: dict) -> None:
    c.print(f"run {info['run_id']} step {info['step']} -> {info['out']} ({info['format']}, "
            f"{info['dtype']}, {info['params']:,} parameters)")
    t = Table()
    t.add_column("file")
    t.add_column("bytes", justify="right")
    for name, size in info["files"].items():
        t.add_row(name, f"{size:,}")
    c.print(t)
    c.print(f"tokenizer {info['tokenizer']['id']} (bos {info['tokenizer']['bos_id']}, eos "
            f"{info['tokenizer']['eos_id']}); {info['seconds']['total']:.1f} s")


def render_dataset(c: Console, m: dict) -> None:
    t = Table(title=f"dataset {m['name']} (tokenizer {m['tokenizer']['id']}, vocab "
                    f"{m['vocab_size']}, {m['dtype']}, mixture {m['mixture'] or 'as given'})")
    for col in ("source", "docs", "MB", "tokens", "weight", "share", "sampled tokens", "epochs",
                "val tokens", "duplicates (removed)"):
        t.add_column(col, no_wrap=True, justify="left" if col == "source" else "right")
    for s in m["sources"]:
        dups = s.get("duplicate_documents")
        t.add_row(s["name"], f"{s['documents']:,}", f"{s['bytes'] / 1e6:.1f}", f"{s['tokens']:,}",
                  f"{s['weight']:g}", f"{s['proportion']:.1%}", f"{s['sampled_tokens']:,}",
                  f"{s['epochs']:.2f}", f"{s['val_tokens']:,}",
                  "" if dups is None else f"{dups:,} ({s.get('duplicates_removed', 0):,})")
    c.print(t)
    for split, info in m["splits"].items():
        c.print(f"{split}: {info['n_tokens']:,} tokens, {info['n_documents']:,} documents, "
                f"{len(info['shards'])} shard(s)")
    c.print(f"at {m['path']}" + (f"; prepared in {m['timings_s']['total']:.1f} s"
                             if m.get("timings_s") else "")
            + ("; checksums verified" if m.get("verified") else ""))


def render_datasets(c: Console, rows: list[dict]) -> None:
    if not rows:
        c.print("No datasets yet. Make one with `python cli.py data prepare --demo`.")
        return
    t = Table(title=f"{len(rows)} dataset(s)")
    for col in ("name", "train tokens", "val tokens", "vocab", "sources", "created (UTC)"):
        t.add_column(col, no_wrap=True)
    for r in rows:
        if "error" in r:
            t.add_row(r["name"], "", "", "", r["error"], "")
            continue
        t.add_row(r["name"], f"{r['train_tokens']:,}", f"{r['val_tokens']:,}",
                  str(r["vocab_size"]),
                  ", ".join(f"{k} {v:.1%}" for k, v in r["sources"].items()),
                  r["created_at"][:19])
    c.print(t)
