"""Our weights in the layouts of the released checkpoints, and back: Meta's and Hugging Face's.

Meta (`consolidated.NN.pth` + `params.json`): our parameter names and layout are Meta's, so a
state dict goes out as it is; a model-parallel release (LLaMA 2 13B and 70B: 2 and 8 files) is
merged along the dimension each file was split on.

Hugging Face (`LlamaForCausalLM`, what transformers, vLLM and the Hub read): other names, and
rotary embeddings that rotate the two *halves* of each head (channel j with j + head_dim/2)
where Meta's rotate *adjacent* pairs (2k, 2k+1). Permuting the rows of wq and wk per head (the
permutation transformers' own `convert_llama_weights_to_hf.py` applies) makes the two agree.

Pure tensor and dict work: no files, no distributed code, nothing of ours outside model/.
"""

from __future__ import annotations

import math
import re
from typing import Iterable

import torch

from model.presets import ModelArgs

# ours -> Hugging Face, per block (layers.{i}. -> model.layers.{i}.)
_BLOCK = {
    "attention.wq.weight": "self_attn.q_proj.weight",
    "attention.wk.weight": "self_attn.k_proj.weight",
    "attention.wv.weight": "self_attn.v_proj.weight",
    "attention.wo.weight": "self_attn.o_proj.weight",
    "feed_forward.w1.weight": "mlp.gate_proj.weight",
    "feed_forward.w2.weight": "mlp.down_proj.weight",
    "feed_forward.w3.weight": "mlp.up_proj.weight",
    "attention_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
}
_TOP = {"tok_embeddings.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
        "output.weight": "lm_head.weight"}
_BLOCK_BACK = {v: k for k, v in _BLOCK.items()}
_TOP_BACK = {v: k for k, v in _TOP.items()}
_OURS = re.compile(r"^layers\.(\d+)\.(.+)$")
_HF = re.compile(r"^model\.layers\.(\d+)\.(.+)$")


class LayoutError(ValueError):
    """A name or shape that does not belong to a LLaMA of the given arguments."""


# -- names and shapes --------------------------------------------------------------------------
def expected_shapes(a: ModelArgs) -> dict[str, tuple[int, ...]]:
    """Every parameter of `model.llama.Transformer(a)`, our names, in the model's order."""
    d, kv, h, V = a.dim, a.kv_dim, a.ffn_hidden, a.vocab_size
    out: dict[str, tuple[int, ...]] = {"tok_embeddings.weight": (V, d)}
    for i in range(a.n_layers):
        p = f"layers.{i}."
        out.update({p + "attention.wq.weight": (d, d), p + "attention.wk.weight": (kv, d),
                    p + "attention.wv.weight": (kv, d), p + "attention.wo.weight": (d, d),
                    p + "feed_forward.w1.weight": (h, d), p + "feed_forward.w2.weight": (d, h),
                    p + "feed_forward.w3.weight": (h, d), p + "attention_norm.weight": (d,),
                    p + "ffn_norm.weight": (d,)})
    out.update({"norm.weight": (d,), "output.weight": (V, d)})
    return out


def hf_name(ours: str) -> str:
    if ours in _TOP:
        return _TOP[ours]
    m = _OURS.match(ours)
    if not m or m.group(2) not in _BLOCK:
        raise LayoutError(f"{ours!r} is not a LLaMA parameter")
    return f"model.layers.{m.group(1)}.{_BLOCK[m.group(2)]}"


def our_name(hf: str) -> str:
    if hf in _TOP_BACK:
        return _TOP_BACK[hf]
    m = _HF.match(hf)
    if not m or m.group(2) not in _BLOCK_BACK:
        raise LayoutError(f"{hf!r} is not a LlamaForCausalLM parameter")
    return f"layers.{m.group(1)}.{_BLOCK_BACK[m.group(2)]}"


# -- rotary layout -----------------------------------------------------------------------------
def to_half_split(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Rows of wq / wk from adjacent-pair rotary order to Hugging Face's half-split order:
    per head, the rows (0, 2, 4, ...) first, then (1, 3, 5, ...)."""
    out_dim, in_dim = w.shape
    return w.view(n_heads, out_dim // n_heads // 2, 2, in_dim).transpose(1, 2).reshape(out_dim, in_dim)


def to_adjacent_pairs(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """The inverse of `to_half_split`."""
    out_dim, in_dim = w.shape
    return w.view(n_heads, 2, out_dim // n_heads // 2, in_dim).transpose(1, 2).reshape(out_dim, in_dim)


def _heads_of(name: str, a: ModelArgs) -> int | None:
    if name.endswith("attention.wq.weight"):
        return a.n_heads
    if name.endswith("attention.wk.weight"):
        return a.kv_heads
    return None


def tensor_to_hf(name: str, w: torch.Tensor, a: ModelArgs) -> tuple[str, torch.Tensor]:
    """One of our tensors as Hugging Face names and lays it out."""
    heads = _heads_of(name, a)
    return hf_name(name), (to_half_split(w, heads) if heads else w)


def tensor_from_hf(hf: str, w: torch.Tensor, a: ModelArgs) -> tuple[str, torch.Tensor]:
    name = our_name(hf)
    heads = _heads_of(name, a)
    return name, (to_adjacent_pairs(w, heads) if heads else w)


def to_hf(state: dict[str, torch.Tensor], a: ModelArgs) -> dict[str, torch.Tensor]:
    return dict(tensor_to_hf(k, v, a) for k, v in state.items())


def from_hf(state: dict[str, torch.Tensor], a: ModelArgs) -> dict[str, torch.Tensor]:
    return dict(tensor_from_hf(k, v, a) for k, v in state.items())


# -- configurations ----------------------------------------------------------------------------
def hf_config(a: ModelArgs, *, bos_id: int, eos_id: int, dtype: str) -> dict:
    """`config.json` of a LlamaForCausalLM with these arguments."""
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": a.dim, "intermediate_size": a.ffn_hidden,
        "num_hidden_layers": a.n_layers, "num_attention_heads": a.n_heads,
        "num_key_value_heads": a.kv_heads, "head_dim": a.head_dim, "vocab_size": a.vocab_size,
        "max_position_embeddings": a.max_seq_len, "rms_norm_eps": a.norm_eps,
        "rope_theta": a.rope_theta, "rope_scaling": None, "hidden_act": "silu",
        "attention_bias": False, "attention_dropout": 0.0, "mlp_bias": False,
        "tie_word_embeddings": False, "initializer_range": 0.02, "pretraining_tp": 1,
        "use_cache": True, "bos_token_id": bos_id, "eos_token_id": eos_id,
        "pad_token_id": None, "torch_dtype": dtype,
    }


def _ffn_fields(dim: int, hidden: int) -> dict:
    """multiple_of / ffn_dim_multiplier that give SwiGLU width `hidden` for `dim`: the released
    combinations first (so a LLaMA 2 or 3 directory gets Meta's own fields), else the width
    itself as the multiple."""
    for multiple_of in (256, 1024, 4096, 32, 64, 128):
        for mult in (None, 1.3):
            f = {"multiple_of": multiple_of, "ffn_dim_multiplier": mult}
            if ModelArgs(dim=dim, n_heads=1, **f).ffn_hidden == hidden:
                return f
    return {"multiple_of": hidden, "ffn_dim_multiplier": None}


def args_from_hf_config(cfg: dict) -> ModelArgs:
    """ModelArgs from a LlamaForCausalLM `config.json` (LayoutError when it is not one we can
    build: another architecture, biases, tied embeddings, RoPE scaling)."""
    arch = cfg.get("architectures") or []
    if cfg.get("model_type") != "llama" and "LlamaForCausalLM" not in arch:
        raise LayoutError(f"config.json describes {cfg.get('model_type') or arch}, not a Llama "
                          "(model_type llama, LlamaForCausalLM)")
    for key in ("attention_bias", "mlp_bias", "tie_word_embeddings"):
        if cfg.get(key):
            raise LayoutError(f"config.json sets {key}; tally's LLaMA has no biases and an "
                              "untied output projection")
    rope = cfg.get("rope_scaling") or cfg.get("rope_parameters") or {}
    if rope.get("rope_type", rope.get("type", "default")) not in ("default", None):
        raise LayoutError(f"config.json uses RoPE scaling {rope.get('rope_type', rope.get('type'))!r}; "
                          "tally's LLaMA has plain rotary embeddings")
    dim, n_heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
    if cfg.get("head_dim") not in (None, dim // n_heads):
        raise LayoutError(f"config.json has head_dim {cfg['head_dim']}, not hidden_size / "
                          f"num_attention_heads = {dim // n_heads}")
    theta = cfg.get("rope_theta", rope.get("rope_theta", 10000.0))
    kv = int(cfg.get("num_key_value_heads") or n_heads)
    return ModelArgs(dim=dim, n_layers=int(cfg["num_hidden_layers"]), n_heads=n_heads,
                     n_kv_heads=kv if kv != n_heads else None,
                     vocab_size=int(cfg["vocab_size"]), norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
                     max_seq_len=int(cfg.get("max_position_embeddings", 2048)),
                     rope_theta=float(theta), **_ffn_fields(dim, int(cfg["intermediate_size"])))


def meta_params(a: ModelArgs) -> dict:
    """`params.json` as Meta writes it: no max_seq_len (Meta's loader passes its own and would
    refuse a second one), n_kv_heads and ffn_dim_multiplier only where they apply."""
    out = {"dim": a.dim, "n_layers": a.n_layers, "n_heads": a.n_heads}
    if a.n_kv_heads is not None and a.n_kv_heads != a.n_heads:
        out["n_kv_heads"] = a.n_kv_heads
    out.update({"vocab_size": a.vocab_size, "multiple_of": a.multiple_of})
    if a.ffn_dim_multiplier is not None:
        out["ffn_dim_multiplier"] = a.ffn_dim_multiplier
    out.update({"norm_eps": a.norm_eps, "rope_theta": a.rope_theta})
    return out


def args_from_meta_params(params: dict, vocab_size: int | None = None) -> ModelArgs:
    """ModelArgs from Meta's `params.json`; `vocab_size` (the embedding's rows) where it says
    -1, as LLaMA 1 and 2 do."""
    if params.get("use_scaled_rope"):
        raise LayoutError("params.json sets use_scaled_rope (LLaMA 3.1 context extension); "
                          "tally's LLaMA has plain rotary embeddings")
    vocab = int(params.get("vocab_size", -1))
    if vocab <= 0:
        if vocab_size is None:
            raise LayoutError("params.json has no vocab_size and no embedding to take it from")
        vocab = int(vocab_size)
    fields = {k: params[k] for k in ("multiple_of", "norm_eps", "rope_theta", "n_kv_heads",
                                     "ffn_dim_multiplier", "max_seq_len") if params.get(k) is not None}
    if fields.get("n_kv_heads") == params["n_heads"]:
        del fields["n_kv_heads"]
    return ModelArgs(dim=int(params["dim"]), n_layers=int(params["n_layers"]),
                     n_heads=int(params["n_heads"]), vocab_size=vocab, **fields)


# -- Meta's model-parallel files ---------------------------------------------------------------
def meta_split_dim(name: str, shard_shape: Iterable[int], a: ModelArgs) -> int | None:
    """The dimension Meta's model-parallel layers split `name` along (None: replicated).
    Column-parallel (wq, wk, wv, w1, w3, output): rows; row-parallel (wo, w2): columns; the
    embedding: columns in LLaMA 1/2 (ParallelEmbedding), rows in LLaMA 3 (VocabParallel),
    told apart by the shard's shape."""
    if name.endswith("norm.weight") or name == "rope.freqs":
        return None
    if name.endswith(("attention.wo.weight", "feed_forward.w2.weight")):
        return 1
    if name == "tok_embeddings.weight":
        return 1 if list(shard_shape)[1] != a.dim else 0
    return 0


def merge_meta_shards(name: str, shards: list[torch.Tensor], a: ModelArgs) -> torch.Tensor:
    if len(shards) == 1:
        return shards[0]
    dim = meta_split_dim(name, shards[0].shape, a)
    return shards[0] if dim is None else torch.cat(shards, dim=dim)


def dtype_of(name: str) -> torch.dtype:
    try:
        return {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp32": torch.float32,
                "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16}[name]
    except KeyError:
        raise LayoutError(f"dtype {name!r} is not one of bf16, fp32") from None


def nbytes(shape: Iterable[int], dtype: torch.dtype) -> int:
    return math.prod(shape) * torch.empty((), dtype=dtype).element_size()
