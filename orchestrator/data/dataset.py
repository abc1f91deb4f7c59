"""A prepared dataset on disk: the manifest, memory-mapped shards, and which sequences to train.

    open_dataset(name_or_path, home, split)  -> TokenDataset (memory-mapped, checked)
    Sampler(num_sequences, seed, global_batch, rank, world_size).indices(step)

A dataset lives in `$TALLY_HOME/data/<name>/`: `manifest.json`, token shards `<split>_NNN.bin`
(raw uint16 when the vocabulary fits, else uint32), `<split>_docs.npy` (where each document
starts in the stream and which source it came from) and `tokenizer.model`. Documents are packed
one after another as BOS doc EOS; a training sequence of length T is the fixed slice
[i*T, i*T + T + 1) of that stream, so any sequence length works on the same shards.

Datasets are written under a hidden name and renamed into place last, so a dataset that is
there is complete; `open_dataset` checks shard sizes always and SHA-256 checksums on request.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from orchestrator.store.home import Home
from planners.errors import BadInput

FORMAT = "tally-tokens/1"

Progress = Callable[[str, float, float], None]  # (stage, done, total)


def no_progress(stage: str, done: float, total: float) -> None:
    pass


def token_dtype(vocab_size: int):
    """uint16 when every id fits (vocab <= 65536, as LLaMA's 32000), else uint32."""
    return np.uint16 if vocab_size <= 1 << 16 else np.uint32


def check_name(name: str) -> None:
    if not name or name.startswith(".") or "/" in name or os.sep in name or name == "sources":
        raise BadInput(f"dataset name {name!r} must be a plain name "
                       "(no '/', not starting with '.', not 'sources')")


def load_tokenizer(path: Path):
    from model import tokenizer as tk

    try:
        return tk.Tokenizer(path)
    except tk.TokenizerError as e:
        raise BadInput(str(e)) from None


def find_tokenizer(spec: str, home: Home) -> Path:
    for p in (Path(spec), home.tokenizers / f"{spec}.model"):
        if p.is_file():
            return p
    raise BadInput(f"tokenizer {spec!r} not found; give a .model file or a name under "
                   f"{home.tokenizers}")


def install_tokenizer(tmp: Path, home: Home, name: str, vocab_size: int, seed: int) -> None:
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


def write_json(path: Path, obj) -> None:
    part = path.with_name(path.name + ".part")
    part.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(part, path)


def replace_dir(tmp: Path, final: Path) -> None:
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
