"""`eval RUN_ID|DIR`: score task files on a run's checkpoint or on an exported or imported
Llama directory, and the checkpoint's perplexity on a validation split.

A run: its newest intact checkpoint (or `--step`), read as `export` reads it, with the
tokenizer the run trained with; the perplexity is on the run's own dataset's validation split.
A directory (Hugging Face or Meta, as `train --init-from` reads it): its tokenizer.model; the
perplexity only with `--data` (a dataset prepared with that tokenizer).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from planners.errors import BadInput

MAX_VAL_TOKENS = 1 << 18  # perplexity on the first 262,144 validation targets at most


@dataclass
class Loaded:
    model: object  # model.llama.Transformer, eval mode
    tok: object  # model.tokenizer.Tokenizer
    seq_len: int
    source: dict  # what was loaded: kind, run_id/path, step
    data: str | None  # the dataset for the perplexity


def _device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_run(store, home, run_id: str, step: int | None) -> Loaded:
    from model.llama import Transformer
    from model.tokenizer import Tokenizer
    from orchestrator.run.export import _join, _run_args, _run_tokenizer, choose, read_model_state
    from orchestrator.run.launch import resolve_preset
    from orchestrator.run.spec import stored_settings

    if step is not None and step < 1:
        raise BadInput(f"--step must be >= 1, got {step}")
    run = store.get_run(run_id)  # BadInput: no such run
    if not run.storage_path:
        raise BadInput(f"run {run_id} has no storage (it never started); complete "
                       "checkpoints: none")
    ckpt = choose(_join(run.storage_path, "checkpoints"), step, run_id)
    args = _run_args(run)
    tok = Tokenizer(_run_tokenizer(run, home))
    model = Transformer(args)
    try:
        model.load_state_dict(read_model_state(ckpt.url))
    except RuntimeError as e:
        raise BadInput(f"checkpoint {ckpt.url} does not hold {run.preset}'s tensors "
                       f"({str(e).splitlines()[0]})") from None
    settings = stored_settings(run.config)
    seq_len = (run.config or {}).get("seq_len") or resolve_preset(  # the launch's, as run
        run.preset, settings.get("custom_preset")).seq_len
    return Loaded(model.eval(), tok, int(min(seq_len, args.max_seq_len)),
                  {"kind": "run", "run_id": run_id, "step": ckpt.step, "checkpoint": ckpt.url,
                   "preset": run.preset}, settings.get("data"))


def load_dir(directory: str, data: str | None) -> Loaded:
    from model.llama import Transformer
    from model.tokenizer import Tokenizer, TokenizerError
    from orchestrator.run.init_from import check_shapes, load_into, open_source

    src = open_source(directory)
    if not src.tokenizer.is_file():
        raise BadInput(f"{str(src.path)!r} has no SentencePiece tokenizer.model; eval reads "
                       "the tokenizer from it")
    try:
        tok = Tokenizer(src.tokenizer)
    except TokenizerError as e:
        raise BadInput(f"{str(src.path)!r}: {e}") from None
    check_shapes(src, src.args, "its own config")
    model = Transformer(src.args)
    load_into(model, src.path)
    return Loaded(model.eval(), tok, src.args.max_seq_len,
                  {"kind": "dir", "path": str(src.path), "format": src.format, "step": None},
                  data)


def _validation(loaded: Loaded, home, device, batch_size: int) -> dict:
    """The perplexity block of the result: the numbers, or why there are none."""
    from orchestrator.data import open_dataset
    from orchestrator.eval.scoring import perplexity

    if not loaded.data:
        return {"perplexity": None, "absent": "no dataset: give --data NAME (prepared with this "
                "directory's tokenizer) for a validation perplexity"}
    try:
        val = open_dataset(loaded.data, home=home, split="val")
    except BadInput as e:
        return {"perplexity": None, "absent": str(e)}
    if loaded.source["kind"] == "dir" and val.manifest["tokenizer"]["id"] != loaded.tok.id:
        raise BadInput(f"dataset {loaded.data!r} was prepared with tokenizer "
                       f"{val.manifest['tokenizer']['id']}, not {loaded.source['path']}'s "
                       f"({loaded.tok.id}); give --data a dataset prepared with its tokenizer")
    res = perplexity(loaded.model, val, loaded.seq_len, batch_size=batch_size,
                     max_tokens=MAX_VAL_TOKENS, device=device)
    if res is None:
        return {"perplexity": None, "absent": f"dataset {loaded.data!r}'s validation split is "
                f"shorter than one sequence of {loaded.seq_len} tokens"}
    return {**res, "data": loaded.data, "split": "val"}


def evaluate(store, home, target: str, *, tasks: list[str], step: int | None = None,
             limit: int | None = None, batch_size: int = 16, fmt: str | None = None,
             data: str | None = None) -> dict:
    """Score `tasks` (files) on `target` (a run id or a directory); the `eval` command."""
    from orchestrator.eval.readers import load_tasks
    from orchestrator.eval.scoring import score_items, summarize

    if batch_size < 1:
        raise BadInput(f"--batch-size must be >= 1, got {batch_size}")
    if limit is not None and limit < 1:
        raise BadInput(f"--limit must be >= 1, got {limit}")
    if not tasks:
        raise BadInput("--tasks needs at least one task file (FILE[,FILE...])")
    items = load_tasks(tasks, fmt, limit)  # every file checked before a model is read
    is_dir = Path(target).expanduser().is_dir()
    if not is_dir and ("/" in target or Path(target).expanduser().exists()):
        raise BadInput(f"{target!r} is neither a run id nor a directory; give a run id from "
                       "`runs`, or a Hugging Face or Meta Llama directory")
    if is_dir and step is not None:
        raise BadInput(f"--step picks a run's checkpoint; {target!r} is a directory")
    if not is_dir and data is not None:
        raise BadInput("--data is for a directory; a run's perplexity is on its own dataset")
    t0 = time.perf_counter()
    loaded = load_dir(target, data) if is_dir else load_run(store, home, target, step)
    device = _device()
    loaded.model.to(device)
    t_loaded = time.perf_counter()
    counts, plan = score_items(loaded.model, loaded.tok, items, batch_size=batch_size,
                               max_len=loaded.model.args.max_seq_len, device=device)
    t_scored = time.perf_counter()
    validation = _validation(loaded, home, device, batch_size)
    t_done = time.perf_counter()
    return {"source": loaded.source, "tasks": summarize(counts),
            "perplexity": validation["perplexity"], "validation": validation,
            "requests": len(plan.uses), "rows": len(plan.rows),
            "forwards": -(-len(plan.rows) // batch_size), "batch_size": batch_size,
            "device": str(device), "items": len(items),
            "items_per_s": len(items) / max(t_scored - t_loaded, 1e-9),
            "seconds": {"load": round(t_loaded - t0, 3), "score": round(t_scored - t_loaded, 3),
                        "perplexity": round(t_done - t_scored, 3),
                        "total": round(t_done - t0, 3)}}
