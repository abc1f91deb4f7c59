"""Terminal renderings of `cluster check`, `dashboard`, `schedule`, `sweep` and `fit`."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table

from reports.fmt import num, secs


def render_cluster_check(c: Console, r: dict) -> None:
    c.print(f"{r['file']}: provider {r['provider']}, cluster {r['cluster_name']!r}, "
            f"up to {r['max_workers']} worker node(s)")
    for n in r["node_types"]:
        role = "head" if n["head"] else f"workers {n['min_workers']}-{n['max_workers']}"
        gpus = {None: "", 0: ", no GPU"}.get(n["instance_gpus"],
                                             f", {n['instance_gpus']}x {n['gpu_model']}")
        c.print(f"  {n['name']}: {role}, {n['instance_type']}{gpus}, "
                f"resources {json.dumps(n['resources'])}")
    c.print(f"Ray schema and config validation: {r['ray_validation']}")
    for w in r["warnings"]:
        c.print(f"  warning: {w}")
    if r["ok"]:
        c.print("tally rules: ok (token auth on every node, dashboard on loopback, head runs no "
                "training, GPU counts match)")
    for p in r["problems"]:
        c.print(f"  fix: {p}")


def render_dashboard(c: Console, i: dict) -> None:
    state = "started" if i["started"] else "already running"
    c.print(f"Ray dashboard: {i['dashboard_url']} ({state}, authentication: {i['auth']})")
    c.print(f"Jobs API: python cli.py train tiny --address {i['address']}")
    if i["token_path"]:
        c.print(f"token file: {i['token_path']} (mode 0600; the dashboard asks for its contents)")
    c.print(f"Prometheus metrics: http://127.0.0.1:{i['metrics_port']}/metrics (not protected "
            "by the token)")
    if i.get("session_dir"):
        c.print(f"Grafana dashboards: {i['session_dir']}/metrics/grafana/dashboards")
    c.print(f"log: {i['log']}; stop it with: python cli.py dashboard --stop")


def render_simulation(c: Console, res: dict) -> None:
    sig = res["signal"]
    skipped = ", ".join(f"{n} {k}" for k, n in sig["skipped_rows"].items()) or "none"
    if sig["source"] == "static":
        c.print(f"signal: {sig['zone']} yearly average from {sig['path']}, the same every hour")
    else:
        c.print(f"signal: {sig['source']} {sig['zone'] or ''} {sig['path'] or ''}, "
                f"{sig['intervals']} intervals {sig['start']} .. {sig['end']}")
        c.print(f"read: skipped rows: {skipped}; missing points bridged: {sig['bridged_points']} "
                f"(last value held up to {sig['max_hold_s'] / 3600:g} h); gaps left: "
                f"{len(sig['gaps'])}")
    c.print(f"job: {res['energy_mwh']:g} MWh over {res['duration_hours']:g} h "
            f"({res['power_mw']:.4g} MW), start {res['start']}, deadline {res['deadline']}; "
            f"threshold {res['threshold_g_per_kwh']:.0f} g/kWh ({res['threshold_source']})")
    t = Table()
    for col in ("policy", "start", "finish", "pauses", "paused h", "tCO2eq", "saved tCO2eq",
                "saved %"):
        t.add_column(col, no_wrap=True, justify="left" if col in ("policy", "start", "finish")
                     else "right")
    for r in res["policies"]:
        t.add_row(r["policy"], r["start"], r["finish"], str(r["pauses"]),
                  f"{r['paused_hours']:.1f}", num(r["tco2eq"], ".4f"),
                  num(r["saved_tco2eq"], ".4f"), num(r["saved_percent"], ".1f"))
    c.print(t)


def jobs_table(rows: list[dict]) -> Table | str:
    if not rows:
        return "No jobs. Queue one with `python cli.py schedule add tiny`."
    t = Table(title=f"{len(rows)} job(s)")
    for col in ("id", "priority", "status", "preset", "policy", "deadline", "run", "message"):
        t.add_column(col, no_wrap=col != "message")
    for r in rows:
        o = r["options"]
        t.add_row(r["id"], str(r["priority"]), r["status"], r["preset"], o.get("policy") or "",
                  o.get("deadline") or "", r["run_id"] or "", r["message"] or "")
    return t


def render_queue(c: Console, res: dict) -> None:
    for s in res["started"]:
        c.print(f"started {s['job_id']}: run {s['run_id'] or '-'} {s['status']}")
    if not res["decisions"]:
        c.print(f"{res['time']}: no queued jobs left")
        return
    t = Table(title=f"queue at {res['time']}" + (" (dry run)" if res["dry_run"] else ""))
    for col in ("job", "decision", "at", "expected tCO2eq", "if now", "why"):
        t.add_column(col, no_wrap=col != "why")
    for d in res["decisions"]:
        why = "; ".join(x for x in [d["reason"], *d["warnings"]] if x)
        t.add_row(d["job_id"], d["action"], d["start_at"] or "",
                  num(d["expected_tco2eq"], ".4f"), num(d["tco2eq_if_now"], ".4f"), why)
    c.print(t)


def render_sweep(c: Console, info: dict) -> None:
    a = info["assumptions"]
    t = Table(title=f"sweep {info['sweep_id']} on {info['data']!r} (seed {info['seed']})")
    for col in ("budget FLOPs", "#", "params", "dim x layers", "tokens", "tok/param", "steps",
                "pred. time", "status", "val loss", "run"):
        t.add_column(col, justify="left" if col in ("status", "run", "dim x layers") else "right")
    for p in info["points"]:
        m = p["model_args"]
        t.add_row(f"{p['budget_flops']:.2g}", str(p["size_index"]), f"{p['params']:,}",
                  f"{m['dim']}x{m['n_layers']}", f"{p['tokens']:,}", f"{p['tokens_per_param']:.1f}",
                  f"{p['steps']:,}", secs(p["predicted_time_s"]), p["status"],
                  num(p["val_loss"], ".4f"), p["run_id"] or "")
    c.print(t)
    for p in info["points"]:
        for note in p["notes"] + ([p["note"]] if p["note"] else []):
            c.print(f"note (C={p['budget_flops']:.2g}, #{p['size_index']}): {note}")
    c.print(f"{info['done']} done, {info['todo']} to train, predicted {secs(info['predicted_time_s_left'])} "
            f"left at an assumed {a['flops_per_s']:.3g} FLOP/s (6*N*D; --flops-per-s); "
            f"lr {a['lr']}, batch {a['batch_tokens']} tokens, seq {a['seq_len']}, vocab {a['vocab_size']}")
    if info["dry_run"]:
        c.print("dry run: nothing trained. Fit the finished runs with "
                f"`cli.py fit NAME --sweep {info['sweep_id']}`.")


def render_fit(c: Console, rec: dict) -> None:
    d, k = rec["details"], rec["constants"]
    iv, level = d.get("intervals", {}), d.get("level", 0.9)
    t = Table(title=f"fit {rec['name']}: L(N, D) = E + A/N^alpha + B/D^beta "
                    f"({d.get('n_runs')} runs, {d.get('n_bootstrap', 0)} bootstrap refits)")
    for col in ("constant", "value", f"{level:.0%} interval"):
        t.add_column(col, justify="left" if col == "constant" else "right")
    values = {**k, **d.get("exponents", {})}
    for key, label in (("E", "E"), ("A", "A"), ("B", "B"), ("alpha", "alpha"), ("beta", "beta"),
                       ("a", "a = beta/(alpha+beta)  (N_opt ~ C^a)"),
                       ("b", "b = alpha/(alpha+beta) (D_opt ~ C^b)")):
        lo_hi = iv.get(key)
        t.add_row(label, f"{values[key]:.4g}", f"{lo_hi[0]:.4g} .. {lo_hi[1]:.4g}" if lo_hi else "")
    c.print(t)
    r = Table(title="residuals (loss - predicted)")
    for col in ("run", "params", "tokens", "loss", "predicted", "residual", "%"):
        r.add_column(col, justify="left" if col == "run" else "right")
    for x in d.get("residuals", []):
        r.add_row(str(x["run_id"]), f"{x['params']:,.0f}", f"{x['tokens']:,.0f}", f"{x['loss']:.4f}",
                  f"{x['predicted']:.4f}", f"{x['residual']:+.4f}", f"{x['residual_pct']:+.2f}")
    c.print(r)
    if d.get("holdout"):
        h = Table(title="held-out runs (not fitted): loss - predicted")
        for col in ("run", "params", "tokens", "loss", "predicted", "error", "%"):
            h.add_column(col, justify="left" if col == "run" else "right")
        for x in d["holdout"]:
            h.add_row(str(x["run_id"]), f"{x['params']:,.0f}", f"{x['tokens']:,.0f}", f"{x['loss']:.4f}",
                      f"{x['predicted']:.4f}", f"{x['error']:+.4f}", f"{x['error_pct']:+.2f}")
        c.print(h)
    for note in d.get("notes", []):
        c.print(f"note: {note}")
    c.print(f"method: {d.get('method', '')}")
    if "replaced" in rec:
        c.print(f"stored as {rec['name']!r}" + (" (replacing the earlier fit)" if rec["replaced"] else "")
                + "; `plan --fit " + rec["name"] + "` uses it")
    if rec.get("plot"):
        c.print(f"plot: {rec['plot']}")


def render_fits(c: Console, rows: list[dict]) -> None:
    if not rows:
        c.print("No fits yet. Make one with `python cli.py fit NAME --sweep SWEEP_ID`.")
        return
    t = Table(title=f"{len(rows)} fit(s)")
    for col in ("name", "E", "A", "B", "alpha", "beta", "a", "b", "runs", "created (UTC)"):
        t.add_column(col, justify="left" if col in ("name", "created (UTC)") else "right")
    for f in rows:
        k, e = f["constants"], f["exponents"] or {}
        t.add_row(f["name"], *(f"{k[x]:.4g}" for x in ("E", "A", "B", "alpha", "beta")),
                  num(e.get("a"), ".3f"), num(e.get("b"), ".3f"), str(f["n_runs"]),
                  f["created_at"][:19])
    c.print(t)
