"""`data prepare`: sources -> tokenizer -> tokens -> mixture -> shards + manifest, as a stream.

    prepare(sources, name, home, ...)  -> the manifest of $TALLY_HOME/data/<name>/

Four passes, none of which holds the corpus:
1. sample  (skipped with --tokenizer) every unit's lines with the smallest seeded priorities,
           merged into one sample of `tokenizer_sentences` lines; SentencePiece trains on it;
2. encode  every unit on the workers (processes here, Ray tasks with --address) into a spill
           file of tokens plus one row of facts per document;
3. mix     from those rows: duplicates, each source's epochs, the interleaved, window-shuffled
           order (orchestrator/data/mix.py);
4. write   the shards, reading each document's tokens back from its spill file.

Memory: the processes are sized to `memory_bytes` (default 1 GB for the whole process tree);
each holds one batch of text and its tokens; the driver keeps 32 bytes per document and the
shuffle window. Disk: the spill files (the corpus's tokens once) beside the shards.

The work happens in `$TALLY_HOME/data/.<name>.work-<fingerprint>/`, the fingerprint covering
every input and option. An interrupted prepare run again with the same inputs reuses the units
it encoded and the shards it finished; the dataset appears under its name only when the
manifest is written, last, and the directory renamed into place. Bad input removes the work.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
import os
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np

from orchestrator.data import encode, mix
from orchestrator.data.dataset import (FORMAT, Progress, check_name, find_tokenizer,
                                       install_tokenizer, load_tokenizer, no_progress,
                                       replace_dir, token_dtype, write_json)
from orchestrator.data.sources import apply_mixture, parse_source, plan_units, resolve_files
from orchestrator.store.home import Home
from planners.errors import BadInput

DEFAULT_SHARD_TOKENS = 1 << 27  # 256 MiB per shard at uint16
DEFAULT_MEMORY_BYTES = 1_000_000_000
# What one worker process costs (measured: bench/results/data.md): interpreter, numpy and
# SentencePiece, one 4 MiB batch of text with its tokens; and the driver's own share.
WORKER_BYTES = 120_000_000
DRIVER_BYTES = 300_000_000


def plan_processes(memory_bytes: int, units: int, workers: int | None = None,
                   cores: int | None = None) -> tuple[int, int]:
    """-> (processes, SentencePiece threads per process) that fit memory_bytes and fill cores."""
    cores = cores or os.cpu_count() or 1
    fit = max(1, (memory_bytes - DRIVER_BYTES) // WORKER_BYTES)
    procs = max(1, min(workers or cores, fit, max(units, 1)))
    return procs, max(1, -(-cores // procs))


def prepare(specs: Sequence[str], name: str, home: Home | None = None, vocab_size: int = 32000,
            val_fraction: float = 0.01, seed: int = 0, mixture: str | None = None,
            tokens: int | None = None, tokenizer: str | None = None, text_field: str = "text",
            workers: int | None = None, tokenizer_sentences: int | None = None,
            shard_tokens: int = DEFAULT_SHARD_TOKENS, dedup: bool = False,
            window: int = mix.DEFAULT_WINDOW, memory_bytes: int = DEFAULT_MEMORY_BYTES,
            address: str | None = None, progress: Progress = no_progress) -> dict:
    """Prepare dataset `name` under `$TALLY_HOME/data/` and return its manifest."""
    from model import tokenizer as tk

    home = (home or Home.resolve()).ensure()
    t0 = time.perf_counter()
    check_name(name)
    if not specs:
        raise BadInput("no sources given; give NAME=PATH_OR_GLOB[:WEIGHT] ... or --demo")
    if not 0 <= val_fraction <= 0.5:
        raise BadInput(f"--val-fraction {val_fraction} must be between 0 and 0.5")
    if tokens is not None and tokens <= 0:
        raise BadInput(f"--tokens {tokens} must be > 0")
    if vocab_size < 300 or vocab_size > 1 << 20:
        raise BadInput(f"--vocab-size {vocab_size} must be between 300 (256 byte pieces "
                       "+ specials + merges) and 1048576")
    if workers is not None and workers < 1:
        raise BadInput(f"--workers {workers} must be >= 1")
    if window < 1:
        raise BadInput(f"--shuffle-window {window} must be >= 1 document")
    if memory_bytes < DRIVER_BYTES + WORKER_BYTES:
        raise BadInput(f"--memory {memory_bytes / 1e6:.0f} MB is too little; give at least "
                       f"{(DRIVER_BYTES + WORKER_BYTES) / 1e6:.0f} MB")
    sources = [parse_source(s) for s in specs]
    seen = set()
    for s in sources:
        if s.name in seen:
            raise BadInput(f"source name {s.name!r} is given twice; give each source once")
        seen.add(s.name)
    apply_mixture(sources, mixture)
    for s in sources:
        s.files = resolve_files(s)
    units = plan_units(sources, text_field)
    given = find_tokenizer(tokenizer, home).read_bytes() if tokenizer else b""
    settings = dict(sources=[[s.name, s.weight, s.files] for s in sources],
                    stamps=[_stamp(u.path) for u in units], units=[list(u.__dict__.values())
                                                                   for u in units],
                    text_field=text_field, seed=seed, val_fraction=val_fraction,
                    vocab_size=vocab_size, tokenizer=hashlib.sha256(given).hexdigest(),
                    sentences=tokenizer_sentences, tokens=tokens, dedup=dedup, window=window,
                    shard_tokens=shard_tokens, format=FORMAT, stream=2)
    fingerprint = hashlib.sha256(json.dumps(settings, default=str).encode()).hexdigest()[:16]
    home.data.mkdir(parents=True, exist_ok=True)
    work = home.data / f".{name}.work-{fingerprint}"
    spill = work / "spill"
    spill.mkdir(parents=True, exist_ok=True)
    procs, threads = plan_processes(memory_bytes, len(units), workers)
    single = {u.source for u in units if u.kind == "text" and u.whole_file} - \
        {k for k in range(len(sources)) if sum(u.source == k for u in units) > 1}
    base = dict(text_field=text_field, seed=seed, val_fraction=val_fraction, threads=threads)
    tasks = [encode.Task(i, u, single=u.source in single, **base) for i, u in enumerate(units)]
    try:
        # 1. the tokenizer: given, or trained on a seeded sample of the training lines
        if not (work / "tokenizer.model").is_file():
            if given:
                (work / "tokenizer.model.part").write_bytes(given)
            else:
                _train_tokenizer(sources, tasks, work, vocab_size, seed,
                                 tokenizer_sentences or tk.DEFAULT_SENTENCES, procs, address,
                                 home, progress)
            os.replace(work / "tokenizer.model.part", work / "tokenizer.model")
        tok = load_tokenizer(work / "tokenizer.model")
        dtype = token_dtype(tok.vocab_size)
        t_tok = time.perf_counter()

        # 2. tokens, unit by unit, into spill files; units finished before are kept
        model = (work / "tokenizer.model").read_bytes()
        todo = [encode.Task(**{**t.__dict__, "model": model, "dtype": np.dtype(dtype).name,
                               "out_dir": str(spill)})
                for t in tasks if not encode.spill_paths(spill, t.index)[1].is_file()]
        done = len(tasks) - len(todo)
        fn = encode.encode_unit if address else encode.encode_to_spill
        for result in encode.run_tasks(fn, todo, procs, address, home):
            if address:  # Ray: the unit's tokens came back through the object store
                index, flat, meta = result
                encode.write_spill(spill, index, [(flat, meta)])
            done += 1
            progress("tokenise", done, len(tasks))
        t_enc = time.perf_counter()

        # 3. + 4. the mixture, drawn and written as a stream
        index, stats = mix.load_index(spill, units, len(sources), dedup, val_fraction)
        for s, st in zip(sources, stats):
            if not st["documents"]:
                raise BadInput(f"source {s.name!r} ({s.pattern}) holds no text; "
                               "give files with non-empty documents")
        wsum = sum(s.weight for s in sources)
        have = mix.split_tokens(index, len(sources), mix.TRAIN)
        target_total = float(tokens or sum(have))
        targets = [target_total * s.weight / wsum for s in sources]
        picks = mix.window_shuffle(mix.mixture_stream(index, len(sources), mix.TRAIN, targets,
                                                      seed, 0),
                                   window, np.random.default_rng([seed, 0, 99]))
        train, sampled = mix.write_split(work, spill, "train", picks, dtype, tok.bos_id,
                                         tok.eos_id, shard_tokens, len(sources), progress,
                                         target_total)
        splits = {"train": train}
        vhave = mix.split_tokens(index, len(sources), mix.VAL)
        if sum(vhave):
            vtargets = [sum(vhave) * s.weight / wsum for s in sources]
            vpicks = mix.window_shuffle(mix.mixture_stream(index, len(sources), mix.VAL,
                                                           vtargets, seed, 1),
                                        window, np.random.default_rng([seed, 1, 99]))
            splits["val"], _ = mix.write_split(work, spill, "val", vpicks, dtype, tok.bos_id,
                                               tok.eos_id, shard_tokens, len(sources),
                                               progress, sum(vhave))
        shutil.rmtree(spill)
        manifest = {
            "format": FORMAT, "name": name,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "dtype": np.dtype(dtype).name, "vocab_size": tok.vocab_size,
            "bos_id": tok.bos_id, "eos_id": tok.eos_id,
            "tokenizer": {"id": tok.id, "file": "tokenizer.model",
                          "sha256": tk.file_sha256(work / "tokenizer.model"),
                          "stored_as": str(home.tokenizers / f"{name}.model")},
            "seed": seed, "val_fraction": val_fraction, "mixture": mixture,
            "target_tokens": int(target_total), "dedup": dedup,
            "shuffle_window_documents": window, "units": len(units),
            "sources": [{
                "name": s.name, "pattern": s.pattern, "files": len(s.files), **st,
                "weight": s.weight, "proportion": round(s.weight / wsum, 6),
                "val_tokens": int(v), "tokens": int(h), "target_tokens": int(round(t)),
                "sampled_tokens": int(got), "epochs": round(got / h, 4) if h else 0.0,
            } for s, st, v, h, t, got in zip(sources, stats, vhave, have, targets, sampled)],
            "splits": splits,
            "workers": {"processes": procs, "threads": threads, "ray": bool(address)},
            "timings_s": {"tokenizer": round(t_tok - t0, 2), "tokenise": round(t_enc - t_tok, 2),
                          "total": round(time.perf_counter() - t0, 2)},
        }
        if not tokenizer and not (work / "tokenizer.json").is_file():
            raise BadInput("the tokenizer's settings are missing from the work directory "
                           f"{work}; remove it and prepare again")
        write_json(work / "manifest.json", manifest)
        if not tokenizer:
            install_tokenizer(work, home, name, vocab_size, seed)
        replace_dir(work, home.data / name)
        for old in home.data.glob(f".{name}.work-*"):  # other settings' leftovers
            shutil.rmtree(old, ignore_errors=True)
        return {**manifest, "path": str(home.data / name)}
    except BadInput:
        shutil.rmtree(work, ignore_errors=True)  # nothing to resume: the input is wrong
        raise


def _stamp(path: str):
    try:
        st = os.stat(path)
        return [st.st_size, st.st_mtime_ns]
    except OSError:
        return None  # a URI: its listing and sizes are in the units


def _train_tokenizer(sources, tasks, work: Path, vocab_size: int, seed: int, sentences: int,
                     procs: int, address, home, progress) -> None:
    from model import tokenizer as tk

    sample_tasks = [encode.Task(**{**t.__dict__, "sample_lines": sentences}) for t in tasks]
    best: list[tuple[float, int, str]] = []  # max-heap (by -priority) of the kept lines
    docs = [0] * (1 + max(t.unit.source for t in tasks))
    for n, (index, n_docs, lines) in enumerate(encode.run_tasks(
            encode.sample_unit, sample_tasks, procs, address, home), 1):
        docs[tasks[index].unit.source] += n_docs
        for p, line in lines:
            item = (-p, index, line)
            if len(best) < sentences:
                heapq.heappush(best, item)
            elif item > best[0]:
                heapq.heapreplace(best, item)
        progress("sample", n, len(tasks))
    for k, n in enumerate(docs):
        if not n:
            raise BadInput(f"source {sources[k].name!r} ({sources[k].pattern}) holds no text; "
                           "give files with non-empty documents")
    lines = [line for _, _, line in sorted(best, reverse=True)]
    del best
    (work / "sample.txt").write_text("".join(ln + "\n" for ln in lines), encoding="utf-8")
    del lines
    try:
        tk.train(work / "sample.txt", work, "tokenizer.part", vocab_size=vocab_size, seed=seed,
                 sentences=sentences, progress=lambda d, t: progress("tokenizer", d, t))
    except tk.TokenizerError as e:
        raise BadInput(str(e)) from None
    meta = json.loads((work / "tokenizer.part.json").read_text())
    write_json(work / "tokenizer.json", {**meta, "name": "tokenizer"})
    (work / "tokenizer.part.json").unlink()
    os.replace(work / "tokenizer.part.model", work / "tokenizer.model.part")
    (work / "sample.txt").unlink()


def prepare_command(sources: Sequence[str], demo: bool, name: str | None, home: Home,
                    mixture: str | None, vocab_size: int | None, tokens: str | None = None,
                    progress: Progress = no_progress, memory: str | None = None,
                    **options) -> dict:
    """What `cli.py data prepare` does: the demo's sources (gathered once) or the user's."""
    from planners.units import parse_count

    if demo:
        from orchestrator.data.demo import gather

        if sources:
            raise BadInput("give either --demo or sources (NAME=PATH_OR_GLOB[:WEIGHT]), not both")
        sources = gather(home.ensure(), progress)
        mixture = mixture or "llama"
    if not name:
        if not demo:
            raise BadInput("--name is required with your own sources (e.g. --name mydata)")
        name = "demo"
    n_tokens = int(parse_count(tokens, "--tokens")) if tokens is not None else None
    if memory is not None:
        options["memory_bytes"] = parse_bytes(memory, "--memory")
    vocab = vocab_size or (8192 if demo else 32000)
    return prepare(list(sources), name, home, vocab_size=vocab, mixture=mixture,
                   tokens=n_tokens, progress=progress, **options)


def parse_bytes(text: str, option: str) -> int:
    """`1GB`, `512MB`, `2GiB`, `1e9` -> bytes."""
    t = str(text).strip().upper().replace(" ", "")
    units = {"KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40, "KB": 10 ** 3,
             "MB": 10 ** 6, "GB": 10 ** 9, "TB": 10 ** 12, "K": 10 ** 3, "M": 10 ** 6,
             "G": 10 ** 9, "T": 10 ** 12, "B": 1}
    for suffix, scale in units.items():
        if t.endswith(suffix):
            t, mult = t[: -len(suffix)], scale
            break
    else:
        mult = 1
    try:
        value = float(t) * mult
    except ValueError:
        raise BadInput(f"{option} {text!r} is not a size; give e.g. 1GB, 512MB or 2GiB") from None
    if not (value > 0 and math.isfinite(value)):
        raise BadInput(f"{option} {text!r} must be a finite size > 0 (e.g. 1GB)")
    return int(value)
