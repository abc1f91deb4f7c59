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
schedule_app = typer.Typer(help="Carbon-aware timing: simulate policies over a forecast; a job "
                                "queue started in priority order inside carbon windows and "
                                "budgets.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(schedule_app, name="schedule")


@schedule_app.command("simulate")
def schedule_simulate(
    ctx: typer.Context,
    energy_mwh: Annotated[float, typer.Option("--energy-mwh", help="The job's facility energy (MWh).")],
    hours: Annotated[float, typer.Option("--hours", help="The job's running time (hours).")],
    forecast: Annotated[Optional[str], typer.Option(help="Intensity time series: Electricity Maps, WattTime or UK National Grid JSON, or CSV time,zone,g_per_kwh.")] = None,
    region: Annotated[Optional[str], typer.Option(help="Instead of --forecast: a static yearly average from codecarbon's data (e.g. DEU, gcp:europe-west9).")] = None,
    deadline: Annotated[Optional[str], typer.Option(help="ISO time or a duration after --start (48h). Default: the forecast's end.")] = None,
    threshold: Annotated[Optional[float], typer.Option(help="Threshold policy: pause above this many g CO2eq/kWh. Default: the median of the forecast.")] = None,
    start: Annotated[Optional[str], typer.Option(help="When the job could start (ISO time). Default: the forecast's first time.")] = None,
    zone: Annotated[Optional[str], typer.Option(help="The zone to read from a CSV holding several.")] = None,
    max_hold: Annotated[Optional[str], typer.Option("--max-hold", help="Bridge missing points by holding the last value this long (default 1h); longer silences are gaps.")] = None,
    json_: JsonOpt = False,
):
    """Replay each policy (now, delay, suspend, threshold) over a forecast: tCO2eq, finish, savings."""
    from orchestrator.scheduler import simulate_request

    res = simulate_request(forecast=forecast, region=region, energy_mwh=energy_mwh, hours=hours,
                           deadline=deadline, threshold_g_per_kwh=threshold, start=start,
                           zone=zone, max_hold=max_hold)
    emit(ctx, res, lambda c: render_simulation(c, res), json_)


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
                  f"{r['paused_hours']:.1f}", _num(r["tco2eq"], ".4f"),
                  _num(r["saved_tco2eq"], ".4f"), _num(r["saved_percent"], ".1f"))
    c.print(t)


@schedule_app.command("add")
def schedule_add(
    ctx: typer.Context,
    preset: Annotated[str, typer.Argument(help="Model preset (tiny, small, 1b, 7b, ...).")],
    priority: Annotated[int, typer.Option(help="Higher starts first.")] = 0,
    deadline: Annotated[Optional[str], typer.Option(help="ISO time or a duration from now (48h).")] = None,
    policy: Annotated[Optional[str], typer.Option(help="now, delay, suspend or threshold (all but now need --forecast). Default: delay with --forecast, else now.")] = None,
    forecast: Annotated[Optional[str], typer.Option(help="Intensity forecast file for the carbon window.")] = None,
    threshold: Annotated[Optional[float], typer.Option(help="g CO2eq/kWh for --policy threshold.")] = None,
    hours: Annotated[Optional[float], typer.Option(help="Predicted running time (hours), e.g. from `plan`.")] = None,
    energy_mwh: Annotated[Optional[float], typer.Option("--energy-mwh", help="Predicted facility energy (MWh).")] = None,
    cost_usd: Annotated[Optional[float], typer.Option("--cost-usd", help="Predicted cost ($).")] = None,
    max_usd: Annotated[Optional[float], typer.Option("--max-usd", help="Budget in dollars.")] = None,
    max_tco2: Annotated[Optional[float], typer.Option("--max-tco2", help="Budget in tCO2eq.")] = None,
    max_mwh: Annotated[Optional[float], typer.Option("--max-mwh", help="Budget in MWh.")] = None,
    json_: JsonOpt = False,
):
    """Queue a training job."""
    from orchestrator.jobqueue import add_job

    job = add_job(store_of(ctx), preset, priority=priority, deadline=deadline, policy=policy,
                  forecast=forecast, threshold_g_per_kwh=threshold, hours=hours,
                  energy_mwh=energy_mwh, cost_usd=cost_usd, max_usd=max_usd, max_tco2=max_tco2,
                  max_mwh=max_mwh)
    emit(ctx, job, lambda c: c.print(f"queued {job['id']} (priority {job['priority']}, "
                                     f"policy {job['options']['policy']}, deadline "
                                     f"{job['options']['deadline'] or 'none'})"), json_)


@schedule_app.command("list")
def schedule_list(ctx: typer.Context, json_: JsonOpt = False,
                  status: Annotated[Optional[str], typer.Option(help="Only jobs with this status.")] = None):
    """List jobs in queue order (priority, then age)."""
    from orchestrator.jobqueue import list_jobs

    rows = list_jobs(store_of(ctx), status)
    emit(ctx, rows, lambda c: c.print(jobs_table(rows)), json_)


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


@schedule_app.command("run")
def schedule_run(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would start, wait or be refused; change nothing.")] = False,
    now: Annotated[Optional[str], typer.Option(help="Decide as if it were this ISO time (replaying an old forecast).")] = None,
    json_: JsonOpt = False,
):
    """Start queued jobs in priority order, inside their carbon windows and budgets."""
    from orchestrator.jobqueue import run_queue
    from orchestrator.signals import parse_time

    try:
        at = parse_time(now)[0] if now else None
    except ValueError:
        raise BadInput(f"--now {now!r} is not an ISO time (e.g. 2026-11-20T06:00Z)") from None
    res = run_queue(store_of(ctx), now=at, dry_run=dry_run)
    emit(ctx, res, lambda c: render_queue(c, res), json_)


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
                  _num(d["expected_tco2eq"], ".4f"), _num(d["tco2eq_if_now"], ".4f"), why)
    c.print(t)



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
