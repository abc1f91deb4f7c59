"""Sources + weights -> packed token shards; deterministic, resumable sampling.

    prepare(sources, name, home, ...)   text -> tokenizer -> tokens -> shards + manifest.json
    open_dataset(name_or_path, home, split)  -> TokenDataset (memory-mapped, checked)
    Sampler(num_sequences, seed, global_batch, rank, world_size).indices(step)

A dataset lives in `$TALLY_HOME/data/<name>/`: `manifest.json`, token shards `<split>_NNN.bin`
(raw uint16 when the vocabulary fits, else uint32), `<split>_docs.npy` (where each document
starts in the stream and which source it came from) and `tokenizer.model`. Documents are packed
one after another as BOS doc EOS; a training sequence of length T is the fixed slice
[i*T, i*T + T + 1) of that stream, so any sequence length works on the same shards.

Mixture weights act when preparing: with T tokens wanted in all (default: as many as the sources
hold), source i contributes T*w_i/sum(w) tokens, i.e. T*w_i/sum(w)/tokens_i epochs of it (whole
passes in a seeded order, then a seeded sample of documents for the fraction), and the chosen
documents of all sources are shuffled together. This is how LLaMA's Table 1 reads (sampling
proportion and epochs per source).

Everything is written under a temporary name and renamed into place last, so a dataset that is
there is complete; `open_dataset` checks shard sizes always and SHA-256 checksums on request.
"""

from __future__ import annotations

import bz2
import glob
import gzip
import hashlib
import json
import lzma
import math
import multiprocessing as mp
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import chain
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from orchestrator.store.home import Home
from planners.errors import BadInput

FORMAT = "tally-tokens/1"
# LLaMA Table 1: sampling proportion (%) by source (Touvron et al. 2023).
LLAMA_MIXTURE = {"commoncrawl": 67.0, "c4": 15.0, "github": 4.5, "wikipedia": 4.5,
                 "books": 4.5, "arxiv": 2.5, "stackexchange": 2.0}
_MIXTURE_ALIASES = {"cc": "commoncrawl", "common_crawl": "commoncrawl", "code": "github",
                    "wiki": "wikipedia", "book": "books", "stack_exchange": "stackexchange",
                    "se": "stackexchange"}
MIXTURES = {"llama": LLAMA_MIXTURE}
DEFAULT_SHARD_TOKENS = 1 << 27  # 256 MiB per shard at uint16
_CHUNK_CHARS = 1 << 20  # text per tokenisation task

Progress = Callable[[str, float, float], None]  # (stage, done, total)


def _no_progress(stage: str, done: float, total: float) -> None:
    pass


# --- sources ---------------------------------------------------------------------------------

@dataclass
class Source:
    name: str
    pattern: str
    weight: float | None = None
    files: list[Path] = field(default_factory=list)
    docs: list[str] = field(default_factory=list)  # train documents
    val_docs: list[str] = field(default_factory=list)


def _parse_weight(text: str, spec: str) -> float:
    try:
        w = float(text)
    except ValueError:
        raise BadInput(f"source {spec!r}: weight {text!r} is not a number; "
                       "give NAME=PATH_OR_GLOB[:WEIGHT] with a weight > 0") from None
    if not math.isfinite(w) or w <= 0:
        raise BadInput(f"source {spec!r}: weight {text} must be a finite number > 0")
    return w


def parse_source(spec: str) -> Source:
    """`name=PATH_OR_GLOB[:weight]`; a trailing `:x` is a weight when it parses as a number."""
    name, eq, rest = str(spec).partition("=")
    name = name.strip()
    if not eq or not name or not rest:
        raise BadInput(f"source {spec!r} is not NAME=PATH_OR_GLOB[:WEIGHT] "
                       "(e.g. code=src/**/*.py:2 or wiki=wiki.jsonl.gz)")
    pattern, weight = rest, None
    head, colon, tail = rest.rpartition(":")
    if colon and head and "/" not in tail:
        try:
            float(tail)
            is_number = True
        except ValueError:
            is_number = tail.strip().lstrip("+-").replace(".", "").isdigit()
        if is_number or tail.strip().startswith("-"):
            pattern, weight = head, _parse_weight(tail, spec)
    return Source(name=name, pattern=pattern, weight=weight)


def resolve_files(src: Source) -> list[Path]:
    p = Path(src.pattern).expanduser()
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
    elif p.is_file():
        files = [p]
    else:
        files = sorted(Path(f) for f in glob.glob(str(p), recursive=True) if Path(f).is_file())
    if not files:
        raise BadInput(f"source {src.name!r}: no file matches {src.pattern!r}; "
                       "give an existing file, directory or glob")
    return files


def _open_bytes(path: Path) -> bytes:
    suffix = path.suffix.lower()
    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open, ".lzma": lzma.open}.get(suffix)
    try:
        if opener:
            with opener(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, lzma.LZMAError) as e:
        raise BadInput(f"{path}: cannot be read ({e})") from None


def read_documents(path: Path, text_field: str = "text") -> list[str]:
    """A plain-text file is one document; a .jsonl file holds one document per line in
    `text_field`. .gz/.bz2/.xz are decompressed first. Undecodable UTF-8 is refused with its
    byte offset (in the decompressed stream) rather than silently replaced."""
    raw = _open_bytes(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadInput(f"{path}: bytes at offset {e.start} are not valid UTF-8 "
                       f"({raw[e.start:e.start + 4]!r}); give UTF-8 text") from None
    stem = path.name[: -len(path.suffix)] if path.suffix.lower() in (".gz", ".bz2", ".xz", ".lzma") else path.name
    if not stem.lower().endswith((".jsonl", ".ndjson")):
        return [text] if text.strip() else []
    docs = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise BadInput(f"{path}: line {lineno} is not JSON ({e.msg}); "
                           "a .jsonl source needs one JSON object per line") from None
        value = obj.get(text_field) if isinstance(obj, dict) else None
        if not isinstance(value, str):
            raise BadInput(f"{path}: line {lineno} has no string field {text_field!r}; "
                           "name the field with --text-field")
        if value.strip():
            docs.append(value)
    return docs


def apply_mixture(sources: list[Source], mixture: str | None) -> dict:
    """Fill in weights: explicit `:w` wins, then the named mixture by source name, else 1."""
    table = None
    if mixture:
        table = MIXTURES.get(mixture.strip().lower())
        if table is None:
            raise BadInput(f"unknown mixture {mixture!r}; known: {', '.join(MIXTURES)}")
    for s in sources:
        if s.weight is not None:
            continue
        if table is None:
            s.weight = 1.0
            continue
        key = _MIXTURE_ALIASES.get(s.name.lower(), s.name.lower())
        if key not in table:
            raise BadInput(f"source {s.name!r} is not in the {mixture} mixture; name it one of "
                           f"{', '.join(table)} or give it a weight (NAME=PATH:WEIGHT)")
        s.weight = table[key]
    return table or {}


def _split_val(src: Source, docs: list[str], val_fraction: float, seed: int, k: int) -> None:
    """Hold out whole documents, about val_fraction of the source's characters; a source with
    a single document gives the tail of it (cut at a line break) instead."""
    if val_fraction <= 0:
        src.docs = docs
        return
    if len(docs) == 1:
        text = docs[0]
        cut = text.rfind("\n", 0, int(len(text) * (1 - val_fraction))) + 1 or \
            int(len(text) * (1 - val_fraction))
        src.docs = [text[:cut]] if text[:cut].strip() else []
        src.val_docs = [text[cut:]] if text[cut:].strip() else []
        src.docs = src.docs or [text]
        return
    order = np.random.default_rng([seed, k, 1]).permutation(len(docs))
    want, got, val = val_fraction * sum(len(d) for d in docs), 0, set()
    for i in order[:-1]:  # never the last one: a source always keeps training text
        if got >= want:
            break
        val.add(int(i))
        got += len(docs[i])
    src.docs = [d for i, d in enumerate(docs) if i not in val]
    src.val_docs = [d for i, d in enumerate(docs) if i in val]


# --- tokenisation in parallel ----------------------------------------------------------------

_worker_sp = None


def _worker_init(model_path: str) -> None:
    global _worker_sp
    import sentencepiece as spm

    _worker_sp = spm.SentencePieceProcessor(model_file=model_path)


def _encode_chunk(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """-> (all tokens concatenated as int32, length of each document)."""
    ids = _worker_sp.encode(texts)
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    flat = np.fromiter(chain.from_iterable(ids), dtype=np.int32, count=int(lengths.sum()))
    return flat, lengths


def _chunks(docs: list[str]) -> list[list[str]]:
    out, cur, size = [], [], 0
    for d in docs:
        cur.append(d)
        size += len(d)
        if size >= _CHUNK_CHARS:
            out.append(cur)
            cur, size = [], 0
    if cur:
        out.append(cur)
    return out


def tokenize_documents(docs: list[str], model_path: str, workers: int = 2,
                       progress: Progress = _no_progress) -> list[np.ndarray]:
    """Encode documents on `workers` processes; one int32 array per document, in order.
    Workers are forked where the platform can (no re-import: start-up in milliseconds), else
    spawned. Call it from the driver, not from inside a Ray worker."""
    chunks = _chunks(docs)
    total = sum(len(d) for d in docs)
    done, out = 0, []

    def collect(results):
        nonlocal done
        for chunk, (flat, lengths) in zip(chunks, results):
            out.extend(np.split(flat, np.cumsum(lengths)[:-1]))
            done += sum(len(d) for d in chunk)
            progress("tokenise", done, total)

    if workers <= 1 or len(chunks) <= 1:
        _worker_init(model_path)
        collect(_encode_chunk(c) for c in chunks)
    else:
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        with mp.get_context(method).Pool(workers, _worker_init, (model_path,)) as pool:
            collect(pool.imap(_encode_chunk, chunks))
    return out


# --- mixing and packing ----------------------------------------------------------------------

def _sample_docs(n_tokens_per_doc: np.ndarray, target: float, rng) -> list[int]:
    """Whole passes over the documents, each in a fresh seeded order, then a seeded sample of
    documents until the remaining target is reached."""
    total = int(n_tokens_per_doc.sum())
    passes = int(target // total)
    chosen: list[int] = []
    for _ in range(passes):
        chosen.extend(rng.permutation(len(n_tokens_per_doc)).tolist())
    rest, got = target - passes * total, 0
    for i in rng.permutation(len(n_tokens_per_doc)).tolist():
        if got >= rest or got + n_tokens_per_doc[i] / 2 > rest:
            break
        chosen.append(i)
        got += int(n_tokens_per_doc[i])
    return chosen


def _write_split(out_dir: Path, split: str, docs: list[list[np.ndarray]], picks, dtype,
                 bos: int, eos: int, shard_tokens: int, progress: Progress) -> dict:
    """Pack BOS doc EOS for each (source, doc) pick into shards; return the split's manifest."""
    shards, starts, srcs = [], [], []
    buf: list[np.ndarray] = []
    buf_len, pos, total = 0, 0, sum(len(docs[s][d]) + 2 for s, d in picks)

    def flush(final=False):
        nonlocal buf, buf_len
        data = np.concatenate(buf) if buf else np.zeros(0, dtype)
        while len(data) >= shard_tokens or (final and len(data)):
            part, data = data[:shard_tokens], data[shard_tokens:]
            fname = f"{split}_{len(shards):03d}.bin"
            blob = part.astype(dtype, copy=False).tobytes()
            (out_dir / fname).write_bytes(blob)
            shards.append({"file": fname, "n_tokens": int(len(part)),
                           "sha256": hashlib.sha256(blob).hexdigest()})
        buf, buf_len = ([data] if len(data) else []), len(data)

    for s, d in picks:
        tokens = docs[s][d]
        starts.append(pos)
        srcs.append(s)
        buf.append(np.concatenate(([bos], tokens, [eos])).astype(dtype))
        buf_len += len(tokens) + 2
        pos += len(tokens) + 2
        if buf_len >= shard_tokens:
            flush()
            progress(f"write {split}", pos, total)
    flush(final=True)
    progress(f"write {split}", pos, total)
    index = np.stack([np.asarray(starts, np.int64), np.asarray(srcs, np.int64)], axis=1) \
        if starts else np.zeros((0, 2), np.int64)
    np.save(out_dir / f"{split}_docs.npy", index)
    return {"n_tokens": int(pos), "n_documents": len(picks), "shards": shards,
            "docs": f"{split}_docs.npy",
            "docs_sha256": hashlib.sha256((out_dir / f"{split}_docs.npy").read_bytes()).hexdigest()}


def _mix(sources: list[Source], lengths: list[np.ndarray], target_total: float, seed: int,
         salt: int) -> tuple[list[tuple[int, int]], list[dict]]:
    wsum = sum(s.weight for s in sources)
    picks, report = [], []
    for k, (s, n) in enumerate(zip(sources, lengths)):
        have = int(n.sum())
        target = target_total * s.weight / wsum
        chosen = _sample_docs(n, target, np.random.default_rng([seed, k, salt])) if have else []
        got = int(n[chosen].sum()) if chosen else 0
        picks.extend((k, i) for i in chosen)
        report.append({"tokens": have, "target_tokens": int(round(target)), "sampled_tokens": got,
                       "epochs": round(got / have, 4) if have else 0.0})
    order = np.random.default_rng([seed, salt, 99]).permutation(len(picks))
    return [picks[i] for i in order], report


# --- prepare ---------------------------------------------------------------------------------

def prepare(specs: Sequence[str], name: str, home: Home | None = None, vocab_size: int = 32000,
            val_fraction: float = 0.01, seed: int = 0, mixture: str | None = None,
            tokens: int | None = None, tokenizer: str | None = None, text_field: str = "text",
            workers: int = 2, tokenizer_sentences: int | None = None,
            shard_tokens: int = DEFAULT_SHARD_TOKENS,
            progress: Progress = _no_progress) -> dict:
    """Prepare dataset `name` under `$TALLY_HOME/data/` and return its manifest."""
    from model import tokenizer as tk

    home = (home or Home.resolve()).ensure()
    t0 = time.perf_counter()
    _check_name(name)
    if not specs:
        raise BadInput("no sources given; give NAME=PATH_OR_GLOB[:WEIGHT] ... or --demo")
    if not 0 <= val_fraction <= 0.5:
        raise BadInput(f"--val-fraction {val_fraction} must be between 0 and 0.5")
    if tokens is not None and tokens <= 0:
        raise BadInput(f"--tokens {tokens} must be > 0")
    if vocab_size < 300 or vocab_size > 1 << 20:
        raise BadInput(f"--vocab-size {vocab_size} must be between 300 (256 byte pieces "
                       "+ specials + merges) and 1048576")
    sources = [parse_source(s) for s in specs]
    seen = set()
    for s in sources:
        if s.name in seen:
            raise BadInput(f"source name {s.name!r} is given twice; give each source once")
        seen.add(s.name)
    apply_mixture(sources, mixture)

    for k, s in enumerate(sources):
        s.files = resolve_files(s)
        docs = [d for f in s.files for d in read_documents(f, text_field)]
        if not docs:
            raise BadInput(f"source {s.name!r} ({s.pattern}) holds no text; "
                           "give files with non-empty documents")
        _split_val(s, docs, val_fraction, seed, k)
        progress("read", k + 1, len(sources))

    home.data.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=home.data))
    try:
        # 1. the tokenizer: given, or trained on the training documents
        if tokenizer:
            model_path = _find_tokenizer(tokenizer, home)
            shutil.copyfile(model_path, tmp / "tokenizer.model")
        else:
            sentences = tmp / "sentences.txt"
            with open(sentences, "w", encoding="utf-8") as f:
                for s in sources:
                    for d in s.docs:
                        f.writelines(line + "\n" for line in d.splitlines() if line.strip())
            try:
                tk.train(sentences, tmp, "tokenizer", vocab_size=vocab_size, seed=seed,
                         sentences=tokenizer_sentences or tk.DEFAULT_SENTENCES,
                         progress=lambda d, t: progress("tokenizer", d, t))
            except tk.TokenizerError as e:
                raise BadInput(str(e)) from None
            sentences.unlink()
        tok = _load_tokenizer(tmp / "tokenizer.model")
        t_tok = time.perf_counter()

        # 2. tokens, per document, for every source and split
        all_docs = [d for s in sources for d in s.docs + s.val_docs]
        encoded = tokenize_documents(all_docs, str(tmp / "tokenizer.model"), workers, progress)
        train_tok, val_tok, i = [], [], 0
        for s in sources:
            train_tok.append(encoded[i:i + len(s.docs)])
            i += len(s.docs)
            val_tok.append(encoded[i:i + len(s.val_docs)])
            i += len(s.val_docs)
        t_enc = time.perf_counter()

        # 3. mix by weight, pack, write
        dtype = token_dtype(tok.vocab_size)
        lens = [np.array([len(x) + 2 for x in docs], np.int64) for docs in train_tok]
        natural = sum(int(n.sum()) for n in lens)
        picks, report = _mix(sources, lens, tokens or natural, seed, 0)
        splits = {"train": _write_split(tmp, "train", train_tok, picks, dtype, tok.bos_id,
                                        tok.eos_id, shard_tokens, progress)}
        vlens = [np.array([len(x) + 2 for x in docs], np.int64) for docs in val_tok]
        if any(len(v) for v in vlens):
            vpicks, _ = _mix(sources, vlens, sum(int(n.sum()) for n in vlens), seed, 1)
            splits["val"] = _write_split(tmp, "val", val_tok, vpicks, dtype, tok.bos_id,
                                         tok.eos_id, shard_tokens, progress)
        wsum = sum(s.weight for s in sources)
        manifest = {
            "format": FORMAT, "name": name,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "dtype": np.dtype(dtype).name, "vocab_size": tok.vocab_size,
            "bos_id": tok.bos_id, "eos_id": tok.eos_id,
            "tokenizer": {"id": tok.id, "file": "tokenizer.model",
                          "sha256": tk.file_sha256(tmp / "tokenizer.model"),
                          "stored_as": str(home.tokenizers / f"{name}.model")},
            "seed": seed, "val_fraction": val_fraction, "mixture": mixture,
            "target_tokens": int(tokens or natural),
            "sources": [{
                "name": s.name, "pattern": s.pattern, "files": len(s.files),
                "documents": len(s.docs), "val_documents": len(s.val_docs),
                "bytes": sum(len(d.encode("utf-8")) for d in s.docs),
                "weight": s.weight, "proportion": round(s.weight / wsum, 6),
                "val_tokens": int(v.sum()), **r,
            } for s, r, v in zip(sources, report, vlens)],
            "splits": splits,
            "timings_s": {"tokenizer": round(t_tok - t0, 2), "tokenise": round(t_enc - t_tok, 2),
                          "total": None},
        }
        manifest["timings_s"]["total"] = round(time.perf_counter() - t0, 2)
        _write_json(tmp / "manifest.json", manifest)
        if not tokenizer:
            _install_tokenizer(tmp, home, name, vocab_size, seed)
        _replace_dir(tmp, home.data / name)
        return {**manifest, "path": str(home.data / name)}
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def token_dtype(vocab_size: int):
    """uint16 when every id fits (vocab <= 65536, as LLaMA's 32000), else uint32."""
    return np.uint16 if vocab_size <= 1 << 16 else np.uint32


def _check_name(name: str) -> None:
    if not name or name.startswith(".") or "/" in name or os.sep in name or name == "sources":
        raise BadInput(f"dataset name {name!r} must be a plain name "
                       "(no '/', not starting with '.', not 'sources')")


def _load_tokenizer(path: Path):
    from model import tokenizer as tk

    try:
        return tk.Tokenizer(path)
    except tk.TokenizerError as e:
        raise BadInput(str(e)) from None


def _find_tokenizer(spec: str, home: Home) -> Path:
    for p in (Path(spec), home.tokenizers / f"{spec}.model"):
        if p.is_file():
            return p
    raise BadInput(f"tokenizer {spec!r} not found; give a .model file or a name under "
                   f"{home.tokenizers}")


def _install_tokenizer(tmp: Path, home: Home, name: str, vocab_size: int, seed: int) -> None:
    """Copy the dataset's tokenizer to $TALLY_HOME/tokenizers/<name>.model (+ .json)."""
    home.tokenizers.mkdir(parents=True, exist_ok=True)
    for ext in ("model", "json"):
        part = home.tokenizers / f".{name}.{ext}.tmp-{os.getpid()}"
        shutil.copyfile(tmp / f"tokenizer.{ext}", part)
        if ext == "json":
            meta = json.loads(part.read_text())
            meta["name"] = name
            part.write_text(json.dumps(meta, indent=2) + "\n")
        os.replace(part, home.tokenizers / f"{name}.{ext}")


def _write_json(path: Path, obj) -> None:
    part = path.with_name(path.name + ".part")
    part.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(part, path)


def _replace_dir(tmp: Path, final: Path) -> None:
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.chmod(tmp, 0o755)  # mkdtemp made it private
    os.replace(tmp, final)
    if old:
        shutil.rmtree(old, ignore_errors=True)


# --- reading ---------------------------------------------------------------------------------

class TokenDataset:
    """One split of a prepared dataset, memory-mapped."""

    def __init__(self, root: Path, split: str = "train", verify: bool = False):
        self.root = Path(root)
        self.split = split
        mpath = self.root / "manifest.json"
        try:
            self.manifest = json.loads(mpath.read_text())
            info = self.manifest["splits"][split]
            self.dtype = np.dtype(self.manifest["dtype"])
            self.vocab_size = int(self.manifest["vocab_size"])
        except FileNotFoundError:
            raise BadInput(f"{self.root} has no manifest.json: not a prepared dataset "
                           "(run `cli.py data prepare`)") from None
        except KeyError as e:
            if e.args and e.args[0] == split:
                raise BadInput(f"dataset {self.root.name!r} has no {split!r} split; it has "
                               f"{', '.join(self.manifest.get('splits', {}))}") from None
            raise BadInput(f"{mpath} is corrupt (missing {e}); prepare the dataset again") from None
        except (ValueError, TypeError) as e:
            raise BadInput(f"{mpath} is corrupt ({e}); prepare the dataset again") from None
        self.n_tokens = int(info["n_tokens"])
        self.tokenizer_path = str(self.root / self.manifest["tokenizer"]["file"])
        self.sources = [s["name"] for s in self.manifest["sources"]]
        checks = [(self.root / s["file"], int(s["n_tokens"]) * self.dtype.itemsize, s["sha256"])
                  for s in info["shards"]]
        checks.append((Path(self.tokenizer_path), None, self.manifest["tokenizer"]["sha256"]))
        checks.append((self.root / info["docs"], None, info["docs_sha256"]))
        for path, size, digest in checks:
            if not path.is_file():
                raise BadInput(f"{path} is missing; prepare the dataset again")
            if size is not None and path.stat().st_size != size:
                raise BadInput(f"{path} is {path.stat().st_size} bytes, the manifest says {size}: "
                               "the shard is truncated or corrupt; prepare the dataset again")
            if verify:
                from model.tokenizer import file_sha256

                if file_sha256(path) != digest:
                    raise BadInput(f"{path} does not match its SHA-256 checksum in the manifest: "
                                   "the file is corrupt; prepare the dataset again")
        self.shards = [np.memmap(self.root / s["file"], dtype=self.dtype, mode="r")
                       for s in info["shards"] if int(s["n_tokens"])]
        self._ends = np.cumsum([len(s) for s in self.shards]).astype(np.int64)
        self._docs = np.load(self.root / info["docs"])

    def __repr__(self) -> str:
        return f"TokenDataset({str(self.root)!r}, split={self.split!r}, n_tokens={self.n_tokens})"

    def num_sequences(self, seq_len: int) -> int:
        if seq_len < 1:
            raise BadInput(f"sequence length {seq_len} must be >= 1")
        return max(0, (self.n_tokens - 1) // seq_len)

    def get_batch(self, indices: Sequence[int], seq_len: int) -> np.ndarray:
        """Rows of seq_len + 1 tokens (inputs [:, :-1], targets [:, 1:]) as int64."""
        n = self.num_sequences(seq_len)
        out = np.empty((len(indices), seq_len + 1), dtype=np.int64)
        for r, i in enumerate(indices):
            if not 0 <= i < n:
                raise IndexError(f"sequence {i} out of range [0, {n}) at seq_len {seq_len}")
            out[r] = self._read(int(i) * seq_len, seq_len + 1)
        return out

    def _read(self, start: int, length: int) -> np.ndarray:
        k = int(np.searchsorted(self._ends, start, side="right"))
        lo = start - (int(self._ends[k - 1]) if k else 0)
        part = self.shards[k][lo:lo + length]
        if len(part) == length:
            return part
        return np.concatenate([part, self._read(start + len(part), length - len(part))])

    def source_shares(self, indices: Sequence[int], seq_len: int) -> dict[str, int]:
        """Tokens per source in the given sequences (targets, i.e. seq_len per sequence)."""
        starts, src = self._docs[:, 0], self._docs[:, 1]
        counts = np.zeros(len(self.sources), np.int64)
        for i in indices:
            pos = np.arange(int(i) * seq_len + 1, int(i) * seq_len + seq_len + 1)
            np.add.at(counts, src[np.searchsorted(starts, pos, side="right") - 1], 1)
        return {name: int(c) for name, c in zip(self.sources, counts)}


def dataset_dir(path_or_name: str, home: Home | None = None) -> Path:
    p = Path(path_or_name).expanduser()
    if p.is_dir() and (p / "manifest.json").exists() or os.sep in str(path_or_name):
        return p
    return (home or Home.resolve()).data / str(path_or_name)


def open_dataset(path_or_name: str, home: Home | None = None, split: str = "train",
                 verify: bool = False) -> TokenDataset:
    """A prepared dataset by name (under $TALLY_HOME/data/) or path. Shard sizes are checked
    always, SHA-256 checksums with verify=True; anything missing or corrupt is BadInput."""
    root = dataset_dir(path_or_name, home)
    if not root.is_dir():
        known = ", ".join(d["name"] for d in list_datasets(home)) or "none yet"
        raise BadInput(f"dataset {path_or_name!r} not found (looked in {root}); prepared "
                       f"datasets: {known}; make one with `cli.py data prepare`")
    return TokenDataset(root, split, verify)


def list_datasets(home: Home | None = None) -> list[dict]:
    base = (home or Home.resolve()).data
    rows = []
    for d in sorted(base.iterdir()) if base.is_dir() else []:
        if d.name.startswith(".") or not (d / "manifest.json").is_file():
            continue
        try:
            rows.append(summary(json.loads((d / "manifest.json").read_text()), d))
        except (ValueError, KeyError, TypeError):
            rows.append({"name": d.name, "path": str(d), "error": "corrupt manifest.json"})
    return rows


def summary(m: dict, root: Path) -> dict:
    sp = m["splits"]
    return {"name": m["name"], "path": str(root), "vocab_size": m["vocab_size"],
            "dtype": m["dtype"], "tokenizer_id": m["tokenizer"]["id"],
            "train_tokens": sp["train"]["n_tokens"],
            "val_tokens": sp.get("val", {}).get("n_tokens", 0),
            "sources": {s["name"]: s["proportion"] for s in m["sources"]},
            "created_at": m["created_at"]}


def prepare_command(sources: Sequence[str], demo: bool, name: str | None, home: Home,
                    mixture: str | None, vocab_size: int | None, tokens: str | None = None,
                    progress: Progress = _no_progress, **options) -> dict:
    """What `cli.py data prepare` does: the demo's sources (gathered once) or the user's."""
    from planners.units import parse_count

    if demo:
        from orchestrator.demo_data import gather

        if sources:
            raise BadInput("give either --demo or sources (NAME=PATH_OR_GLOB[:WEIGHT]), not both")
        sources = gather(home.ensure(), progress)
        mixture = mixture or "llama"
    if not name:
        if not demo:
            raise BadInput("--name is required with your own sources (e.g. --name mydata)")
        name = "demo"
    n_tokens = int(parse_count(tokens, "--tokens")) if tokens is not None else None
    vocab = vocab_size or (8192 if demo else 32000)
    return prepare(list(sources), name, home, vocab_size=vocab, mixture=mixture,
                   tokens=n_tokens, progress=progress, **options)


def show_dataset(path_or_name: str, home: Home | None = None, verify: bool = False) -> dict:
    ds = open_dataset(path_or_name, home, "train", verify)
    for split in ds.manifest["splits"]:
        if split != "train":
            open_dataset(path_or_name, home, split, verify)
    return {**ds.manifest, "path": str(ds.root), "verified": verify}


# --- sampling --------------------------------------------------------------------------------

class Sampler:
    """Which sequences each rank trains on at each step.

    Epoch e walks a permutation of all sequences seeded by (seed, e), cut into global batches of
    `global_batch` (the last partial batch of an epoch is dropped, so a step never spans two
    epochs and never holds a sequence twice). Step s is global batch s; rank r of W takes the
    r-th contiguous block of B/W. So a run resumed at step k sees the batches an uninterrupted
    run would, ranks never overlap, and their union is the one-worker batch.
    """

    def __init__(self, num_sequences: int, seed: int, global_batch: int, rank: int = 0,
                 world_size: int = 1):
        if world_size < 1 or not 0 <= rank < world_size:
            raise BadInput(f"rank {rank} of world size {world_size}: need 0 <= rank < world size")
        if global_batch < 1 or global_batch % world_size:
            raise BadInput(f"global batch {global_batch} must be a positive multiple of the "
                           f"world size {world_size}")
        if num_sequences < global_batch:
            raise BadInput(f"the dataset holds {num_sequences} sequences, fewer than one global "
                           f"batch of {global_batch}; prepare more data or use a smaller batch")
        self.num_sequences, self.seed = int(num_sequences), int(seed)
        self.global_batch, self.rank, self.world_size = int(global_batch), rank, world_size
        self.steps_per_epoch = self.num_sequences // self.global_batch
        self.per_rank = self.global_batch // world_size
        self._cached: tuple[int, np.ndarray] = (-1, np.empty(0, np.int64))

    def _perm(self, epoch: int) -> np.ndarray:
        if self._cached[0] != epoch:  # one permutation per epoch, kept while the epoch lasts
            self._cached = (epoch, np.random.default_rng([self.seed, epoch])
                            .permutation(self.num_sequences))
        return self._cached[1]

    def epoch(self, step: int) -> int:
        return step // self.steps_per_epoch

    def global_indices(self, step: int) -> list[int]:
        if step < 0:
            raise ValueError(f"step {step} must be >= 0")
        e, s = divmod(step, self.steps_per_epoch)
        return self._perm(e)[s * self.global_batch:(s + 1) * self.global_batch].tolist()

    def indices(self, step: int) -> list[int]:
        g = self.global_indices(step)
        return g[self.rank * self.per_rank:(self.rank + 1) * self.per_rank]
