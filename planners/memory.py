"""Bytes per GPU under FSDP (full sharding) -> the fewest GPUs and 8-GPU nodes that hold a model.

Model state (what sharding divides by the world size W), per parameter:
  - FSDP2 with bf16 mixed precision keeps the *sharded* parameter in fp32: it is the master copy
    the optimiser updates (4 bytes); its gradient is reduce-scattered into fp32 (4 bytes); AdamW
    keeps two fp32 moments (8 bytes). 16 bytes per parameter, the same total as ZeRO-3's
    2 (bf16 params) + 2 (bf16 grads) + 12 (fp32 master, m, v) of Rajbhandari et al. 2020.
    fp32 training (CPU) is also 4 + 4 + 8.
  - Transient, not sharded: the all-gathered compute-dtype copy of the largest FSDP unit (one
    transformer block, or the root's embeddings + output) twice (the unit in use and the one
    prefetched), and that unit's unsharded gradient in fp32 before its reduce-scatter.

Activations (not sharded; they scale with micro-batch b and sequence length s): the per-layer
inventory of Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer
Models" (arXiv 2205.05198) §4.1, which gives s·b·h·(34 + 5·a·s/h) bytes per GPT layer, redone
for a LLaMA block as the reference code writes it: no dropout; RMSNorm computed in fp32 then
scaled by its weight; SwiGLU as silu(w1·x) * w3·x; and memory-efficient attention (LLaMA §2.4),
so the 5·a·s²·b attention-score term is absent and only a per-head log-sum-exp is kept. What
autograd keeps, per token and layer, in elements:
    compute dtype: per norm its normalised input and its output (4h for the two norms);
                   Q and K after RoPE, V, attention output (4h);
                   w1·x, silu(w1·x), w3·x and their product, the w2 input (4f)   -> 8h + 4f
    fp32:          the two norm inputs (2h), their two rsqrt factors (2), log-sum-exp (a heads)
That is 24h + 8f bytes in bf16, about 45·h with f = 8h/3 (Korthikanti's GPT layer: 34·h; fused
norm and SwiGLU kernels would save the difference). tests/test_memory.py checks it against what
torch's autograd really saves for such a block. The head adds the final norm and, per token,
V logits in the compute dtype, their fp32 log-softmax and its fp32 gradient. With full
activation checkpointing (every block recomputed, torchtitan's "full" mode) each layer keeps only
its input (h in the compute dtype; Korthikanti §4.2: 2·s·b·h bytes per layer) and one block's
activations live again during its backward.
"""

from __future__ import annotations

import math
import sys

from model.presets import ModelArgs, block_params, embedding_params, param_count
from planners.errors import BadInput

GPUS_PER_NODE = 8
NEVER_FITS = sys.maxsize  # min_devices() when no number of GPUs can hold the unsharded part
STATE_BYTES_PER_PARAM = {"params": 4, "grads": 4, "optimizer": 8}


def _check(**values: float) -> None:
    for name, value in values.items():
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 1):
            raise BadInput(f"{name} must be a whole number >= 1, got {value!r}")


def activation_bytes_per_token_layer(a: ModelArgs, mixed_precision: bool = True) -> float:
    """Saved activations of one transformer block, per token, without recomputation. Under
    grouped-query attention K and V are kv_dim = h * n_kv_heads / n_heads wide (a GQA-aware
    attention kernel keeps them unexpanded): 6h + 2·kv_dim + 4f instead of 8h + 4f."""
    act = 2 if mixed_precision else 4
    h, f, kv = a.dim, a.ffn_hidden, a.kv_dim
    return act * (6 * h + 2 * kv + 4 * f) + 4 * (2 * h + 2 + a.n_heads)


def head_bytes_per_token(a: ModelArgs, mixed_precision: bool = True) -> float:
    """Final RMSNorm (fp32 input, compute-dtype output) and the logits for the loss."""
    act = 2 if mixed_precision else 4
    return 4 * (a.dim + 1) + 2 * act * a.dim + (act + 4 + 4) * a.vocab_size


def plan_memory(args: ModelArgs, *, seq_len: int, micro_batch: int, world_size: int,
                activation_checkpointing: bool, mixed_precision: bool = True) -> dict:
    """Bytes one GPU needs to train `args` with FSDP (full sharding) over `world_size` GPUs."""
    _check(seq_len=seq_len, micro_batch=micro_batch, world_size=world_size)
    n = param_count(args)
    act = 2 if mixed_precision else 4
    tokens = seq_len * micro_batch
    per_layer = activation_bytes_per_token_layer(args, mixed_precision)
    head = head_bytes_per_token(args, mixed_precision)
    if activation_checkpointing:
        activations = tokens * (args.n_layers * act * args.dim + per_layer + head)
    else:
        activations = tokens * (args.n_layers * per_layer + head)
    unit = max(block_params(args), n - args.n_layers * block_params(args))  # a block or the root
    unsharded = unit * (2 * act + 4)
    state = {k: v * n / world_size for k, v in STATE_BYTES_PER_PARAM.items()}
    total = sum(state.values()) + unsharded + activations
    return {
        "params": n,
        "world_size": int(world_size),
        "seq_len": int(seq_len),
        "micro_batch": int(micro_batch),
        "activation_checkpointing": bool(activation_checkpointing),
        "mixed_precision": bool(mixed_precision),
        "params_bytes": state["params"],
        "grads_bytes": state["grads"],
        "optimizer_bytes": state["optimizer"],
        "unsharded_bytes": float(unsharded),
        "activations_bytes": float(activations),
        "total_bytes_per_device": float(total),
        "sharded_bytes_per_param": sum(STATE_BYTES_PER_PARAM.values()),
        "embedding_params": embedding_params(args),
    }


def min_devices(args: ModelArgs, *, device_memory_bytes: float, seq_len: int, micro_batch: int,
                activation_checkpointing: bool, mixed_precision: bool = True,
                headroom: float = 0.9) -> int:
    """The fewest GPUs whose memory (times `headroom`, for the CUDA context and the allocator's
    fragmentation) holds the plan; NEVER_FITS when even unbounded sharding is not enough
    (activations and one gathered unit do not shrink with more GPUs)."""
    if not (isinstance(device_memory_bytes, (int, float)) and device_memory_bytes > 0):
        raise BadInput(f"device memory must be > 0 bytes, got {device_memory_bytes!r}")
    if not (0 < headroom <= 1):
        raise BadInput(f"memory headroom must be in (0, 1], got {headroom!r}")
    one = plan_memory(args, seq_len=seq_len, micro_batch=micro_batch, world_size=1,
                      activation_checkpointing=activation_checkpointing,
                      mixed_precision=mixed_precision)
    fixed = one["unsharded_bytes"] + one["activations_bytes"]
    sharded = one["total_bytes_per_device"] - fixed
    room = headroom * device_memory_bytes - fixed
    if room <= 0:
        return NEVER_FITS
    return max(1, math.ceil(sharded / room * (1 - 1e-12)))


def nodes_for(devices: int, per_node: int = GPUS_PER_NODE) -> int:
    return NEVER_FITS if devices >= NEVER_FITS else math.ceil(devices / per_node)


def llama_shape(n_params: float) -> ModelArgs:
    """A LLaMA-like shape with about `n_params` parameters, for a size no preset has: head
    dimension 128, width a multiple of 128 and about 128 per layer (LLaMA 7B: 4096 / 32, 13B:
    5120 / 40), LLaMA's vocabulary; the closest count among those shapes wins."""
    best: tuple[float, ModelArgs] | None = None
    for n_layers in range(1, 161):
        for dim in {max(128, 128 * round(128 * n_layers * k / 128)) for k in (0.75, 0.875, 1.0,
                                                                            1.125, 1.25)}:
            a = ModelArgs(dim=dim, n_layers=n_layers, n_heads=dim // 128)
            score = abs(math.log(param_count(a) / n_params)) + 0.05 * abs(
                math.log(dim / (128 * n_layers)))
            if best is None or score < best[0]:
                best = (score, a)
    assert best is not None
    return best[1]
