"""Scaling-law fits from a team's own runs, kept in the store's `fits` table.

A finished run records its validation loss as a RunEvent of kind "eval" with details
{"step", "tokens", "val_loss", "params"} (the trainer writes it at the end of each run).
`fit_runs` gathers those, fits L(N, D) with `planners.fitting`, and stores the result under a
name; `load_fit` gives it back to `plan --fit NAME` and to `fit --show`. `fit_csv` does the same
for runs trained elsewhere (a team's earlier runs, published results), read from a CSV file
with columns params, tokens, loss and an optional name.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from sqlalchemy import select

from orchestrator.store import Fit, Run, RunEvent, Store, utcnow
from planners.errors import BadInput
from planners.fitting import KEYS, FitResult, Point, fit_points, predict
from planners.units import parse_count

CSV_COLUMNS = ("params", "tokens", "loss")

KEEP_BOOTSTRAP = 200  # bootstrap constant sets kept with a fit (for interval_laws)
_NAME_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def final_val_loss(store: Store, run_id: str) -> dict | None:
    """The run's newest "eval" event as {"run_id", "step", "tokens", "val_loss", "params",
    "time"}, or None when it recorded none."""
    with store.read() as s:
        ev = s.scalars(select(RunEvent).where(RunEvent.run_id == run_id, RunEvent.kind == "eval")
                       .order_by(RunEvent.time.desc(), RunEvent.id.desc()).limit(1)).first()
    if ev is None:
        return None
    return {"run_id": run_id, **(ev.details or {}), "time": ev.time.isoformat(timespec="seconds") + "Z"}


def sweep_runs(store: Store, sweep_id: str) -> list[Run]:
    """Runs made by `sweep` with this id (config["sweep"]["id"]), oldest first."""
    with store.read() as s:
        runs = list(s.scalars(select(Run).order_by(Run.created_at)))
    return [r for r in runs if isinstance(r.config, dict)
            and (r.config.get("sweep") or {}).get("id") == sweep_id]


def points_from_runs(store: Store, run_ids: list[str] | None = None,
                     sweep_id: str | None = None) -> list[Point]:
    """(N, D, validation loss) for the given runs, the runs of a sweep, or (neither given) every
    run that recorded a validation loss. BadInput for an unknown run or one without a loss."""
    if run_ids is not None and sweep_id is not None:
        raise BadInput("give --runs or --sweep, not both")
    if sweep_id is not None:
        runs = sweep_runs(store, sweep_id)
        if not runs:
            raise BadInput(f"no runs belong to sweep {sweep_id!r}; `cli.py sweep` prints its id")
    elif run_ids is not None:
        if not run_ids:
            raise BadInput("--runs is empty; give run ids separated by commas")
        runs = [store.get_run(rid) for rid in run_ids]  # BadInput for an unknown id
    else:
        with store.read() as s:
            runs = list(s.scalars(select(Run).order_by(Run.created_at)))
        runs = [r for r in runs if final_val_loss(store, r.id) is not None]
        if not runs:
            raise BadInput("no run has recorded a validation loss yet; train some runs "
                           "(e.g. `cli.py sweep ...`) or give --runs")
    points, missing = [], []
    for run in runs:
        ev = final_val_loss(store, run.id)
        if ev is None or ev.get("val_loss") is None:
            missing.append(run.id)
            continue
        try:
            params, tokens = float(ev["params"]), float(ev["tokens"])
            loss = float(ev["val_loss"])
        except (KeyError, TypeError, ValueError):
            raise BadInput(f"run {run.id!r} has an eval record without params, tokens and "
                           "val_loss; it cannot be fitted") from None
        sweep = (run.config or {}).get("sweep") or {}
        points.append(Point(params=params, tokens=tokens, loss=loss, run_id=run.id,
                            budget_flops=sweep.get("budget_flops")))
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise BadInput(f"{len(missing)} run(s) have no validation loss ({shown}); only finished "
                       "runs record one: leave these out of --runs or finish them")
    return points


def points_from_csv(path: str | Path) -> list[Point]:
    """(N, D, loss) rows of a CSV file with a header naming params, tokens, loss (any order,
    any case) and optionally name; counts may carry suffixes (70B, 1.4T). BadInput naming the
    file and line of the first bad row."""
    p = Path(path)
    if not p.is_file():
        raise BadInput(f"--points {str(path)!r}: no such file; give a CSV with columns "
                       "params,tokens,loss (and optionally name)")
    with p.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise BadInput(f"--points {p}: the file is empty; it needs a header params,tokens,loss")
        cols = {h.strip().lower(): i for i, h in enumerate(header)}
        missing = [c for c in CSV_COLUMNS if c not in cols]
        if missing:
            raise BadInput(f"--points {p} line 1: the header lacks {', '.join(missing)}; it has "
                           f"{', '.join(h.strip() for h in header)} (needed: params,tokens,loss, "
                           "optional name)")
        points = []
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) < len(header):
                raise BadInput(f"--points {p} line {line}: {len(row)} fields, the header has "
                               f"{len(header)}")
            values = {}
            for c in CSV_COLUMNS:
                cell = row[cols[c]].strip()
                try:
                    values[c] = float(cell) if c == "loss" else parse_count(cell, c)
                except (ValueError, BadInput):
                    raise BadInput(f"--points {p} line {line}: {c} {cell!r} is not a positive "
                                   "number (counts may be written 70B, 1.4T, 2e12)") from None
                if not (math.isfinite(values[c]) and values[c] > 0):
                    raise BadInput(f"--points {p} line {line}: {c} {cell!r} must be finite and "
                                   "> 0")
            label = row[cols["name"]].strip() if "name" in cols else ""
            points.append(Point(params=values["params"], tokens=values["tokens"],
                                loss=values["loss"], run_id=label or f"line {line}"))
    return points


def fit_csv(store: Store, name: str, path: str | Path, bootstrap: int = 200, level: float = 0.9,
            seed: int = 0, holdout: list[str] | None = None) -> dict:
    """Fit the law to the points of a CSV file (see points_from_csv) and store it under `name`,
    like a fit of this store's runs: `plan --fit NAME` uses it. `holdout` names rows (their name
    column, or "line N")."""
    check_name(name)
    points = points_from_csv(path)
    held = []
    if holdout:
        known = {p.run_id for p in points}
        unknown = [h for h in holdout if h not in known]
        if unknown:
            raise BadInput(f"--holdout {unknown[0]!r} is not a row of {path} (give its name "
                           "column, or 'line N')")
        held = [p for p in points if p.run_id in holdout]
        points = [p for p in points if p.run_id not in holdout]
    result = fit_points(points, bootstrap=bootstrap, level=level, seed=seed)
    source = {"points": str(Path(path).resolve()), "rows": len(points) + len(held),
              "holdout": holdout or []}
    replaced = save_fit(store, name, result, source=source, holdout=holdout_errors(result, held))
    return {**load_fit(store, name), "replaced": replaced}


def fit_runs(store: Store, name: str, run_ids: list[str] | None = None,
             sweep_id: str | None = None, bootstrap: int = 200, level: float = 0.9,
             seed: int = 0, holdout: list[str] | None = None) -> dict:
    """Fit the law to the runs' losses, store it under `name` (replacing one of that name) and
    return the stored record (see `load_fit`). Runs named in `holdout` are left out of the fit
    and their losses compared with its predictions (details["holdout"])."""
    check_name(name)
    points = points_from_runs(store, run_ids, sweep_id)
    held = []
    if holdout:
        known = {p.run_id for p in points}
        unknown = [h for h in holdout if h not in known]
        if unknown:
            raise BadInput(f"--holdout run {unknown[0]!r} is not among the runs being fitted; "
                           "hold out runs of the same --runs/--sweep")
        held = [p for p in points if p.run_id in holdout]
        points = [p for p in points if p.run_id not in holdout]
    result = fit_points(points, bootstrap=bootstrap, level=level, seed=seed)
    source = {"runs": run_ids, "sweep": sweep_id, "holdout": holdout or []}
    replaced = save_fit(store, name, result, source=source, holdout=holdout_errors(result, held))
    return {**load_fit(store, name), "replaced": replaced}


def holdout_errors(result: FitResult, held: list[Point]) -> list[dict]:
    """Held-out runs: their loss against the fit's prediction."""
    rows = []
    for p in held:
        y = float(predict(result.constants, p.params, p.tokens))
        rows.append({"run_id": p.run_id, "params": p.params, "tokens": p.tokens, "loss": p.loss,
                     "predicted": y, "error": p.loss - y, "error_pct": 100 * (p.loss - y) / y})
    return rows


def check_name(name: str) -> None:
    if not name or len(name) > 64 or not set(name) <= _NAME_OK:
        raise BadInput(f"fit name {name!r} must be 1-64 letters, digits, '-', '_' or '.'")


def save_fit(store: Store, name: str, result: FitResult, source: dict | None = None,
             holdout: list[dict] | None = None) -> bool:
    """Store `result` under `name`; True when it replaced an earlier fit of that name."""
    check_name(name)
    details = {
        "intervals": result.intervals, "level": result.level,
        "exponents": result.exponents, "objective": result.objective,
        "bootstrap": result.bootstrap[:KEEP_BOOTSTRAP], "n_bootstrap": len(result.bootstrap),
        "residuals": result.residuals, "run_ids": [r["run_id"] for r in result.residuals],
        "n_runs": result.n_runs, "converged": result.converged, "notes": result.notes,
        "method": "Chinchilla appendix D.2: Huber(delta=1e-3) on log loss, L-BFGS-B from the "
                  f"best {result.starts} points of the 4,500-point grid",
        "source": source or {}, "holdout": holdout or [],
    }
    constants = {k: float(result.constants[k]) for k in KEYS}
    with store.write() as s:
        row = s.get(Fit, name)
        if row is None:
            s.add(Fit(name=name, constants=constants, details=details))
            return False
        row.constants, row.details, row.created_at = constants, details, utcnow()
        return True


def list_fits(store: Store) -> list[dict]:
    with store.read() as s:
        rows = list(s.scalars(select(Fit).order_by(Fit.name)))
    return [{"name": f.name, "created_at": f.created_at.isoformat(timespec="seconds") + "Z",
             "constants": f.constants, "n_runs": (f.details or {}).get("n_runs"),
             "exponents": (f.details or {}).get("exponents")} for f in rows]


def load_fit(store: Store, name: str) -> dict:
    """{"name", "created_at", "constants", "details"}; BadInput naming the stored fits."""
    with store.read() as s:
        row = s.get(Fit, name)
        known = list(s.scalars(select(Fit.name).order_by(Fit.name)))
    if row is None:
        listing = ", ".join(known) if known else "none yet (make one with `cli.py fit NAME`)"
        raise BadInput(f"no fit named {name!r}; stored fits: {listing}")
    c = row.constants or {}
    if not all(isinstance(c.get(k), (int, float)) and math.isfinite(c[k]) for k in KEYS):
        raise BadInput(f"fit {name!r} lacks finite constants {', '.join(KEYS)}; refit it")
    return {"name": row.name, "created_at": row.created_at.isoformat(timespec="seconds") + "Z",
            "constants": dict(c), "details": dict(row.details or {})}
