"""Text -> tokens on every core: one unit of work at a time, in worker processes or Ray tasks.

    sample_unit(task)   the unit's share of the tokenizer's training sample (bottom-k lines by a
                        seeded priority, so the merged sample is the same however units are run)
    encode_unit(task)   the unit's documents as tokens + one row of facts per document
    run_tasks(fn, tasks, processes, address)   local process pool, or Ray tasks with --address

What a document becomes depends only on its unit and its place in it (the validation draw is
seeded by (seed, unit, 1)), never on which worker read it, so any number of processes or nodes
gives byte-identical results. A worker holds one batch of text (`batch_bytes`) and its tokens at
a time; SentencePiece encodes the batch on `threads` threads of its own.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from orchestrator.data.sources import Unit, iter_documents

# Per document: tokens, UTF-8 bytes, content hash (8 bytes of BLAKE2b), 1 if validation.
META_COLUMNS = ("n_tokens", "n_bytes", "hash", "val")
MAX_SENTENCE_BYTES = 4192  # SentencePiece skips longer lines in training (LLAMA_SETTINGS)


@dataclass(frozen=True)
class Task:
    index: int  # the unit's place in the plan
    unit: Unit
    text_field: str
    seed: int
    val_fraction: float
    single: bool = False  # the source's only document: its tail is the validation text
    model: bytes = b""  # the SentencePiece model (travels to Ray nodes with the task)
    dtype: str = "uint16"
    threads: int = 1
    batch_bytes: int = 4 << 20
    sample_lines: int = 0
    out_dir: str = ""  # local pool: where the worker writes the unit's spill files


def documents(task: Task) -> Iterator[tuple[str, bool]]:
    """(text, is validation) for the unit's documents. A source's only document gives the tail
    of itself (cut at a line break, about val_fraction of it) to validation instead."""
    rng = np.random.default_rng([task.seed, task.index, 1])
    docs = iter_documents(task.unit, task.text_field)
    if task.single and task.val_fraction > 0:
        first, second = next(docs, None), next(docs, None)
        if first is not None and second is None:
            cut = first.rfind("\n", 0, int(len(first) * (1 - task.val_fraction))) + 1 or \
                int(len(first) * (1 - task.val_fraction))
            if first[:cut].strip() and first[cut:].strip():
                yield first[:cut], False
                yield first[cut:], True
            else:
                yield first, False
            return
        docs = chain([d for d in (first, second) if d is not None], docs)
    for text in docs:
        yield text, bool(task.val_fraction > 0 and rng.random() < task.val_fraction)


def sample_unit(task: Task) -> tuple[int, int, list[tuple[float, str]]]:
    """-> (unit, documents, the unit's training lines with the `sample_lines` smallest seeded
    priorities)."""
    rng = np.random.default_rng([task.seed, task.index, 2])
    k, parts, keep_l, n_docs = task.sample_lines, [], [], 0
    for text, is_val in documents(task):
        n_docs += 1
        if is_val:
            continue
        lines = [ln for ln in text.splitlines() if ln.strip() and
                 (len(ln) * 4 <= MAX_SENTENCE_BYTES or len(ln.encode()) <= MAX_SENTENCE_BYTES)]
        if not lines:
            continue
        parts.append(rng.random(len(lines)))
        keep_l.extend(lines)
        if len(keep_l) > 2 * k:
            p, keep_l = _bottom(np.concatenate(parts), keep_l, k)
            parts = [p]
    keep_p, keep_l = _bottom(np.concatenate(parts) if parts else np.empty(0), keep_l, k)
    return task.index, n_docs, [(float(p), ln) for p, ln in zip(keep_p, keep_l)]


def _bottom(p: np.ndarray, lines: list[str], k: int):
    if len(lines) <= k:
        return p, lines
    idx = np.argpartition(p, k)[:k]
    return p[idx], [lines[i] for i in idx]


_sp_cache: dict[bytes, object] = {}


def _processor(model: bytes):
    import sentencepiece as spm

    key = hashlib.sha256(model).digest()
    if key not in _sp_cache:
        _sp_cache.clear()
        _sp_cache[key] = spm.SentencePieceProcessor(model_proto=model)
    return _sp_cache[key]


def encode_blocks(task: Task) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(tokens in task.dtype, meta rows) per batch of about batch_bytes of text."""
    sp = _processor(task.model)
    texts, rows, size = [], [], 0

    def flush():
        ids = sp.encode(texts, num_threads=task.threads, return_type="numpy")
        lengths = np.fromiter((len(x) for x in ids), np.int64, len(ids))
        meta = np.asarray(rows, np.int64).reshape(-1, 4)
        meta[:, 0] = lengths
        flat = np.concatenate(ids) if ids else np.zeros(0, np.int32)
        return flat.astype(task.dtype), meta

    for text, is_val in documents(task):
        b = text.encode("utf-8")
        digest = int.from_bytes(hashlib.blake2b(b, digest_size=8).digest(), "little", signed=True)
        texts.append(text)
        rows.append((0, len(b), digest, int(is_val)))
        size += len(b)
        if size >= task.batch_bytes:
            yield flush()
            texts, rows, size = [], [], 0
    if texts:
        yield flush()


def encode_unit(task: Task) -> tuple[int, np.ndarray, np.ndarray]:
    """The whole unit in memory: for Ray tasks, whose result travels through the object store."""
    blocks = list(encode_blocks(task))
    if not blocks:
        return task.index, np.zeros(0, task.dtype), np.zeros((0, 4), np.int64)
    return task.index, np.concatenate([b[0] for b in blocks]), np.concatenate([b[1] for b in blocks])


def spill_paths(out_dir: str | Path, index: int) -> tuple[Path, Path]:
    base = Path(out_dir) / f"u{index:07d}"
    return base.with_suffix(".tok"), base.with_suffix(".meta.npy")


def write_spill(out_dir: str | Path, index: int,
                blocks: Iterable[tuple[np.ndarray, np.ndarray]]) -> int:
    """Tokens appended to u<index>.tok, then the meta rows; the meta file, renamed into place
    last, marks the unit done (a restart skips it)."""
    tok, meta = spill_paths(out_dir, index)
    part = tok.with_suffix(".tok.part")
    metas = []
    with open(part, "wb") as f:
        for flat, rows in blocks:
            f.write(flat.tobytes())
            metas.append(rows)
    os.replace(part, tok)
    rows = np.concatenate(metas) if metas else np.zeros((0, 4), np.int64)
    mpart = meta.with_name(meta.name + ".part")
    with open(mpart, "wb") as f:
        np.save(f, rows)
    os.replace(mpart, meta)
    return len(rows)


def encode_to_spill(task: Task) -> tuple[int, int]:
    """Local pool worker: encode the unit straight into its spill files."""
    return task.index, write_spill(task.out_dir, task.index, encode_blocks(task))


def run_tasks(fn: Callable, tasks: list[Task], processes: int, address: str | None = None,
              home=None) -> Iterator:
    """Results of fn over tasks, in completion order: on `processes` local worker processes
    (forked where the platform can), or as Ray tasks on the cluster at `address`."""
    if address:
        yield from _run_ray(fn, tasks, address, home)
        return
    if processes <= 1 or len(tasks) <= 1:
        for t in tasks:
            yield fn(t)
        return
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    with mp.get_context(method).Pool(min(processes, len(tasks)), initializer=_quiet_worker,
                                     maxtasksperchild=64) as pool:
        yield from pool.imap_unordered(fn, tasks)


def _quiet_worker() -> None:
    """A pool worker leaves Ctrl-C and SIGTERM to the parent, which stops the pool (a forked
    worker would otherwise inherit the CLI's SIGTERM handler and print a traceback each)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _run_ray(fn: Callable, tasks: list[Task], address: str, home) -> Iterator:
    """At most about two tasks per CPU of the cluster in flight, so the driver holds a bounded
    number of results; each result is consumed as soon as it is ready."""
    import ray

    from orchestrator.run.launcher import connect

    connect(home, address, dashboard=False)
    remote = ray.remote(num_cpus=1, max_retries=2)(fn)
    limit = max(2, int(2 * ray.cluster_resources().get("CPU", 1)))
    pending, todo = [], list(tasks)
    while todo or pending:
        while todo and len(pending) < limit:
            pending.append(remote.remote(todo.pop(0)))
        ready, pending = ray.wait(pending, num_returns=1)
        try:
            yield ray.get(ready[0])
        except ray.exceptions.RayTaskError as e:
            if isinstance(getattr(e, "cause", None), Exception):
                raise e.cause from None  # BadInput from a worker stays BadInput
            raise
