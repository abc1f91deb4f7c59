"""Rich rendering of the report documents (cli.py calls these; no figures are computed here)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from reports.plots import sparkline

NO_RUNS = "No runs in this database match: nothing to report. Train one with `python cli.py train tiny`."


def _n(x, fmt: str = ".4g") -> str:  # noqa: ANN001
    return "-" if x is None else format(x, fmt)


def _method(r: dict) -> str:
    if r["energy_method"] == "mixed":
        return f"mixed, {r['measured_share']:.1%} measured"
    return r["energy_method"]


def _devices(r: dict) -> str:
    if r["gpus_per_worker"] and r["device"] == "cuda":
        return f"{r['workers']}x{r['gpus_per_worker']} {r['gpu'] or 'GPU'}"
    return f"{r['workers']}x CPU"


def hms(seconds: float | None) -> str:
    if not seconds:
        return "0s"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{sec:02d}s" if m else f"{sec}s")


def _table(title: str, cols: list[str], left: int = 2) -> Table:
    t = Table(title=title, title_justify="left")
    for i, c in enumerate(cols):
        t.add_column(c, justify="left" if i < left else "right", no_wrap=True)
    return t


def carbon(c: Console, doc: dict) -> None:
    rows, tot = doc["runs"], doc["totals"]
    if not rows:
        c.print(NO_RUNS)
    else:
        t = _table(f"carbon: {tot['runs']} run(s)",
                   ["run", "model", "duration", "GPU-h", "device-h", "tokens", "IT kWh", "energy",
                    "PUE", "MWh", "kg/kWh", "tCO2eq", "gCO2eq/Mtok"])
        for r in rows:
            t.add_row(r["id"], r["model"], hms(r["duration_s"]), _n(r["gpu_hours"]),
                      _n(r["device_hours"]), f"{r['tokens']:,}", _n(r["energy_kwh"]),
                      _method(r), _n(r["pue"], ".3g"), _n(r["energy_mwh"], ".3g"),
                      _n(r["intensity_kg_per_kwh"], ".3f"), _n(r["tco2eq"], ".3g"),
                      _n(r["gco2eq_per_million_tokens"]))
        t.add_section()
        t.add_row("total", "", hms(tot["duration_s"]), _n(tot["gpu_hours"]), _n(tot["device_hours"]),
                  f"{tot['tokens']:,}", _n(tot["energy_kwh"]), "", "", _n(tot["energy_mwh"]), "",
                  _n(tot["tco2eq"], ".3g"), _n(tot["gco2eq_per_million_tokens"]))
        c.print(t)
        c.print("energy by run: " + "; ".join(f"{r['id']}: {r['energy_sources_detail']}"
                                              for r in rows))
        plans = [r for r in rows if r.get("plan") and "predicted_energy_mwh" in r["plan"]]
        for r in rows:
            if r.get("plan") and r["plan"].get("comparable") is False:
                c.print(f"plan vs actual for {r['id']} (plan {r['plan']['plan_id']}): "
                        f"{r['plan']['note']}")
        if plans:
            p = _table("plan vs actual", ["run", "option", "pred. MWh", "meas. MWh", "ratio",
                                          "pred. tCO2eq", "meas. tCO2eq", "ratio", "note"], left=2)
            for r in plans:
                x = r["plan"]
                p.add_row(r["id"], str(x["option"]), _n(x["predicted_energy_mwh"]),
                          _n(x["measured_energy_mwh"]), _n(x["ratio_energy_mwh"], ".3g"),
                          _n(x["predicted_tco2eq"]), _n(x["measured_tco2eq"]),
                          _n(x["ratio_tco2eq"], ".3g"), x["note"])
            c.print(p)
    if doc.get("reference"):
        reference(c, doc["reference"], rows)
    methodology(c, doc["methodology"])


def reference(c: Console, ref: list[dict], rows: list[dict]) -> None:
    t = _table("LLaMA Table 15 recomputed (400 W, PUE 1.1, 0.385 kg/kWh) beside our runs",
               ["model", "GPU-h", "MWh", "paper MWh", "tCO2eq", "paper t", "tokens",
                "kWh/Mtok", "gCO2eq/Mtok"], left=1)
    for r in ref:
        t.add_row(r["model"], f"{r['gpu_hours']:,.0f}", _n(r["energy_mwh"], ".1f"),
                  _n(r["paper_energy_mwh"], ".0f"), _n(r["tco2eq"], ".1f"),
                  _n(r["paper_tco2eq"], ".0f"), f"{r['tokens']:.3g}",
                  _n(r["kwh_per_million_tokens"]), _n(r["gco2eq_per_million_tokens"]))
    if rows:
        t.add_section()
    for r in rows:
        t.add_row(f"{r['id']} ({r['model']})", _n(r["gpu_hours"]), _n(r["energy_mwh"]), "",
                  _n(r["tco2eq"], ".3g"), "", f"{r['tokens']:.3g}",
                  _n(r["kwh_per_million_tokens"]), _n(r["gco2eq_per_million_tokens"]))
    c.print(t)
    c.print("tokens trained, from:")
    for r in ref:
        c.print(f"  {r['model']}: {r['tokens_source']}")


def methodology(c: Console, m: dict) -> None:
    c.print("methodology:")
    c.print(f"  formula: {m['formula']}")
    if "gpu_hours" in m:
        c.print(f"  GPU-hours: {m['gpu_hours']}")
    if "energy" in m:
        c.print(f"  energy: {m['energy']}")
    for p in m.get("pue") or []:
        c.print(f"  PUE {p['pue']:.3g}: {p['source']}")
    for i in m.get("intensity") or []:
        c.print(f"  intensity {i['intensity_kg_per_kwh']:.4g} kg CO2eq/kWh: {i['source']}")
    if "price" in m:
        c.print(f"  price: {m['price']}")
    if "plan_vs_actual" in m:
        c.print(f"  plan vs actual: {m['plan_vs_actual']}")
    if "reference" in m:
        c.print(f"  reference: {m['reference']['source']}")


def cost(c: Console, doc: dict) -> None:
    rows, tot = doc["runs"], doc["totals"]
    if not rows:
        c.print(NO_RUNS)
    else:
        t = _table(f"cost: {tot['runs']} run(s)", ["run", "model", "device", "duration", "GPU-h",
                                                     "$/GPU-h", "cost $", "$/Mtok", "price from"])
        for r in rows:
            t.add_row(r["id"], r["model"], _devices(r),
                      hms(r["duration_s"]), _n(r["gpu_hours"]), _n(r["price_usd_per_gpu_hour"], ".2f"),
                      _n(r["cost_usd"], ",.2f"), _n(r["cost_usd_per_million_tokens"]),
                      r["price_source"])
        t.add_section()
        t.add_row("total", "", "", hms(tot["duration_s"]), _n(tot["gpu_hours"]), "",
                  _n(tot["cost_usd"], ",.2f"), "", "")
        c.print(t)
        if tot.get("runs_without_price"):
            c.print(f"{tot['runs_without_price']} run(s) have no known price: give --price")
    methodology(c, doc["methodology"])


def run(c: Console, doc: dict) -> None:
    r, s = doc["run"], doc["series"]
    t = Table(show_header=False, title=f"run {r['id']} ({r['model']}, {r['status']})",
              title_justify="left")
    t.add_column("key", style="bold")
    t.add_column("value")
    rows = [
        ("time", f"{r['started_at']} .. {r['ended_at']} ({hms(r['duration_s'])}, {r['duration_basis']})"),
        ("devices", f"{r['workers']} worker(s) x {r['gpus_per_worker']} GPU ({r['gpu'] or r['device']}): "
                    f"{_n(r['gpu_hours'])} GPU-h, {_n(r['device_hours'])} device-h"),
        ("training", f"{r['steps']} steps, {r['tokens']:,} tokens, final loss {_n(r['final_loss'])}"),
        ("energy", f"{_n(r['energy_kwh'])} kWh IT, {r['energy_method']} ({r['energy_sources_detail']}); "
                   f"average {_n(r['average_power_w'])} W"),
        ("footprint", f"x PUE {r['pue']:.3g} = {_n(r['facility_energy_kwh'])} kWh; "
                      f"x {r['intensity_kg_per_kwh']:.4g} kg/kWh = {_n(r['tco2eq'], '.3g')} tCO2eq"),
    ]
    if r.get("plan") and r["plan"].get("comparable") is False:
        rows.append(("plan", r["plan"]["note"]))
    if r.get("plan") and "predicted_energy_mwh" in r["plan"]:
        p = r["plan"]
        rows.append(("plan", f"predicted {_n(p['predicted_energy_mwh'])} MWh / "
                             f"{_n(p['predicted_tco2eq'])} t, measured/predicted "
                             f"{_n(p['ratio_energy_mwh'], '.3g')} ({p['note']})"))
    for k, v in rows:
        t.add_row(k, v)
    st, pw = s["steps"], s["power"]
    for label, vals in (("loss", st["loss"]), ("tokens/s", st["tokens_per_s"]),
                        ("power W", pw["total_w"])):
        line = sparkline(vals)
        have = [v for v in vals if v is not None]
        t.add_row(label, f"{line}  {_n(min(have))} .. {_n(max(have))}" if line
                  else "no data recorded")
    for task, d in (s.get("eval_tasks") or {}).items():
        t.add_row(f"{task} acc", f"{sparkline(d['acc'])}  {100 * d['acc'][0]:.1f}% at "
                  f"{d['tokens'][0]:,} .. {100 * d['acc'][-1]:.1f}% at {d['tokens'][-1]:,} tokens")
    c.print(t)
    if doc.get("plot"):
        c.print(f"plot written to {doc['plot']}")
    methodology(c, doc["methodology"])
