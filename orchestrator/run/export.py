"""`export RUN_ID`: a run's checkpoint as a Hugging Face or Meta Llama directory.

    hf     model.safetensors (model-0000i-of-0000n.safetensors + model.safetensors.index.json
           above MAX_SHARD_BYTES), config.json (LlamaForCausalLM), generation_config.json,
           tokenizer.model + tokenizer_config.json + special_tokens_map.json (LlamaTokenizer)
    meta   consolidated.00.pth, params.json, tokenizer.model

The checkpoint is the run's newest complete one (or `step`), however many workers wrote it:
torch.distributed.checkpoint reads the DCP shards into whole tensors in this one process (no
process group). Checkpoint storage is read through fsspec, so `s3://...` (with its fsspec
driver installed) reads as a local directory does. Everything is checked before anything is
written; files are written beside the output directory and moved in at the end.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from planners.errors import BadInput
from orchestrator.run.spec import stored_settings

FORMATS = ("hf", "meta")
DTYPES = ("bf16", "fp32")
MAX_SHARD_BYTES = 5 * 10**9  # Hugging Face's default max_shard_size, "5GB"
MARKER = "COMPLETE.json"  # orchestrator/run/checkpoint.py's marker
TOKENIZER = "tokenizer.model"  # the run's SentencePiece model, kept in its directory
_STEP = re.compile(r"^step-(\d{8})$")
# what an export writes: removed from DIR first under --force, so no stale shard remains
_OURS = re.compile(r"^(model(-\d{5}-of-\d{5})?\.safetensors|model\.safetensors\.index\.json|"
                   r"consolidated\.\d\d\.pth|params\.json|config\.json|generation_config\.json|"
                   r"tokenizer\.model|tokenizer_config\.json|special_tokens_map\.json|"
                   r"tokenizer\.json)$")


# -- checkpoint storage, local or in a bucket ---------------------------------------------------
def _fs(url: str):
    import fsspec

    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as e:  # no driver for the scheme (s3fs, gcsfs ...)
        raise BadInput(f"cannot open checkpoint storage {url!r}: {e}") from None


def _join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts])


@dataclass(frozen=True)
class Checkpoint:
    step: int
    url: str  # the step directory: a local path or a URI


def list_complete(root: str) -> list[tuple[int, str]]:
    """(step, url) of the checkpoint directories that carry the marker, newest first."""
    fs, path = _fs(root)
    try:
        entries = fs.ls(path, detail=False)
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = []
    for entry in entries:
        m = _STEP.match(entry.rstrip("/").rsplit("/", 1)[-1])
        if m and fs.exists(_join(entry, MARKER)):
            found.append((int(m.group(1)), _join(root, m.group(0))))
    return sorted(found, reverse=True)


def verify(url: str) -> str | None:
    """None when every file the marker lists is there with its size and sha256."""
    fs, path = _fs(url)
    try:
        manifest = json.loads(fs.cat_file(_join(path, MARKER)))
    except (OSError, ValueError) as e:
        return f"unreadable marker ({e})"
    for name, want in sorted(manifest.get("files", {}).items()):
        f = _join(path, name)
        if not fs.exists(f):
            return f"{name} is missing"
        size = fs.size(f)
        if size != want["bytes"]:
            return f"{name} has {size} bytes, expected {want['bytes']}"
        h = hashlib.sha256()
        with fs.open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
        if h.hexdigest() != want["sha256"]:
            return f"{name} does not match its checksum"
    return None


def choose(root: str, step: int | None, run_id: str) -> Checkpoint:
    """The newest intact checkpoint, or `step`; BadInput naming what exists otherwise."""
    found = list_complete(root)
    steps = ", ".join(str(s) for s, _ in found) or "none"
    if step is not None:
        match = [url for s, url in found if s == step]
        if not match:
            raise BadInput(f"run {run_id} has no complete checkpoint at step {step}; complete "
                           f"checkpoints: {steps}")
        reason = verify(match[0])
        if reason:
            raise BadInput(f"checkpoint step {step} of run {run_id} is not usable ({reason})")
        return Checkpoint(step, match[0])
    skipped = []
    for s, url in found:
        reason = verify(url)
        if reason is None:
            return Checkpoint(s, url)
        skipped.append(f"step {s}: {reason}")
    if skipped:
        raise BadInput(f"run {run_id} has no intact checkpoint ({'; '.join(skipped)})")
    raise BadInput(f"run {run_id} has no complete checkpoint under {root} (complete "
                   "checkpoints: none); train it until a checkpoint is written")


def read_model_state(url: str) -> dict:
    """The model's whole tensors from a DCP checkpoint written by any number of ranks, read in
    this one process (DCP's own no-process-group load of the "model" entry only)."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict_from_keys

    if "://" in url:
        from torch.distributed.checkpoint._fsspec_filesystem import FsspecReader

        reader = FsspecReader(url)
    else:
        reader = FileSystemReader(url)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "assuming the intent is to load in a single process"
        state = _load_state_dict_from_keys({"model"}, storage_reader=reader)
    return state["model"]


# -- the run ------------------------------------------------------------------------------------
def keep_tokenizer(run_dir: Path, tokenizer_path: str | None) -> None:
    """Keep the run's tokenizer in its directory (at launch), so an export finds it even if
    the dataset is gone or re-prepared with another tokenizer."""
    if tokenizer_path and Path(tokenizer_path).is_file() and "://" not in str(run_dir):
        dest = Path(run_dir) / TOKENIZER
        if not dest.exists():
            part = dest.with_name(f".{TOKENIZER}.tmp-{os.getpid()}")
            shutil.copyfile(tokenizer_path, part)
            os.replace(part, dest)


def _run_tokenizer(run, home) -> str:
    storage = run.storage_path or ""
    fs, path = _fs(storage) if storage else (None, None)
    if fs is not None and fs.exists(_join(path, TOKENIZER)):
        if "://" not in storage:
            return _join(path, TOKENIZER)
        local = Path(home.root) / "tokenizers" / f".export-{run.id}.model"
        local.parent.mkdir(parents=True, exist_ok=True)
        fs.get(_join(path, TOKENIZER), str(local))
        return str(local)
    data = stored_settings(run.config).get("data")
    from orchestrator.data import open_dataset

    try:
        ds = open_dataset(data, home=home, split="train")
    except BadInput:
        raise BadInput(f"run {run.id} keeps no tokenizer and its dataset {data!r} is gone; "
                       "prepare it again with the same tokenizer") from None
    return ds.tokenizer_path


def _run_args(run):
    from orchestrator.run.launch import resolve_preset

    return resolve_preset(run.preset, stored_settings(run.config).get("custom_preset")).args


# -- writing ------------------------------------------------------------------------------------
def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out {str(out)!r} is a file; give a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise BadInput(f"--out {str(out)!r} is not empty ({len(list(out.iterdir()))} entries); "
                       "give an empty or new directory, or --force to write over it")


def _hf_files(state: dict, args, tmp: Path, dtype, max_shard_bytes: int) -> list[str]:
    from safetensors.torch import save_file

    from model.convert import nbytes, tensor_to_hf

    names = list(state)
    sizes = {n: nbytes(state[n].shape, dtype) for n in names}
    shards: list[list[str]] = [[]]
    for n in names:  # greedy, in the model's order, as save_pretrained does
        if shards[-1] and sum(sizes[m] for m in shards[-1]) + sizes[n] > max_shard_bytes:
            shards.append([])
        shards[-1].append(n)
    files, weight_map = [], {}
    for i, shard in enumerate(shards, 1):
        fname = "model.safetensors" if len(shards) == 1 else \
            f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        tensors = {}
        for n in shard:
            hf, w = tensor_to_hf(n, state.pop(n), args)
            tensors[hf] = w.to(dtype).contiguous()
            weight_map[hf] = fname
        save_file(tensors, str(tmp / fname), metadata={"format": "pt"})
        del tensors
        files.append(fname)
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(sizes.values())}, "weight_map": weight_map}
        (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
        files.append("model.safetensors.index.json")
    return files


def _hf_tokenizer(tmp: Path, tok, max_len: int) -> list[str]:
    """tokenizer.json + tokenizer_config.json + special_tokens_map.json, the fast tokenizer
    AutoTokenizer loads, encoding exactly as the SentencePiece model does. transformers'
    own LlamaTokenizer conversion gives the vocabulary and merges; its Metaspace
    pre-tokenizer is replaced by the normaliser its earlier conversions used (prepend "▁",
    spaces to "▁"), because Metaspace drops SentencePiece's dummy prefix before a leading
    space ("  x" would lose a space)."""
    from tokenizers import decoders, normalizers
    from transformers import LlamaTokenizer

    sp = tok.sp
    specials = {"bos_token": sp.id_to_piece(tok.bos_id), "eos_token": sp.id_to_piece(tok.eos_id),
                "unk_token": sp.id_to_piece(sp.unk_id())}
    conv = tmp / ".convert"
    conv.mkdir()
    shutil.copyfile(tok.path, conv / TOKENIZER)
    (conv / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "LlamaTokenizer", **specials, "add_bos_token": True,
         "add_eos_token": False, "legacy": False}))
    backend = LlamaTokenizer.from_pretrained(str(conv), local_files_only=True).backend_tokenizer
    shutil.rmtree(conv)
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"),
                                               normalizers.Replace(" ", "\u2581")])
    backend.pre_tokenizer = None
    backend.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                         decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    backend.save(str(tmp / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", **specials, "pad_token": None,
              "add_bos_token": True, "add_eos_token": False,
              "clean_up_tokenization_spaces": False, "model_max_length": max_len}
    (tmp / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (tmp / "special_tokens_map.json").write_text(json.dumps(specials, indent=2) + "\n")
    return ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]


def export_run(store, home, run_id: str, *, fmt: str, out: str, step: int | None = None,
               dtype: str = "bf16", force: bool = False,
               max_shard_bytes: int = MAX_SHARD_BYTES) -> dict:
    """Write run `run_id`'s checkpoint to `out` in format `fmt`; returns what was written."""
    import torch

    from model.convert import dtype_of, hf_config, meta_params
    from model.tokenizer import Tokenizer

    if fmt not in FORMATS:
        raise BadInput(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    if dtype not in DTYPES:
        raise BadInput(f"--dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    if step is not None and step < 1:
        raise BadInput(f"--step must be >= 1, got {step}")
    run = store.get_run(run_id)  # BadInput: no such run
    out_dir = Path(out).expanduser().absolute()
    _check_out(out_dir, force)
    if not run.storage_path:
        raise BadInput(f"run {run_id} has no storage (it never started); complete "
                       "checkpoints: none")
    t0 = time.perf_counter()
    ckpt = choose(_join(run.storage_path, "checkpoints"), step, run_id)
    args = _run_args(run)
    tok = Tokenizer(_run_tokenizer(run, home))
    t_found = time.perf_counter()
    state = read_model_state(ckpt.url)
    from model.convert import expected_shapes

    want = expected_shapes(args)
    for name, shape in want.items():
        got = tuple(state[name].shape) if name in state else None
        if got != shape:
            raise BadInput(f"checkpoint {ckpt.url} does not hold {run.preset}'s {name} "
                           f"{list(shape)} (it has {list(got) if got else 'no such tensor'})")
    t_read = time.perf_counter()
    torch_dtype = dtype_of(dtype)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.export-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        if fmt == "hf":
            files = _hf_files(state, args, tmp, torch_dtype, max_shard_bytes)
            name = "bfloat16" if dtype == "bf16" else "float32"
            config = hf_config(args, bos_id=tok.bos_id, eos_id=tok.eos_id, dtype=name)
            (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
            gen = {"bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id, "do_sample": True,
                   "temperature": 0.6, "top_p": 0.9}  # LLaMA 2's sampling defaults
            (tmp / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
            files += ["config.json", "generation_config.json"]
            files += _hf_tokenizer(tmp, tok, args.max_seq_len)
        else:
            weights = {n: state.pop(n).to(torch_dtype).contiguous() for n in list(want)}
            torch.save(weights, tmp / "consolidated.00.pth")
            del weights
            (tmp / "params.json").write_text(json.dumps(meta_params(args), indent=2) + "\n")
            files = ["consolidated.00.pth", "params.json"]
        shutil.copyfile(tok.path, tmp / TOKENIZER)
        files.append(TOKENIZER)
        out_dir.mkdir(parents=True, exist_ok=True)
        for old in out_dir.iterdir():  # --force: no stale file of an earlier export stays
            if _OURS.match(old.name) and old.is_file():
                old.unlink()
        for f in files:
            os.replace(tmp / f, out_dir / f)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    del state
    t_done = time.perf_counter()
    return {"run_id": run_id, "step": ckpt.step, "checkpoint": ckpt.url, "format": fmt,
            "dtype": dtype, "out": str(out_dir), "preset": run.preset,
            "params": sum(math.prod(s) for s in want.values()),
            "files": {f: (out_dir / f).stat().st_size for f in sorted(files)},
            "tokenizer": {"path": tok.path, "id": tok.id, "bos_id": tok.bos_id,
                          "eos_id": tok.eos_id},
            "seconds": {"find_and_verify": round(t_found - t0, 3),
                        "read": round(t_read - t_found, 3), "write": round(t_done - t_read, 3),
                        "total": round(t_done - t0, 3)}}
