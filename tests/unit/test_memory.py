"""The memory plan: the activation inventory against what torch's autograd really saves for a
LLaMA block, and the FSDP arithmetic around it."""

from __future__ import annotations

import pytest

from model.presets import ModelArgs, get_preset, param_count
from planners.errors import BadInput
from planners.memory import (NEVER_FITS, activation_bytes_per_token_layer, llama_shape,
                             min_devices, nodes_for, plan_memory)


def _saved_bytes_per_token(args: ModelArgs, dtype_name: str, seq_len: int = 64) -> float:
    """Bytes autograd keeps for one LLaMA block (written as the reference code writes it:
    RMSNorm in fp32 then weight, complex RoPE, memory-efficient causal attention, SwiGLU),
    per token: the difference between micro-batch 3 and 1 removes weights and RoPE tables."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    dtype = getattr(torch, dtype_name)

    class RMSNorm(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(d))

        def forward(self, x):
            xf = x.float()
            return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6)).type_as(x) \
                * self.weight

    def rope(x, fc):
        xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
        return torch.view_as_real(xc * fc[None, :, None, :]).flatten(3).type_as(x)

    class Block(nn.Module):
        def __init__(self, a: ModelArgs):
            super().__init__()
            d, f = a.dim, a.ffn_hidden
            self.nh, self.hd = a.n_heads, a.head_dim
            self.wq, self.wk, self.wv, self.wo = (nn.Linear(d, d, bias=False) for _ in range(4))
            self.w1, self.w3 = nn.Linear(d, f, bias=False), nn.Linear(d, f, bias=False)
            self.w2 = nn.Linear(f, d, bias=False)
            self.attention_norm, self.ffn_norm = RMSNorm(d), RMSNorm(d)

        def forward(self, x, fc):
            B, T, _ = x.shape
            y = self.attention_norm(x)
            q, k, v = (w(y).view(B, T, self.nh, self.hd) for w in (self.wq, self.wk, self.wv))
            q, k = rope(q, fc), rope(k, fc)
            o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                               v.transpose(1, 2), is_causal=True)
            h = x + self.wo(o.transpose(1, 2).contiguous().view(B, T, -1))
            z = self.ffn_norm(h)
            return h + self.w2(F.silu(self.w1(z)) * self.w3(z))

    torch.manual_seed(0)
    block = Block(args).to(dtype)
    params = {p.untyped_storage().data_ptr() for p in block.parameters()}
    inv = 1.0 / (10000.0 ** (torch.arange(0, args.head_dim, 2).float() / args.head_dim))
    fc = torch.polar(torch.ones(seq_len, args.head_dim // 2),
                     torch.outer(torch.arange(seq_len).float(), inv))

    def saved(batch: int) -> int:
        storages: dict[int, int] = {}

        def pack(t):
            st = t.untyped_storage()
            if st.data_ptr() not in params:
                storages[st.data_ptr()] = st.nbytes()
            return t

        x = torch.randn(batch, seq_len, args.dim, dtype=dtype, requires_grad=True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = block(x, fc)
        del out
        return sum(storages.values())

    return (saved(3) - saved(1)) / (2 * seq_len)


@pytest.mark.parametrize("dtype_name,mixed", [("bfloat16", True), ("float32", False)])
def test_activation_inventory_matches_autograd(dtype_name, mixed):
    for args in (ModelArgs(dim=256, n_layers=1, n_heads=4, vocab_size=1000),
                 ModelArgs(dim=384, n_layers=1, n_heads=6, vocab_size=1000)):
        measured = _saved_bytes_per_token(args, dtype_name)
        assert activation_bytes_per_token_layer(args, mixed) == pytest.approx(measured, rel=0.02)


def test_sharded_state_is_16_bytes_per_param_over_world_size():
    """At the optimiser step: fp32 shard, fp32 gradient shard and two fp32 moments (16 bytes per
    parameter over W; 7B's dimensions divide by 8 and 64, so no padding), plus the update's
    temporaries of the largest shard (the 32000 x 4096 embedding)."""
    a = get_preset("7b").args
    n = param_count(a)
    for w in (1, 8, 64):
        m = plan_memory(a, seq_len=2048, micro_batch=1, world_size=w, activation_checkpointing=True)
        assert m["params_bytes"] == pytest.approx(4 * n / w)
        assert m["phases_bytes"]["optimizer step"] == pytest.approx(
            16 * n / w + 16 * 32000 * 4096 / w + 4 * 2048 * 128 + 8 * 2049)
        assert m["total_bytes_per_device"] == max(m["phases_bytes"].values())
        assert m["total_bytes_per_device"] == pytest.approx(
            m["params_bytes"] + m["grads_bytes"] + m["optimizer_bytes"] + m["unsharded_bytes"]
            + m["activations_bytes"])


def test_activations_scale_and_checkpointing_saves():
    a = get_preset("13b").args
    kw = dict(world_size=8, mixed_precision=True)
    plan = lambda **k: plan_memory(a, **{**kw, **k})["phases_bytes"]["forward (loss)"]  # noqa
    full = plan(seq_len=2048, micro_batch=2, activation_checkpointing=False)
    half = plan(seq_len=2048, micro_batch=1, activation_checkpointing=False)
    quarter = plan(seq_len=1024, micro_batch=1, activation_checkpointing=False)
    short = plan(seq_len=1024, micro_batch=2, activation_checkpointing=False)
    # linear in tokens (b·s) once the loss's chunk is full: equal steps for equal token steps
    assert full - half == pytest.approx(2 * (half - quarter), rel=0.01)
    assert short == pytest.approx(half, rel=1e-6)
    ckpt = plan_memory(a, seq_len=2048, micro_batch=2, activation_checkpointing=True, **kw)
    nockpt = plan_memory(a, seq_len=2048, micro_batch=2, activation_checkpointing=False, **kw)
    assert ckpt["activations_bytes"] < nockpt["activations_bytes"] / 5
    fp32 = plan_memory(a, seq_len=2048, micro_batch=2, activation_checkpointing=False,
                       world_size=8, mixed_precision=False)
    assert fp32["activations_bytes"] > 1.5 * nockpt["activations_bytes"]


@pytest.mark.parametrize("preset,ac", [("1b", False), ("7b", True), ("7b", False),
                                       ("65b", True), ("65b", False)])
def test_min_devices_is_the_least_that_fits(preset, ac):
    a = get_preset(preset).args
    cap = 0.9 * 80e9  # the default margin: 10% of the GPU's memory
    w = min_devices(a, device_memory_bytes=80e9, seq_len=2048, micro_batch=1,
                    activation_checkpointing=ac)
    fits = lambda k: plan_memory(a, seq_len=2048, micro_batch=1, world_size=k,  # noqa: E731
                                 activation_checkpointing=ac)["total_bytes_per_device"] <= cap
    assert fits(w) and (w == 1 or not fits(w - 1))
    assert nodes_for(w) == -(-w // 8)


def test_never_fits_and_nonsense():
    a = get_preset("65b").args
    assert min_devices(a, device_memory_bytes=16e9, seq_len=32768, micro_batch=8,
                       activation_checkpointing=False) == NEVER_FITS
    for bad in (dict(seq_len=0), dict(micro_batch=-1)):
        kw = {**dict(seq_len=2048, micro_batch=1), **bad}
        with pytest.raises(BadInput):
            plan_memory(a, world_size=8, activation_checkpointing=True, **kw)
    with pytest.raises(BadInput):
        min_devices(a, device_memory_bytes=0, seq_len=2048, micro_batch=1,
                    activation_checkpointing=True)


def test_llama_shape_recovers_the_presets():
    for name in ("7b", "13b"):
        p = get_preset(name)
        s = llama_shape(p.params)
        assert (s.dim, s.n_layers) == (p.args.dim, p.args.n_layers)
    s = llama_shape(3e9)
    assert abs(param_count(s) / 3e9 - 1) < 0.03 and s.dim % 128 == 0
