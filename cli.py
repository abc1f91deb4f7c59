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
report_app = typer.Typer(help="Carbon, cost and per-run reports.", no_args_is_help=True,
                         rich_markup_mode=None)
app.add_typer(report_app, name="report")
RunsOpt = Annotated[Optional[list[str]], typer.Option("--run", help="Only this run id (repeatable).")]
SinceOpt = Annotated[Optional[str], typer.Option(help="Runs started since an ISO date/time or an age: 2026-11-01, 7d, 12h.")]
PresetOpt = Annotated[Optional[str], typer.Option(help="Only runs of this preset.")]
CsvOpt = Annotated[Optional[str], typer.Option("--csv", help="Also write the per-run rows to this CSV file.")]


@report_app.command("carbon")
def report_carbon(
    ctx: typer.Context, json_: JsonOpt = False, run: RunsOpt = None, since: SinceOpt = None,
    preset: PresetOpt = None,
    pue: Annotated[Optional[float], typer.Option(help="Override every run's PUE (LLaMA: 1.1).")] = None,
    intensity: Annotated[Optional[float], typer.Option(help="Override the grid intensity, kg CO2eq/kWh (LLaMA: 0.385).")] = None,
    region: Annotated[Optional[str], typer.Option(help="Override the grid intensity by region: gcp:europe-west9, FRA, us:iowa.")] = None,
    reference: Annotated[Optional[str], typer.Option(help="Add a published reference: llama (Table 15).")] = None,
    csv: CsvOpt = None,
    emissions_csv: Annotated[Optional[str], typer.Option("--emissions-csv", help="Write the runs in codecarbon's emissions.csv columns.")] = None,
):
    """Energy (measured or estimated), MWh and tCO2eq per run and in total."""
    from reports import export, render
    from reports.carbon import Overrides, carbon_report

    export.check_paths(csv=csv, emissions_csv=emissions_csv)
    doc = carbon_report(store_of(ctx), run_ids=run, since=since, preset=preset, reference=reference,
                        overrides=Overrides(pue=pue, intensity_kg_per_kwh=intensity, region=region))
    if csv:
        export.write_csv(csv, doc["runs"])
    if emissions_csv:
        export.write_emissions_csv(emissions_csv, doc["runs"])
    emit(ctx, doc, lambda c: render.carbon(c, doc), json_)


@report_app.command("cost")
def report_cost(
    ctx: typer.Context, json_: JsonOpt = False, run: RunsOpt = None, since: SinceOpt = None,
    preset: PresetOpt = None,
    price: Annotated[Optional[float], typer.Option(help="Price in $ per GPU-hour for every run (default: run config, else the GPU catalogue).")] = None,
    csv: CsvOpt = None,
):
    """GPU-hours x price per GPU-hour, per run and in total."""
    from reports import export, render
    from reports.cost import cost_report

    export.check_paths(csv=csv)
    doc = cost_report(store_of(ctx), run_ids=run, since=since, preset=preset, price=price)
    if csv:
        export.write_csv(csv, doc["runs"])
    emit(ctx, doc, lambda c: render.cost(c, doc), json_)


@report_app.command("run")
def report_run(
    ctx: typer.Context, run_id: Annotated[str, typer.Argument(help="A run id from `runs`.")],
    json_: JsonOpt = False,
    plot: Annotated[Optional[str], typer.Option(help="Write loss, tokens/s and power over time to this PNG.")] = None,
    pue: Annotated[Optional[float], typer.Option(help="Override the run's PUE.")] = None,
    intensity: Annotated[Optional[float], typer.Option(help="Override the grid intensity, kg CO2eq/kWh.")] = None,
    region: Annotated[Optional[str], typer.Option(help="Override the grid intensity by region.")] = None,
):
    """One run: summary, footprint, loss / tokens-per-s / power over time (terminal and PNG)."""
    from reports import render
    from reports.carbon import Overrides
    from reports.run_report import run_report

    doc = run_report(store_of(ctx), run_id, plot=plot,
                     overrides=Overrides(pue=pue, intensity_kg_per_kwh=intensity, region=region))
    emit(ctx, doc, lambda c: render.run(c, doc), json_)



# --- cluster, dashboard (issue 8) -----------------------------------------------------------


# --- schedule (issue 9) ---------------------------------------------------------------------


# --- sweep, fit (issue 10) ------------------------------------------------------------------




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
