"""Tokens on disk -> the mixture, drawn as a stream -> packed shards.

After encoding, each unit's tokens sit in a spill file with one row of facts per document
(tokens, bytes, content hash, split). From those rows alone (32 bytes per document; no text, no
tokens in memory) this module:

1. marks exact duplicates (the same content hash seen earlier in source, file, document order)
   and, with dedup, drops them; counted per source either way;
2. draws each source's share: with T tokens wanted in all, source k gives T*w_k/sum(w) tokens,
   i.e. whole passes over its documents and then part of one more (LLaMA Table 1's epochs).
   Each pass visits the source's units in an order seeded by (seed, k, pass) and the documents
   inside a unit in an order seeded by (seed, k, pass, unit);
3. interleaves the sources smoothly (always the source furthest behind its share next), so any
   stretch of the stream holds the sources in their proportions;
4. shuffles that stream in a window of `window` documents (a reservoir: each document out is a
   seeded uniform pick from the window), so a document leaves at most `window` places before
   its place in step 3 and on average about `window` places after it;
5. packs BOS doc EOS one after another into shards of `shard_tokens`, reading each document's
   tokens from its spill file as it is written.

A shard that a previous, interrupted run of the same prepare finished is kept, not rewritten.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from orchestrator.data.encode import spill_paths

TRAIN, VAL, DROPPED = 0, 1, -1
DEFAULT_WINDOW = 65_536  # documents in the shuffle window (about 100 bytes each in memory)


@dataclass
class UnitIndex:
    index: int
    source: int
    n_tokens: np.ndarray  # per document
    offsets: np.ndarray  # where each document starts in the spill file, in tokens
    split: np.ndarray  # TRAIN, VAL or DROPPED


def load_index(spill_dir: Path, units: list, n_sources: int, dedup: bool,
               val_fraction: float = 0.0):
    """-> ([UnitIndex], per-source counts) with duplicates marked, dropped with dedup. A
    source whose documents all drew training gets one seeded validation document (when it has
    two or more and val_fraction > 0); one whose documents all drew validation trains on them."""
    index, hashes, nbytes = [], [], []
    for i, unit in enumerate(units):
        meta = np.load(spill_paths(spill_dir, i)[1])
        n = meta[:, 0]
        index.append(UnitIndex(i, unit.source, n, np.concatenate(([0], np.cumsum(n)[:-1]))
                               .astype(np.int64) if len(n) else n, meta[:, 3].astype(np.int8)))
        hashes.append(meta[:, 2])
        nbytes.append(meta[:, 1])
    flat = np.concatenate(hashes) if hashes else np.zeros(0, np.int64)
    first = np.zeros(len(flat), bool)
    first[np.unique(flat, return_index=True)[1]] = True
    del flat
    stats = [dict(documents=0, val_documents=0, bytes=0, duplicate_documents=0,
                  duplicates_removed=0) for _ in range(n_sources)]
    at = 0
    for u, b in zip(index, nbytes):
        dup = ~first[at:at + len(u.split)]
        at += len(u.split)
        s = stats[u.source]
        s["duplicate_documents"] += int(dup.sum())
        if dedup:
            s["duplicates_removed"] += int(dup.sum())
            u.split[dup] = DROPPED
    for k in range(n_sources):
        mine = [u for u in index if u.source == k]
        n_train = sum(int((u.split == TRAIN).sum()) for u in mine)
        if not n_train:
            for u in mine:  # every document drew validation: they train instead
                u.split[u.split == VAL] = TRAIN
        elif val_fraction > 0 and n_train > 1 and not any((u.split == VAL).any() for u in mine):
            # too few documents for the draw to pick one: the one nearest val_fraction of the
            # source's tokens validates
            n = np.concatenate([u.n_tokens[u.split == TRAIN] for u in mine])
            pick = int(np.argmin(np.abs(n - val_fraction * n.sum())))
            for u in mine:
                docs = np.flatnonzero(u.split == TRAIN)
                if pick < len(docs):
                    u.split[docs[pick]] = VAL
                    break
                pick -= len(docs)
    for u, b in zip(index, nbytes):
        s = stats[u.source]
        s["documents"] += int((u.split == TRAIN).sum())
        s["val_documents"] += int((u.split == VAL).sum())
        s["bytes"] += int(b[u.split == TRAIN].sum())
    return index, stats


def split_tokens(index: list[UnitIndex], n_sources: int, split: int) -> list[int]:
    """Tokens per source in the split, as packed (BOS + doc + EOS)."""
    out = [0] * n_sources
    for u in index:
        m = u.split == split
        out[u.source] += int(u.n_tokens[m].sum() + 2 * m.sum())
    return out


def _source_picks(units: list[UnitIndex], split: int, have: int, target: float, seed: int,
                  k: int, salt: int) -> Iterator[tuple[int, int, int]]:
    """(unit, offset, n_tokens) of source k's documents: whole passes, then the part of one."""
    passes = int(target // have) if have else 0
    rest = target - passes * have
    for e in range(passes + 1 if have else 0):
        got = 0
        for ui in np.random.default_rng([seed, k, e, salt]).permutation(len(units)):
            u = units[ui]
            docs = np.flatnonzero(u.split == split)
            for d in np.random.default_rng([seed, k, e, u.index, salt]).permutation(docs):
                n = int(u.n_tokens[d])
                if e == passes:
                    if got >= rest or got + (n + 2) / 2 > rest:
                        return
                    got += n + 2
                yield u.index, int(u.offsets[d]), n


def mixture_stream(index: list[UnitIndex], n_sources: int, split: int, targets: list[float],
                   seed: int, salt: int) -> Iterator[tuple[int, tuple[int, int, int]]]:
    """(source, pick): every source's picks, interleaved by how far each is behind its share."""
    have = split_tokens(index, n_sources, split)
    streams = [_source_picks([u for u in index if u.source == k], split, have[k], targets[k],
                             seed, k, salt) for k in range(n_sources)]
    emitted = [0] * n_sources
    heap = [(0.0, k) for k in range(n_sources) if targets[k] > 0]
    heapq.heapify(heap)
    while heap:
        _, k = heapq.heappop(heap)
        pick = next(streams[k], None)
        if pick is None:
            continue
        yield k, pick
        emitted[k] += pick[2] + 2
        heapq.heappush(heap, (emitted[k] / targets[k], k))


def window_shuffle(items: Iterator, window: int, rng: np.random.Generator) -> Iterator:
    buf: list = []
    draws, at = np.empty(0, np.int64), 0
    for item in items:
        if len(buf) < window:
            buf.append(item)
            continue
        if at == len(draws):
            draws, at = rng.integers(0, window, 4096), 0
        j = int(draws[at])
        at += 1
        out, buf[j] = buf[j], item
        yield out
    for j in rng.permutation(len(buf)):
        yield buf[j]


class _Spills:
    """Documents' tokens read from the spill files (pread: nothing mapped, nothing cached)."""

    def __init__(self, spill_dir: Path, dtype: np.dtype, keep_open: int = 256):
        self.dir, self.dtype, self.keep = spill_dir, np.dtype(dtype), keep_open
        self.fds: OrderedDict[int, int] = OrderedDict()

    def read(self, unit: int, offset: int, n: int) -> np.ndarray:
        fd = self.fds.pop(unit, None)
        if fd is None:
            fd = os.open(spill_paths(self.dir, unit)[0], os.O_RDONLY)
            if len(self.fds) >= self.keep:
                os.close(self.fds.popitem(last=False)[1])
        self.fds[unit] = fd
        size = self.dtype.itemsize
        blob = os.pread(fd, n * size, offset * size)
        return np.frombuffer(blob, self.dtype)

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


def write_split(out_dir: Path, spill_dir: Path, split_name: str, picks: Iterator, dtype,
                bos: int, eos: int, shard_tokens: int, n_sources: int, progress,
                total_tokens: float) -> tuple[dict, list[int]]:
    """Pack the picks into `<split>_NNN.bin` shards + `<split>_docs.npy`; -> (the split's
    manifest, sampled tokens per source). Shards finished by an earlier run are kept."""
    dtype = np.dtype(dtype)
    spills = _Spills(spill_dir, dtype)
    shards: list[dict] = []
    sampled = [0] * n_sources
    raw = out_dir / f"{split_name}_docs.raw"
    pos, n_docs, cur, f, hasher = 0, 0, -1, None, None
    index_rows: list[tuple[int, int]] = []

    def done_info(s: int) -> dict | None:
        side = out_dir / f"{split_name}_{s:03d}.bin.json"
        return json.loads(side.read_text()) if side.is_file() else None

    def finish(s: int, n: int) -> None:
        nonlocal f
        name = f"{split_name}_{s:03d}.bin"
        if f is not None:
            f.close()
            f = None
            os.replace(out_dir / (name + ".part"), out_dir / name)
            info = {"file": name, "n_tokens": n, "sha256": hasher.hexdigest()}
            (out_dir / (name + ".json")).write_text(json.dumps(info))
        shards.append(done_info(s))

    with open(raw, "wb") as idx:
        for k, (unit, offset, n) in picks:
            length = n + 2
            index_rows.append((pos, k))
            if len(index_rows) >= 1 << 16:
                idx.write(np.asarray(index_rows, np.int64).tobytes())
                index_rows.clear()
            sampled[k] += length
            n_docs += 1
            doc, at = None, 0
            while at < length:
                s = pos // shard_tokens
                take = min((s + 1) * shard_tokens - pos, length - at)
                if s != cur:
                    cur = s
                    if done_info(s) is None:
                        f = open(out_dir / f"{split_name}_{s:03d}.bin.part", "wb",
                                 buffering=1 << 20)
                        hasher = hashlib.sha256()
                if f is not None:
                    if doc is None:
                        doc = np.concatenate(([bos], spills.read(unit, offset, n), [eos])) \
                            .astype(dtype)
                    blob = doc[at:at + take].tobytes()
                    f.write(blob)
                    hasher.update(blob)
                pos += take
                at += take
                if pos % shard_tokens == 0:
                    finish(s, shard_tokens)
                    cur = -1
            if n_docs % 4096 == 0:
                progress(f"write {split_name}", pos, total_tokens)
        if index_rows:
            idx.write(np.asarray(index_rows, np.int64).tobytes())
    if pos % shard_tokens:
        finish(pos // shard_tokens, pos % shard_tokens)
    spills.close()
    progress(f"write {split_name}", pos, max(pos, total_tokens))
    docs = raw_to_npy(raw, out_dir / f"{split_name}_docs.npy", n_docs)
    for s in range(len(shards)):
        (out_dir / f"{split_name}_{s:03d}.bin.json").unlink()
    return {"n_tokens": int(pos), "n_documents": n_docs, "shards": shards,
            "docs": docs.name, "docs_sha256": sha256_file(docs)}, sampled


def raw_to_npy(raw: Path, final: Path, rows: int) -> Path:
    """(rows, 2) int64 written as a .npy without holding it: header, then the raw rows."""
    with open(final, "wb") as out, open(raw, "rb") as src:
        np.lib.format.write_array_header_1_0(
            out, {"descr": "<i8", "fortran_order": False, "shape": (rows, 2)})
        while block := src.read(1 << 20):
            out.write(block)
    raw.unlink()
    return final


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()
