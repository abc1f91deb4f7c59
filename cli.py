#!/usr/bin/env python3
"""tally: plan, train, meter and report LLaMA-style pre-training.

Thin on purpose: each command parses its options, calls one function that does the work, and
renders the result (rich for people, `--json` for programs). Exit codes: 0 success, 2 bad input
(one line on stderr), 1 a failure at run time.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Optional

import typer
from typer._click import exceptions as click  # typer 0.29 vendors click; pinned
from rich.console import Console
from rich.table import Table

from planners.errors import BadInput, RunFailed

__version__ = "0.1.0"

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  pretty_exceptions_enable=False,
                  help="tally: carbon- and cost-aware planning, training and accounting for "
                       "LLaMA-style pre-training.")


@dataclass
class Globals:
    json: bool = False
    verbose: bool = False
    home: Optional[str] = None
    db: Optional[str] = None


def out() -> Console:
    """Rich for people; in a pipe or CI a wide, colourless console so rows stay on one line."""
    tty = sys.stdout.isatty()
    return Console(file=sys.stdout, highlight=False, width=None if tty else 200,
                   no_color=not tty)


def err() -> Console:
    return Console(file=sys.stderr, highlight=False)


def g(ctx: typer.Context) -> Globals:
    root = ctx.find_root()
    if not isinstance(root.obj, Globals):
        root.obj = Globals()
    return root.obj


def emit(ctx: typer.Context, data: Any, human: Callable[[Console], None], json_flag: bool = False):
    """`--json`: exactly one JSON document on stdout. Otherwise the human rendering."""
    if json_flag or g(ctx).json:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    else:
        human(out())


def store_of(ctx: typer.Context):
    from orchestrator.home import Home
    from orchestrator.store import open_store

    opts = g(ctx)
    return open_store(opts.db, Home.resolve(opts.home))


def home_of(ctx: typer.Context):
    from orchestrator.home import Home

    return Home.resolve(g(ctx).home)


JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]


def _version(value: bool):
    if value:
        print(f"tally {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="More detail; tracebacks on internal errors.")] = False,
    home: Annotated[Optional[str], typer.Option("--home", envvar="TALLY_HOME", help="Where the database and run artefacts live (default ./.tally).")] = None,
    db: Annotated[Optional[str], typer.Option("--db", envvar="TALLY_DB", help="Database: a SQLite file or any SQLAlchemy URL (default $TALLY_HOME/tally.db).")] = None,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
):
    ctx.obj = Globals(json=json_, verbose=verbose, home=home, db=db)


# --- runs (issue 2) -------------------------------------------------------------------------
runs_app = typer.Typer(help="List runs, or show one.", invoke_without_command=True,
                       rich_markup_mode=None)
app.add_typer(runs_app, name="runs")


@runs_app.callback()
def runs_list(ctx: typer.Context, json_: JsonOpt = False,
              status: Annotated[Optional[str], typer.Option(help="Only runs with this status.")] = None):
    """List runs, newest first."""
    if ctx.invoked_subcommand is not None:
        return
    from reports.runs import list_runs

    rows = list_runs(store_of(ctx), status=status)
    emit(ctx, rows, lambda c: c.print(runs_table(rows)), json_)


@runs_app.command("show")
def runs_show(ctx: typer.Context, run_id: Annotated[str, typer.Argument(help="A run id from `runs`.")],
              json_: JsonOpt = False):
    """Show one run: configuration, status, steps, checkpoints, energy."""
    from reports.runs import show_run

    info = show_run(store_of(ctx), run_id)
    emit(ctx, info, lambda c: render_run(c, info), json_)


def runs_table(rows: list[dict]) -> Table | str:
    if not rows:
        return "No runs yet. Start one with `python cli.py train tiny`."
    t = Table(title=f"{len(rows)} run(s)")
    for col in ("id", "preset", "status", "steps", "tokens", "final loss", "energy kWh",
                "tCO2eq", "created (UTC)"):
        t.add_column(col, no_wrap=True, justify="right" if col in ("steps", "tokens", "final loss",
                                                      "energy kWh", "tCO2eq") else "left")
    for r in rows:
        t.add_row(r["id"], r["preset"], r["status"], str(r["steps"]), f"{r['tokens']:,}",
                  _num(r["final_loss"], ".4f"), _num(r.get("energy_kwh"), ".4f"),
                  _num(r.get("tco2eq"), ".2e"), (r["created_at"] or "")[:19])
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


def _num(x: Any, fmt: str) -> str:
    return "" if x is None else format(x, fmt)


# --- plan, models (issue 3) ---------------------------------------------------------------


# --- data (issue 4) -------------------------------------------------------------------------


# --- train (issue 5) ------------------------------------------------------------------------


# --- report (issue 7) -----------------------------------------------------------------------


# --- cluster, dashboard (issue 8) -----------------------------------------------------------


# --- schedule (issue 9) ---------------------------------------------------------------------


# --- sweep, fit (issue 10) ------------------------------------------------------------------
@app.command("sweep")
def sweep_cmd(
    ctx: typer.Context,
    budgets: Annotated[str, typer.Option(help="Compute budgets in FLOPs, comma-separated (1e13,3e13,1e14).")],
    sizes: Annotated[int, typer.Option(help="Model sizes per budget.")] = 3,
    data: Annotated[str, typer.Option(help="Prepared data set to train on.")] = "demo",
    seed: Annotated[int, typer.Option(help="Seed of every run in the sweep.")] = 0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the ladder and what is left; train nothing.")] = False,
    flops_per_s: Annotated[str, typer.Option(help="Assumed training throughput (6*N FLOPs per token) for the predicted time.")] = "1.5e11",
    tokens_per_param: Annotated[float, typer.Option(help="Prior tokens per parameter at the optimum: the ladder's centre.")] = 20.0,
    spread: Annotated[float, typer.Option(help="Largest size over the prior optimum (smallest: its inverse).")] = 3.0,
    batch_tokens: Annotated[str, typer.Option(help="Tokens per optimiser step.")] = "2048",
    json_: JsonOpt = False,
):
    """Train an IsoFLOP ladder: for each budget, `--sizes` models with D = C/(6N) (resumable)."""
    from orchestrator.sweep import run_sweep
    from planners.units import parse_count, parse_int_count

    budget_list = [parse_count(b, "budget") for b in budgets.split(",") if b.strip()]
    info = run_sweep(store_of(ctx), budget_list, sizes, data=data, seed=seed, dry_run=dry_run,
                     flops_per_s=parse_count(flops_per_s, "--flops-per-s"),
                     tokens_per_param=tokens_per_param, spread=spread,
                     batch_tokens=parse_int_count(batch_tokens, "--batch-tokens"),
                     progress=lambda item: err().print(
                         f"training budget {item.point.budget_flops:.2g} FLOPs, "
                         f"N={item.point.params:,}, D={item.point.tokens:,}"))
    emit(ctx, info, lambda c: render_sweep(c, info), json_)


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
                  f"{p['steps']:,}", _secs(p["predicted_time_s"]), p["status"],
                  _num(p["val_loss"], ".4f"), p["run_id"] or "")
    c.print(t)
    for p in info["points"]:
        for note in p["notes"] + ([p["note"]] if p["note"] else []):
            c.print(f"note (C={p['budget_flops']:.2g}, #{p['size_index']}): {note}")
    c.print(f"{info['done']} done, {info['todo']} to train, predicted {_secs(info['predicted_time_s_left'])} "
            f"left at an assumed {a['flops_per_s']:.3g} FLOP/s (6*N*D; --flops-per-s); "
            f"lr {a['lr']}, batch {a['batch_tokens']} tokens, seq {a['seq_len']}, vocab {a['vocab_size']}")
    if info["dry_run"]:
        c.print("dry run: nothing trained. Fit the finished runs with "
                f"`cli.py fit NAME --sweep {info['sweep_id']}`.")


def _secs(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


@app.command("fit")
def fit_cmd(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Name to store the fit under (or to show, with --show).")],
    runs: Annotated[Optional[str], typer.Option(help="Run ids, comma-separated (default: every run with a validation loss).")] = None,
    sweep: Annotated[Optional[str], typer.Option(help="Fit the runs of this sweep id.")] = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap refits for the intervals (0: none).")] = 200,
    level: Annotated[float, typer.Option(help="Confidence level of the intervals.")] = 0.9,
    show: Annotated[bool, typer.Option("--show", help="Show the stored fit NAME; fit nothing.")] = False,
    plot: Annotated[Optional[str], typer.Option(help="Also write a PNG of the IsoFLOP curves and the fit.")] = None,
    holdout: Annotated[Optional[str], typer.Option(help="Run ids to leave out of the fit and predict (comma-separated).")] = None,
    json_: JsonOpt = False,
):
    """Fit L(N,D) = E + A/N^alpha + B/D^beta to runs' validation losses (Chinchilla's method)."""
    from orchestrator.fits import fit_runs, load_fit

    store = store_of(ctx)
    if show:
        rec = load_fit(store, name)
    else:
        run_ids = [r.strip() for r in runs.split(",") if r.strip()] if runs is not None else None
        held = [r.strip() for r in holdout.split(",") if r.strip()] if holdout else None
        rec = fit_runs(store, name, run_ids=run_ids, sweep_id=sweep, bootstrap=bootstrap,
                       level=level, holdout=held)
    if plot:
        from reports.scaling_plot import plot_fit

        rec["plot"] = str(plot_fit(rec, plot))
    data = {**rec, "details": {k: v for k, v in rec["details"].items() if k != "bootstrap"}}
    emit(ctx, data, lambda c: render_fit(c, rec), json_)


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


@app.command("fits")
def fits_cmd(ctx: typer.Context, json_: JsonOpt = False):
    """List the stored scaling-law fits."""
    from orchestrator.fits import list_fits

    rows = list_fits(store_of(ctx))

    def human(c: Console) -> None:
        if not rows:
            c.print("No fits yet. Make one with `python cli.py fit NAME --sweep SWEEP_ID`.")
            return
        t = Table(title=f"{len(rows)} fit(s)")
        for col in ("name", "E", "A", "B", "alpha", "beta", "a", "b", "runs", "created (UTC)"):
            t.add_column(col, justify="left" if col in ("name", "created (UTC)") else "right")
        for f in rows:
            k, e = f["constants"], f["exponents"] or {}
            t.add_row(f["name"], *(f"{k[x]:.4g}" for x in ("E", "A", "B", "alpha", "beta")),
                      _num(e.get("a"), ".3f"), _num(e.get("b"), ".3f"), str(f["n_runs"]),
                      f["created_at"][:19])
        c.print(t)

    emit(ctx, rows, human, json_)




def main(argv: list[str] | None = None) -> int:
    """Run the CLI; map bad input to exit 2 with one line, run-time failures to exit 1."""
    command = typer.main.get_command(app)
    verbose = "--verbose" in (argv or sys.argv) or "-v" in (argv or sys.argv)
    try:
        rv = command.main(args=argv, prog_name="cli.py", standalone_mode=False)
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except click.NoSuchOption as e:
        hint = f"; did you mean {', '.join(e.possibilities)}?" if e.possibilities else ""
        print(f"error: no such option {e.option_name}{hint} (see --help)", file=sys.stderr)
        return 2
    except click.UsageError as e:
        where = f" (see `cli.py {e.ctx.command_path.split(' ', 1)[1]} --help`)" \
            if e.ctx and " " in e.ctx.command_path else " (see `cli.py --help`)"
        print(f"error: {e.format_message()}{where}".replace("\n", " "), file=sys.stderr)
        return 2
    except (click.Abort, typer.Abort):
        print("aborted", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except RunFailed as e:
        print(f"failed: {e}", file=sys.stderr)
        return 1
    except typer.Exit as e:
        return e.exit_code
    except click.ClickException as e:
        print(f"error: {e.format_message()}", file=sys.stderr)
        return 2
    except Exception as e:  # an internal error: say so on one line; the traceback with -v
        if verbose:
            raise
        print(f"internal error: {type(e).__name__}: {e} (rerun with --verbose for the traceback)",
              file=sys.stderr)
        return 1
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":
    sys.exit(main())
