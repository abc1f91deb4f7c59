"""Bytes per GPU under FSDP2 (full sharding) -> the fewest GPUs and 8-GPU nodes that hold a model.

The plan is the peak of one training step as PyTorch's own FSDP2 memory tracker sees it
(`torch.distributed._tools.fsdp2_mem_tracker.FSDPMemTracker`; tests/unit/test_memory_tracker.py
holds this module to it, within 15% and never under). The model is wrapped as the trainer wraps it
(orchestrator/run/worker.py): `fully_shard` per transformer block and at the root (embeddings, final
norm, output), bf16 parameters with fp32 gradient reduction, AdamW. The peak is the largest of five
moments of a step, each the sum of five named terms:

  parameters   the fp32 shard of every parameter: the master copy AdamW updates (4 bytes/param/W)
  gradients    the fp32 sharded gradients alive at that moment (4 bytes/param/W once all exist);
               with gradient accumulation, FSDP2 also keeps the *unsharded* fp32 gradients of
               the whole model between micro-batches (4 bytes/param, not divided by W)
  optimiser    AdamW's two fp32 moments (8 bytes/param/W), plus, during the step, the
               temporaries of the per-parameter update (4 copies of the largest shard in fp32)
  unsharded    what FSDP gathers: the root unit (kept gathered from its forward to the end of
  units        backward), the block in use, the all-gather buffer of the last/prefetched block,
               the fp32 reduce-scatter input of the previous block, the unsharded
               gradients of the block being differentiated and of the root before their
               reduce-scatter
  activations  what autograd keeps (below), the loss's chunk temporaries, the gradient flowing
               through the block being differentiated

The moments: the end of the forward (inside the loss: every activation plus the chunked
cross-entropy's peak), the backward of the top block and of the lowest blocks (at their start,
and once their feed-forward's weight gradients exist), the root's
post-backward (all sharded gradients plus the root's unsharded gradients and reduce-scatter
input), and the optimiser step (parameters + gradients + moments + update temporaries).
Sharded sizes are exact: FSDP2 pads each parameter's first dimension to a multiple of W, so one
GPU holds ceil(rows/W)·cols elements of it (this matters for small models on many GPUs).

Activations (not sharded; they scale with micro-batch b and sequence length s): the per-layer
inventory of Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer
Models" (arXiv 2205.05198) §4.1, which gives s·b·h·(34 + 5·a·s/h) bytes per GPT layer, redone
for a LLaMA block as the reference code writes it: no dropout; RMSNorm computed in fp32 then
scaled by its weight; SwiGLU as silu(w1·x) * w3·x; and memory-efficient attention (LLaMA §2.4),
so the 5·a·s²·b attention-score term is absent and only a per-head log-sum-exp is kept. What
autograd keeps, per token and layer, in elements:
    compute dtype: per norm its normalised input and its output (4h for the two norms);
                   Q, K after RoPE and V (h + 2·kv, kv = n_kv_heads·head_dim), attention
                   output (h); w1·x, silu(w1·x), w3·x and their product, the w2 input (4f)
    fp32:          the two norm inputs (2h), their two rsqrt factors (2), log-sum-exp (a heads),
                   the rotation's cos table at these positions (head_dim/2)
That is 24h + 8f bytes in bf16 with kv = h, about 45·h with f = 8h/3 (Korthikanti's GPT layer:
34·h; fused norm and SwiGLU kernels would save the difference). tests/test_memory.py checks it
against what torch's autograd really saves for such a block. With full activation checkpointing
(every block recomputed, torchtitan's "full" mode) each layer keeps only its input (h in the
compute dtype; Korthikanti §4.2: 2·s·b·h bytes per layer) and one block's activations live again
during its backward.

What the tracker does not see and a GPU has (the CUDA context, the caching allocator's slack,
NCCL's own buffers) is not in the terms: it is the margin, a stated fraction of each GPU's memory
kept free (`--memory-margin`, default 10%).
"""


from __future__ import annotations

import math
import sys

from model.presets import (ModelArgs, block_params, embedding_params, loss_chunk_rows,
                           param_count)
from planners.errors import BadInput

GPUS_PER_NODE = 8
NEVER_FITS = sys.maxsize  # min_devices() when no number of GPUs can hold the unsharded part
MEMORY_MARGIN = 0.10  # of each GPU's memory: CUDA context, allocator slack, NCCL buffers
STATE_BYTES_PER_PARAM = {"params": 4, "grads": 4, "optimizer": 8}
ADAM_STEP_TEMPORARIES = 4  # fp32 copies of the largest shard in a per-parameter AdamW update,
# as the tracker counts them (foreach=False)
LSE_BYTES_PER_HEAD = 4  # attention's log-sum-exp, fp32 per head and token
LOSS_BYTES_PER_ROW = 32  # per chunk row: targets (int64), mask, log-sum-exp, target logit, scale
TERMS = ("params_bytes", "grads_bytes", "optimizer_bytes", "unsharded_bytes", "activations_bytes")


def _check(**values: float) -> None:
    for name, value in values.items():
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 1):
            raise BadInput(f"{name} must be a whole number >= 1, got {value!r}")


def check_margin(margin: float) -> float:
    if not (isinstance(margin, (int, float)) and 0 <= margin < 1):
        raise BadInput(f"--memory-margin must be a fraction in [0, 1), got {margin!r}")
    return float(margin)


def block_shapes(a: ModelArgs) -> list[tuple[int, int]]:
    """(rows, cols) of each parameter of one transformer block, as model/llama.py builds it."""
    d, f, q, kv = a.dim, a.ffn_hidden, a.n_heads * a.head_dim, a.kv_dim
    return [(q, d), (kv, d), (kv, d), (d, q),  # wq, wk, wv, wo
            (f, d), (d, f), (f, d),  # w1, w2, w3
            (d, 1), (d, 1)]  # attention_norm, ffn_norm


def root_shapes(a: ModelArgs) -> list[tuple[int, int]]:
    """The root unit: input embeddings, final norm, untied output projection."""
    return [(a.vocab_size, a.dim), (a.dim, 1), (a.vocab_size, a.dim)]


def _shard(shapes: list[tuple[int, int]], w: int) -> int:
    """Elements one rank holds: FSDP2 pads dim 0 to a multiple of the world size."""
    return sum(-(-r // w) * c for r, c in shapes)


def activation_bytes_per_token_layer(a: ModelArgs, mixed_precision: bool = True) -> float:
    """Saved activations of one transformer block, per token, without recomputation. Under
    grouped-query attention K and V are kv_dim = h * n_kv_heads / n_heads wide (a GQA-aware
    attention kernel keeps them unexpanded): 6h + 2·kv_dim + 4f instead of 8h + 4f."""
    act = 2 if mixed_precision else 4
    h, f = a.dim, a.ffn_hidden
    rope = a.head_dim // 2 if mixed_precision else a.head_dim  # fp32: cos and sin both kept
    return act * (6 * h + 2 * a.kv_dim + 4 * f) + 4 * (2 * h + 2 + rope) \
        + LSE_BYTES_PER_HEAD * a.n_heads


def loss_peak_bytes(a: ModelArgs, tokens: int, mixed_precision: bool = True) -> float:
    """The final norm and the chunked cross-entropy (model/llama.py) at their peak in the forward.

    Per token: the norm's fp32 input and rsqrt, its normalised and scaled outputs, the gradient
    for h it writes during the forward. Per chunk of r rows: the fp32 logits turned in place into
    the gradient, its compute-dtype copy; and the fp32 output-weight gradient it accumulates
    (V·d), with, in bf16, the chunk's bf16 product and its fp32 cast (V·d each). The peak is that
    last moment, or the start of a second chunk while the previous chunk's tensors are still
    bound."""
    d, v = a.dim, a.vocab_size
    r = min(loss_chunk_rows(v), tokens)
    r2 = min(r, tokens - r)
    if mixed_precision:
        per_token = 4 * d + 4 + 2 * d + 2 * d + 2 * d
        chunk = max(6 * r * v + 10 * v * d, 6 * (r + r2) * v + 4 * v * d if r2 else 0)
    else:  # fp32: the casts are no-ops, the weight gradient accumulates in place
        per_token = 4 * d + 4 + 4 * d + 4 * d + 4 * d
        chunk = 4 * (r + r2) * v + 4 * v * d
    return float(per_token * tokens + chunk + LOSS_BYTES_PER_ROW * r)


def plan_memory(args: ModelArgs, *, seq_len: int, micro_batch: int, world_size: int,
                activation_checkpointing: bool, mixed_precision: bool = True,
                grad_accumulation: bool = False) -> dict:
    """Peak bytes one GPU needs to train `args` with FSDP2 over `world_size` GPUs: the terms at
    the step's fullest moment ("peak_phase"), without the margin (see the module docstring)."""
    _check(seq_len=seq_len, micro_batch=micro_batch, world_size=world_size)
    w, L = int(world_size), args.n_layers
    c = 2 if mixed_precision else 4
    tokens = int(seq_len) * int(micro_batch)
    n = param_count(args)
    blk, root = block_shapes(args), root_shapes(args)
    s_blk, s_root = _shard(blk, w), _shard(root, w)
    sharded = L * s_blk + s_root
    p_blk, p_root = block_params(args), sum(r * cc for r, cc in root)
    g_blk, g_root = w * s_blk, w * s_root  # padded all-gather / reduce-scatter sizes
    ag = c * g_blk if w > 1 else 0  # the last all-gather's output, kept until the next one
    layer = activation_bytes_per_token_layer(args, mixed_precision) * tokens
    ckpt = c * args.dim * tokens  # a checkpointed block's input
    vd = args.vocab_size * args.dim
    params, moments = 4.0 * sharded, 8.0 * sharded
    accum = 4.0 * n if grad_accumulation else 0.0  # FSDP2's unsharded fp32 accumulated grads
    # replicated in every phase: the RoPE table (fp32 cos, sin) and the batch of token ids
    fixed = 4 * args.max_seq_len * args.head_dim + 8 * int(micro_batch) * (int(seq_len) + 1)

    def kept(i: int) -> float:  # activations of blocks 0..i while block i is differentiated
        return ((i + 1) * ckpt + layer) if activation_checkpointing else (i + 1) * layer

    phases = {"forward (loss)": dict(
        grads_bytes=accum, optimizer_bytes=moments,
        unsharded_bytes=c * p_root + ag,
        activations_bytes=L * (ckpt if activation_checkpointing else layer)
        + loss_peak_bytes(args, tokens, mixed_precision))}
    for i in sorted({L - 1, max(L - 2, 0), 0}, reverse=True):
        rs_prev = 4 * g_blk if i < L - 1 else 0  # the block above's reduce-scatter input
        phases[f"backward (block {i})"] = dict(
            grads_bytes=accum + 4.0 * s_blk * (L - 1 - i), optimizer_bytes=moments,
            unsharded_bytes=c * (p_root + p_blk) + ag + rs_prev + c * vd,  # + output-weight grad
            # + the gradients flowing through block i: into it (d) and inside SwiGLU (3f)
            activations_bytes=kept(i) + c * (args.dim + 3 * args.ffn_hidden) * tokens)
        # later in the same block: its feed-forward is differentiated, so the SwiGLU activations
        # (4f per token) are freed, w1, w2, w3's unsharded gradients (3·d·f) exist, and the
        # attention's backward forms dq, dk, dv and the output's gradient (2h + 2kv per token)
        ffn = dict(phases[f"backward (block {i})"])
        ffn["unsharded_bytes"] += c * 3 * args.dim * args.ffn_hidden
        ffn["activations_bytes"] += c * (2 * args.dim + 2 * args.kv_dim
                                         - 4 * args.ffn_hidden) * tokens
        phases[f"backward (block {i}, after its feed-forward)"] = ffn
    phases["backward (root)"] = dict(
        grads_bytes=4.0 * s_blk * L, optimizer_bytes=moments,
        unsharded_bytes=2 * c * p_root + 4 * g_root + 4 * g_blk, activations_bytes=0.0)
    largest = max(-(-r // w) * cc for r, cc in blk + root)
    phases["optimizer step"] = dict(
        grads_bytes=4.0 * sharded,
        optimizer_bytes=moments + ADAM_STEP_TEMPORARIES * 4.0 * largest,
        unsharded_bytes=0.0, activations_bytes=0.0)
    for v in phases.values():
        v["unsharded_bytes"] += fixed
    totals = {k: params + sum(v.values()) for k, v in phases.items()}
    peak = max(totals, key=totals.get)
    return {
        "params": n,
        "world_size": w,
        "seq_len": int(seq_len),
        "micro_batch": int(micro_batch),
        "activation_checkpointing": bool(activation_checkpointing),
        "mixed_precision": bool(mixed_precision),
        "grad_accumulation": bool(grad_accumulation),
        "peak_phase": peak,
        "params_bytes": params,
        **{k: float(v) for k, v in phases[peak].items()},
        "total_bytes_per_device": float(totals[peak]),
        "phases_bytes": {k: float(v) for k, v in totals.items()},
        "sharded_bytes_per_param": sum(STATE_BYTES_PER_PARAM.values()),
        "embedding_params": embedding_params(args),
    }


def usable_bytes(device_memory_bytes: float, margin: float = MEMORY_MARGIN) -> float:
    return (1 - check_margin(margin)) * device_memory_bytes


def min_devices(args: ModelArgs, *, device_memory_bytes: float, seq_len: int, micro_batch: int,
                activation_checkpointing: bool, mixed_precision: bool = True,
                margin: float = MEMORY_MARGIN, grad_accumulation: bool = False,
                max_devices: int = 1 << 20) -> int:
    """The fewest GPUs whose memory, less the margin, holds the plan; NEVER_FITS when no count up
    to `max_devices` does (activations and the gathered units do not shrink with more GPUs)."""
    if not (isinstance(device_memory_bytes, (int, float)) and device_memory_bytes > 0):
        raise BadInput(f"device memory must be > 0 bytes, got {device_memory_bytes!r}")
    cap = usable_bytes(device_memory_bytes, margin)

    def fits(w: int) -> bool:
        return plan_memory(args, seq_len=seq_len, micro_batch=micro_batch, world_size=w,
                           activation_checkpointing=activation_checkpointing,
                           mixed_precision=mixed_precision,
                           grad_accumulation=grad_accumulation)["total_bytes_per_device"] <= cap

    if fits(1):
        return 1
    lo, hi = 1, 2  # fits(lo) is False
    while not fits(hi):
        lo, hi = hi, hi * 2
        if hi > max_devices:
            return NEVER_FITS
    while hi - lo > 1:  # the sharded part falls with W: bisect between lo (no) and hi (yes)
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(mid) else (mid, hi)
    return hi


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
