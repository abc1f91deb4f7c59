"""`data import`: token files made by another pipeline -> a tally dataset, without re-tokenising.

    import_tokens(name, train, val=None, tokenizer=..., home=...) -> the manifest

Two layouts:
- flat token files, nanoGPT's `train.bin`/`val.bin`: raw little-endian uint16 (or uint32,
  `dtype`) ids one after another, each document followed by a separator id (nanoGPT writes
  GPT-2's end-of-text after every document; default: the tokenizer's EOS);
- Megatron-LM indexed datasets, `PREFIX.bin` + `PREFIX.idx` (the "MMIDIDX" index of
  megatron/core/datasets/indexed_dataset.py): header `MMIDIDX\\0\\0`, version 1 (<Q), dtype
  code (<B: 1 uint8, 2 int8, 3 int16, 4 int32, 5 int64, 6 float64, 7 float32, 8 uint16),
  sequence count (<Q), document count (<Q), then sequence lengths (int32), byte pointers into
  the .bin (int64), and the document indices (int64: sequence indices, 0 first, sequence count
  last; document d is sequences [di[d], di[d+1])), optionally one mode byte per sequence.

Checked while copying, in bounded memory: every id below the tokenizer's vocabulary; for
Megatron, the index against the .bin (pointers contiguous, lengths summing to the .bin's size,
document indices ascending from 0 to the sequence count). The tokens are written as they are,
into the same shards, document index and manifest `data prepare` writes, so training, `data
show --verify` and the Sampler treat an imported dataset like any other.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from orchestrator.data.dataset import (FORMAT, Progress, check_name, find_tokenizer,
                                       load_tokenizer, no_progress, replace_dir, token_dtype,
                                       write_json)
from orchestrator.data.mix import raw_to_npy, sha256_file
from orchestrator.store.home import Home
from planners.errors import BadInput

MEGATRON_HEADER = b"MMIDIDX\x00\x00"
MEGATRON_DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64,
                   6: np.float64, 7: np.float32, 8: np.uint16}
FLAT_DTYPES = {"uint16": np.uint16, "uint32": np.uint32}
CHUNK_TOKENS = 1 << 22


def _megatron_paths(path: str) -> tuple[Path, Path] | None:
    p = Path(path)
    prefix = p.with_suffix("") if p.suffix in (".bin", ".idx") else p
    b, i = prefix.with_name(prefix.name + ".bin"), prefix.with_name(prefix.name + ".idx")
    if i.is_file():
        with open(i, "rb") as f:
            if f.read(len(MEGATRON_HEADER)) == MEGATRON_HEADER:
                return b, i
    return None


def read_megatron_index(bin_path: Path, idx_path: Path) -> tuple[np.dtype, np.ndarray]:
    """-> (token dtype, start of each document in tokens, plus the end); BadInput when the .idx
    does not describe the .bin."""
    def bad(why: str) -> BadInput:
        return BadInput(f"{idx_path} does not match {bin_path.name}: {why}; give the .idx "
                        "written with that .bin")

    if not bin_path.is_file():
        raise BadInput(f"{bin_path} is missing: a Megatron dataset is PREFIX.bin + PREFIX.idx")
    size = idx_path.stat().st_size
    with open(idx_path, "rb") as f:
        head = f.read(34)
        if len(head) < 34:
            raise bad("the index is shorter than its 34-byte header")
        version, code, n_seq, n_doc = struct.unpack("<QBQQ", head[9:34])
        if version != 1:
            raise bad(f"index version {version}, only version 1 exists")
        if code not in MEGATRON_DTYPES:
            raise bad(f"dtype code {code} is none of {sorted(MEGATRON_DTYPES)}")
        dtype = np.dtype(MEGATRON_DTYPES[code])
        if dtype.kind not in "iu":
            raise bad(f"its tokens are {dtype.name}, not integers")
        want = 34 + 4 * n_seq + 8 * n_seq + 8 * n_doc
        if size not in (want, want + n_seq):
            raise bad(f"{n_seq} sequences and {n_doc} document indices need {want} bytes "
                      f"(or {want + n_seq} with modes), the file has {size}")
        lengths = np.fromfile(f, np.int32, n_seq).astype(np.int64)
        pointers = np.fromfile(f, np.int64, n_seq)
        docs = np.fromfile(f, np.int64, n_doc)
    if (lengths < 0).any():
        raise bad("a sequence length is negative")
    expect = np.concatenate(([0], np.cumsum(lengths)[:-1])) * dtype.itemsize if n_seq else lengths
    if not np.array_equal(pointers, expect):
        at = int(np.flatnonzero(pointers != expect)[0])
        raise bad(f"sequence {at} starts at byte {pointers[at]}, its predecessors end at "
                  f"{expect[at]}")
    total = int(lengths.sum()) * dtype.itemsize
    if total != bin_path.stat().st_size:
        raise bad(f"its sequences hold {total} bytes, the .bin has {bin_path.stat().st_size}")
    if n_doc < 1 or docs[0] != 0 or docs[-1] != n_seq or (np.diff(docs) < 0).any():
        raise bad(f"document indices must rise from 0 to the sequence count {n_seq}")
    starts = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)[docs]
    return dtype, starts


def _copy_split(out: Path, split: str, src: Path, dtype: np.dtype, vocab: int, out_dtype,
                shard_tokens: int, doc_starts: np.ndarray | None, separator: int | None,
                progress: Progress) -> dict:
    """Stream src's tokens into shards, checking the vocabulary bound chunk by chunk."""
    size = src.stat().st_size
    if size % dtype.itemsize:
        raise BadInput(f"{src} is {size} bytes, not a whole number of {dtype.name} tokens; "
                       "give --dtype uint16 or uint32 as it was written")
    n_tokens = size // dtype.itemsize
    if n_tokens == 0:
        raise BadInput(f"{src} holds no tokens")
    raw = out / f"{split}_docs.raw"
    shards, pos, n_docs = [], 0, 0
    f_out, hasher, in_shard = None, None, 0
    with open(src, "rb") as f, open(raw, "wb") as idx:
        if doc_starts is not None:
            starts = doc_starts[:-1][np.diff(doc_starts) > 0]
            idx.write(np.stack([starts, np.zeros_like(starts)], 1).astype(np.int64).tobytes())
            n_docs = len(starts)
        else:
            idx.write(np.array([[0, 0]], np.int64).tobytes())
            n_docs = 1
        while pos < n_tokens:
            chunk = np.fromfile(f, dtype, min(CHUNK_TOKENS, n_tokens - pos))
            if dtype.kind == "i" and chunk.size and chunk.min() < 0:
                at = int(np.flatnonzero(chunk < 0)[0])
                raise BadInput(f"{src}: token {int(chunk[at])} at position {pos + at} is "
                               "negative; give the file the tokenizer wrote")
            if chunk.size and int(chunk.max()) >= vocab:
                at = int(np.flatnonzero(chunk >= vocab)[0])
                raise BadInput(f"{src}: token {int(chunk[at])} at position {pos + at} is outside "
                               f"the tokenizer's vocabulary of {vocab}; give the tokenizer the "
                               "file was made with")
            if separator is not None:
                ends = np.flatnonzero(chunk == separator) + pos + 1
                ends = ends[ends < n_tokens]
                idx.write(np.stack([ends, np.zeros_like(ends)], 1).astype(np.int64).tobytes())
                n_docs += len(ends)
            data = chunk.astype(out_dtype)
            while len(data):
                if f_out is None:
                    name = f"{split}_{len(shards):03d}.bin"
                    f_out, hasher, in_shard = open(out / name, "wb"), hashlib.sha256(), 0
                take = min(shard_tokens - in_shard, len(data))
                blob = data[:take].tobytes()
                f_out.write(blob)
                hasher.update(blob)
                in_shard += take
                data = data[take:]
                if in_shard == shard_tokens:
                    f_out.close()
                    shards.append({"file": name, "n_tokens": in_shard,
                                   "sha256": hasher.hexdigest()})
                    f_out = None
            pos += len(chunk)
            progress(f"import {split}", pos, n_tokens)
    if f_out is not None:
        f_out.close()
        shards.append({"file": name, "n_tokens": in_shard, "sha256": hasher.hexdigest()})
    docs = raw_to_npy(raw, out / f"{split}_docs.npy", n_docs)
    return {"n_tokens": int(n_tokens), "n_documents": n_docs, "shards": shards,
            "docs": docs.name, "docs_sha256": sha256_file(docs)}


def import_tokens(name: str, train: str, val: str | None = None, tokenizer: str | None = None,
                  home: Home | None = None, dtype: str = "uint16", separator: int | None = None,
                  source: str = "imported", shard_tokens: int = 1 << 27,
                  progress: Progress = no_progress) -> dict:
    """Import `train` (and `val`): a flat token file or a Megatron PREFIX(.bin/.idx)."""
    home = (home or Home.resolve()).ensure()
    check_name(name)
    if not tokenizer:
        raise BadInput("--tokenizer is required: the SentencePiece .model the tokens were made "
                       "with (or a name under $TALLY_HOME/tokenizers/)")
    if dtype not in FLAT_DTYPES:
        raise BadInput(f"--dtype {dtype!r} is not one of {', '.join(FLAT_DTYPES)}")
    tok_path = find_tokenizer(tokenizer, home)
    tok = load_tokenizer(tok_path)
    out_dtype = token_dtype(tok.vocab_size)
    plans = []
    for split, path in (("train", train), ("val", val)):
        if path is None:
            continue
        mega = _megatron_paths(path)
        if mega:
            tdtype, starts = read_megatron_index(*mega)
            plans.append((split, mega[0], tdtype, starts, None, "megatron"))
        else:
            p = Path(path)
            if not p.is_file():
                raise BadInput(f"{path} is neither a token file nor a Megatron PREFIX with "
                               ".bin and .idx")
            sep = tok.eos_id if separator is None else separator
            if not 0 <= sep < tok.vocab_size:
                raise BadInput(f"--separator {sep} is outside the vocabulary of {tok.vocab_size}")
            plans.append((split, p, np.dtype(FLAT_DTYPES[dtype]), None, sep, "flat"))
    home.data.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.import-", dir=home.data))
    try:
        shutil.copyfile(tok_path, tmp / "tokenizer.model")
        splits = {split: _copy_split(tmp, split, src, tdtype, tok.vocab_size, out_dtype,
                                     shard_tokens, starts, sep, progress)
                  for split, src, tdtype, starts, sep, _ in plans}
        tr, va = splits["train"], splits.get("val", {"n_tokens": 0, "n_documents": 0})
        manifest = {
            "format": FORMAT, "name": name,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "dtype": np.dtype(out_dtype).name, "vocab_size": tok.vocab_size,
            "bos_id": tok.bos_id, "eos_id": tok.eos_id,
            "tokenizer": {"id": tok.id, "file": "tokenizer.model",
                          "sha256": sha256_file(tmp / "tokenizer.model"), "stored_as": str(tok_path)},
            "seed": None, "val_fraction": None, "mixture": None,
            "target_tokens": tr["n_tokens"],
            "imported": [{"split": s, "layout": layout, "file": str(src),
                          "dtype": np.dtype(td).name, "separator": sep}
                         for s, src, td, _, sep, layout in plans],
            "sources": [{"name": source, "pattern": str(train), "files": len(plans),
                         "documents": tr["n_documents"], "val_documents": va["n_documents"],
                         "bytes": 0, "duplicate_documents": None, "duplicates_removed": 0,
                         "weight": 1.0, "proportion": 1.0, "val_tokens": va["n_tokens"],
                         "tokens": tr["n_tokens"], "target_tokens": tr["n_tokens"],
                         "sampled_tokens": tr["n_tokens"], "epochs": 1.0}],
            "splits": splits,
        }
        write_json(tmp / "manifest.json", manifest)
        replace_dir(tmp, home.data / name)
        return {**manifest, "path": str(home.data / name)}
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_megatron(prefix: str | os.PathLike, documents: list[list[int]], dtype=np.uint16,
                   sequences_per_document: int = 1) -> tuple[Path, Path]:
    """Write PREFIX.bin + PREFIX.idx as Megatron-LM's _IndexWriter does (tests and bench make
    their own files with it); each document cut into `sequences_per_document` sequences."""
    prefix = Path(prefix)
    lengths, docs, code = [], [0], {v: k for k, v in MEGATRON_DTYPES.items()}[dtype]
    with open(prefix.with_name(prefix.name + ".bin"), "wb") as f:
        for d in documents:
            for part in np.array_split(np.asarray(d, dtype), sequences_per_document):
                f.write(part.tobytes())
                lengths.append(len(part))
            docs.append(len(lengths))
    lengths_a = np.asarray(lengths, np.int32)
    pointers = np.concatenate(([0], np.cumsum(lengths_a, dtype=np.int64)[:-1])) * \
        np.dtype(dtype).itemsize
    with open(prefix.with_name(prefix.name + ".idx"), "wb") as f:
        f.write(MEGATRON_HEADER + struct.pack("<Q", 1) + struct.pack("<B", code))
        f.write(struct.pack("<Q", len(lengths_a)) + struct.pack("<Q", len(docs)))
        f.write(lengths_a.tobytes() + pointers.astype(np.int64).tobytes() +
                np.asarray(docs, np.int64).tobytes())
    return prefix.with_name(prefix.name + ".bin"), prefix.with_name(prefix.name + ".idx")
