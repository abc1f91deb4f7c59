"""`train [PRESET] --init-from DIR`: start training from a Hugging Face or Meta Llama directory.

The format is told from the files: `config.json` with `model.safetensors` (or its index) is
Hugging Face's; `params.json` with `consolidated.NN.pth` is Meta's (several files: a
model-parallel release, merged tensor by tensor). Before Ray starts (`preflight`): the shape
(the preset's, or the directory's own when no preset is given) against every tensor's, the
first that differs named; the directory's SentencePiece tokenizer against the one the dataset
was prepared with. In the workers (`load_into`): each rank reads one whole tensor at a time
(safetensors and torch's mmap read only that tensor), keeps its FSDP2 shard of it and drops
the rest, so no rank ever holds more than one full tensor besides its shards.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from planners.errors import BadInput

_CONSOLIDATED = re.compile(r"^consolidated\.(\d\d)\.pth$")


@dataclass
class Source:
    path: Path
    format: str  # hf | meta
    args: object  # model.presets.ModelArgs
    shapes: dict[str, tuple[int, ...]]  # our names -> full shape, in the directory's order
    files: list[Path] = field(default_factory=list)

    @property
    def tokenizer(self) -> Path:
        return self.path / "tokenizer.model"

    def stored_name(self, ours: str) -> str:
        """The tensor's name in the directory (Hugging Face's names for hf)."""
        if self.format == "hf":
            from model.convert import hf_name

            return hf_name(ours)
        return ours


def _hf_index(path: Path) -> dict[str, Path]:
    """Hugging Face tensor name -> the safetensors file that holds it."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, ValueError, KeyError) as e:
            raise BadInput(f"--init-from {str(path)!r}: unreadable {index.name} ({e})") from None
        return {k: path / v for k, v in weight_map.items()}
    from safetensors import safe_open

    single = path / "model.safetensors"
    try:
        with safe_open(str(single), framework="pt") as f:
            return {k: single for k in f.keys()}
    except Exception as e:  # a truncated or foreign file
        raise BadInput(f"--init-from {str(path)!r}: cannot read model.safetensors ({e})") from None


def open_source(directory: str | Path) -> Source:
    """Detect the directory's format and read its configuration and tensor shapes (no data)."""
    from model import convert

    path = Path(directory).expanduser().absolute()
    if not path.is_dir():
        raise BadInput(f"--init-from {str(path)!r} is not a directory; give a Hugging Face "
                       "(config.json + model.safetensors) or Meta (params.json + "
                       "consolidated.00.pth) Llama directory")
    names = {p.name for p in path.iterdir()}
    try:
        if "config.json" in names and ({"model.safetensors", "model.safetensors.index.json"} & names):
            cfg = json.loads((path / "config.json").read_text())
            args = convert.args_from_hf_config(cfg)
            index = _hf_index(path)
            from safetensors import safe_open

            shapes: dict[str, tuple[int, ...]] = {}
            for file in sorted(set(index.values())):
                with safe_open(str(file), framework="pt") as f:
                    for k in f.keys():
                        try:
                            shapes[convert.our_name(k)] = tuple(f.get_slice(k).get_shape())
                        except convert.LayoutError:
                            if not k.endswith("rotary_emb.inv_freq"):  # older exports keep it
                                raise
            return Source(path, "hf", args, shapes, sorted(set(index.values())))
        shards = sorted(p for p in path.iterdir() if _CONSOLIDATED.match(p.name))
        if "params.json" in names and shards:
            import torch

            params = json.loads((path / "params.json").read_text())
            parts = [torch.load(p, map_location="cpu", mmap=True, weights_only=True) for p in shards]
            emb = parts[0]["tok_embeddings.weight"].shape
            rows_split = len(parts) > 1 and emb[1] == params["dim"]  # LLaMA 3's vocab-parallel
            vocab = sum(p["tok_embeddings.weight"].shape[0] for p in parts) if rows_split else emb[0]
            args = convert.args_from_meta_params(params, vocab_size=vocab)
            shapes = {}
            for k, t in parts[0].items():
                if k == "rope.freqs":
                    continue
                dim = convert.meta_split_dim(k, t.shape, args) if len(parts) > 1 else None
                shape = list(t.shape)
                if dim is not None:
                    shape[dim] = sum(p[k].shape[dim] for p in parts)
                shapes[k] = tuple(shape)
            return Source(path, "meta", args, shapes, shards)
    except convert.LayoutError as e:
        raise BadInput(f"--init-from {str(path)!r}: {e}") from None
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise BadInput(f"--init-from {str(path)!r}: cannot read it ({type(e).__name__}: {e})") from None
    raise BadInput(f"--init-from {str(path)!r} is neither a Hugging Face Llama directory "
                   "(config.json + model.safetensors) nor a Meta one (params.json + "
                   f"consolidated.00.pth); it holds {', '.join(sorted(names)) or 'nothing'}")


def check_shapes(src: Source, args, label: str) -> None:
    """BadInput naming the first tensor (in the model's order) whose shape differs."""
    from model.convert import expected_shapes

    want = expected_shapes(args)
    for name, shape in want.items():
        got = src.shapes.get(name)
        if got != shape:
            have = f"shape {list(got)}" if got else "no such tensor"
            raise BadInput(f"--init-from {str(src.path)!r} does not fit {label}: tensor "
                           f"{src.stored_name(name)} should be {list(shape)}, the directory has "
                           f"{have}")
    extra = [k for k in src.shapes if k not in want]
    if extra:
        raise BadInput(f"--init-from {str(src.path)!r} does not fit {label}: the directory has "
                       f"tensor {src.stored_name(extra[0])}, which {label} does not")
    # same shapes, other arithmetic: the heads split the rotary layout, theta and eps the numbers
    for key in ("n_heads", "kv_heads", "rope_theta", "norm_eps"):
        a, b = getattr(src.args, key), getattr(args, key)
        if a != b:
            raise BadInput(f"--init-from {str(src.path)!r} does not fit {label}: its "
                           f"{key.replace('kv_heads', 'n_kv_heads')} is {a}, {label}'s is {b}")


def preset_for(src: Source, preset_name: str | None, custom: dict | None):
    """The preset a run from `src` trains: the one named (checked against the directory), else
    the registry's preset with the directory's shape, else a preset made from the directory."""
    from model.presets import PRESETS, Preset
    from orchestrator.run.launch import resolve_preset

    if preset_name or custom:
        preset = resolve_preset(preset_name, custom)
        check_shapes(src, preset.args, f"preset {preset.name}")
        return preset
    a = src.args
    fits = []
    for p in PRESETS.values():
        try:
            check_shapes(src, p.args, p.name)
        except BadInput:
            continue
        fits.append(p)
    # the context length is no tensor's shape (and Meta's params.json does not say it)
    same_context = [p for p in fits if p.args.max_seq_len == a.max_seq_len]
    if same_context or fits:
        return (same_context or fits)[0]
    seq = min(a.max_seq_len, 4096)
    return Preset(name=src.path.name or "init", args=a, lr=3e-4,
                  batch_tokens=max(seq, (4 * 2**20 // seq) * seq), train_tokens=10**12,
                  seq_len=seq, note=f"shape of {src.path}")


def check_tokenizer(src: Source, dataset, data_name: str) -> None:
    """The directory's SentencePiece tokenizer must be the dataset's (same vocabulary)."""
    from model.tokenizer import Tokenizer, TokenizerError

    if not src.tokenizer.is_file():
        raise BadInput(f"--init-from {str(src.path)!r} has no SentencePiece tokenizer.model; "
                       "tally's data needs one (prepare with `data prepare --tokenizer "
                       "DIR/tokenizer.model`)")
    try:
        theirs = Tokenizer(src.tokenizer)
    except TokenizerError as e:
        raise BadInput(f"--init-from {str(src.path)!r}: {e} (LLaMA 3's tiktoken tokenizer is "
                       "not a SentencePiece model; tally's data pipeline needs one)") from None
    ours = dataset.manifest["tokenizer"]["id"]
    if theirs.id != ours:
        raise BadInput(f"dataset {data_name!r} was prepared with tokenizer {ours}, not the "
                       f"tokenizer of --init-from {str(src.path)!r} ({theirs.id}); prepare the "
                       f"data with `data prepare --tokenizer {src.tokenizer}`")
    if theirs.vocab_size > src.args.vocab_size:
        raise BadInput(f"--init-from {str(src.path)!r}: its tokenizer has {theirs.vocab_size} "
                       f"pieces, more than the model's {src.args.vocab_size} embeddings")


def preflight(spec, home):
    """Before Ray starts: the preset the run trains, checked against the directory and the
    dataset's tokenizer. Records the shape in `spec.custom_preset` when no preset was named, so
    `--resume` and `export` rebuild it. Returns the preset."""
    from dataclasses import asdict

    from orchestrator.data import open_dataset

    src = open_source(spec.init_from)
    preset = preset_for(src, spec.preset or None, spec.custom_preset)
    spec.init_from = str(src.path)
    if not spec.preset and not spec.custom_preset:
        from model.presets import PRESETS

        if preset.name not in PRESETS:
            spec.custom_preset = asdict(preset)
        spec.preset = preset.name
    check_tokenizer(src, open_dataset(spec.data, home=home, split="train"), spec.data)
    return preset


# -- in the workers -----------------------------------------------------------------------------
class _Reader:
    """Whole tensors by our name, in our layout, one at a time."""

    def __init__(self, src: Source):
        self.src = src
        if src.format == "hf":
            self.index = _hf_index(src.path)
            self.handles: dict = {}
        else:
            import torch

            self.parts = [torch.load(p, map_location="cpu", mmap=True, weights_only=True)
                          for p in src.files]

    def get(self, name: str):
        from model import convert

        if self.src.format == "hf":
            from safetensors import safe_open

            stored = convert.hf_name(name)
            file = self.index[stored]
            if file not in self.handles:
                self.handles[file] = safe_open(str(file), framework="pt")
            _, w = convert.tensor_from_hf(stored, self.handles[file].get_tensor(stored),
                                          self.src.args)
            return w
        return convert.merge_meta_shards(name, [p[name] for p in self.parts], self.src.args)


def load_into(model, directory: str | Path) -> int:
    """Copy the directory's weights into `model` (plain, or sharded by FSDP2: each rank keeps
    its own shard of every tensor). Returns the number of tensors loaded."""
    import torch
    from torch.distributed.tensor import DTensor, distribute_tensor

    src = open_source(directory)
    reader = _Reader(src)
    n = 0
    with torch.no_grad():
        for name, p in model.named_parameters():
            full = reader.get(name)
            if tuple(full.shape) != tuple(p.shape):
                raise ValueError(f"{name}: {list(full.shape)} in {directory}, model has {list(p.shape)}")
            full = full.to(device=p.device, dtype=p.dtype)
            if isinstance(p, DTensor):
                # src_data_rank=None: every rank has the whole tensor; no communication
                local = distribute_tensor(full, p.device_mesh, p.placements,
                                          src_data_rank=None).to_local()
                p.to_local().copy_(local)
            else:
                p.copy_(full)
            del full
            n += 1
    return n
