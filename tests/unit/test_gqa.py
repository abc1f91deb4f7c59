"""Grouped-query attention and the released LLaMA 2 / 3 shapes: the model, the parameter and
FLOP arithmetic, the memory plan."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from model.llama import Attention, Transformer, apply_rotary_emb, precompute_freqs_cis
from model.presets import ModelArgs, flops_per_token, get_preset, param_count
from planners.memory import activation_bytes_per_token_layer, plan_memory

RELEASED = {"llama2-7b": 6_738_415_616, "llama2-13b": 13_015_864_320,
            "llama2-70b": 68_976_648_192, "llama3-8b": 8_030_261_248,
            "llama3-70b": 70_553_706_496}
UNCHANGED = {"tiny": 7_604_480, "small": 35_660_288, "1b": 1_261_529_088, "7b": 6_738_415_616,
             "13b": 13_015_864_320, "33b": 32_528_943_616, "65b": 65_285_660_672}


@pytest.mark.parametrize("name", [*RELEASED, *UNCHANGED])
def test_parameter_counts_are_exact(name):
    assert get_preset(name).params == {**RELEASED, **UNCHANGED}[name]


def test_released_shapes():
    a = get_preset("llama3-8b").args
    assert (a.ffn_hidden, a.kv_heads, a.kv_dim, a.head_dim) == (14336, 8, 1024, 128)
    assert get_preset("llama2-70b").args.ffn_hidden == 28672
    assert get_preset("llama2-7b").args.ffn_hidden == 11008


def test_model_counts_what_the_presets_count():
    a = ModelArgs(dim=128, n_layers=2, n_heads=8, n_kv_heads=2, vocab_size=300,
                  multiple_of=64, ffn_dim_multiplier=1.3)
    with torch.device("meta"):
        m = Transformer(a)
    assert m.num_params() == param_count(a)
    assert m.layers[0].attention.wk.weight.shape == (32, 128)


def _reference_attention(att: Attention, x, freqs_cis):
    """Meta's reference: K/V heads repeated (`repeat_kv`) to n_heads, then plain attention."""
    B, T, _ = x.shape
    q = att.wq(x).view(B, T, att.n_heads, att.head_dim)
    k = att.wk(x).view(B, T, att.n_kv_heads, att.head_dim)
    v = att.wv(x).view(B, T, att.n_kv_heads, att.head_dim)
    q, k = apply_rotary_emb(q, freqs_cis), apply_rotary_emb(k, freqs_cis)
    rep = att.n_heads // att.n_kv_heads
    k = k[:, :, :, None, :].expand(B, T, att.n_kv_heads, rep, att.head_dim).reshape(B, T, -1, att.head_dim)
    v = v[:, :, :, None, :].expand(B, T, att.n_kv_heads, rep, att.head_dim).reshape(B, T, -1, att.head_dim)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-1, -2) / att.head_dim ** 0.5
    scores = scores + torch.full((T, T), float("-inf")).triu(1)
    out = F.softmax(scores.float(), dim=-1).type_as(q) @ v
    return att.wo(out.transpose(1, 2).reshape(B, T, -1))


@pytest.mark.parametrize("n_kv_heads", [1, 2, 4, 8])
def test_gqa_attention_equals_the_repeated_kv_reference(n_kv_heads):
    torch.manual_seed(0)
    a = ModelArgs(dim=64, n_layers=1, n_heads=8, n_kv_heads=n_kv_heads, vocab_size=50, max_seq_len=16)
    att = Attention(a)
    x = torch.randn(2, 16, 64, requires_grad=True)
    fc = precompute_freqs_cis(a.head_dim, 16)
    out, ref = att(x, fc), _reference_attention(att, x, fc)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    g1 = torch.autograd.grad(out.square().sum(), att.wk.weight)[0]
    g2 = torch.autograd.grad(ref.square().sum(), att.wk.weight)[0]
    torch.testing.assert_close(g1, g2, atol=1e-4, rtol=1e-4)


def test_bad_kv_heads_refused():
    with pytest.raises(ValueError, match="n_kv_heads 3 must divide n_heads 8"):
        ModelArgs(dim=64, n_heads=8, n_kv_heads=3)


def test_flops_and_memory_shrink_with_gqa():
    mha = ModelArgs(dim=8192, n_layers=80, n_heads=64, multiple_of=4096, ffn_dim_multiplier=1.3)
    gqa = ModelArgs(dim=8192, n_layers=80, n_heads=64, n_kv_heads=8, multiple_of=4096,
                    ffn_dim_multiplier=1.3)
    # K and V projections: 2 * d * (d - d/8) fewer parameters per layer, 6 FLOPs each per token
    saved = 80 * 2 * 8192 * (8192 - 1024)
    assert param_count(mha) - param_count(gqa) == saved
    assert flops_per_token(mha, 4096) - flops_per_token(gqa, 4096) == 6 * saved
    # saved activations: K and V at 1/8 of the width
    assert activation_bytes_per_token_layer(mha) - activation_bytes_per_token_layer(gqa) == \
        2 * 2 * (8192 - 1024)
    m1 = plan_memory(mha, seq_len=4096, micro_batch=1, world_size=64, activation_checkpointing=False)
    m2 = plan_memory(gqa, seq_len=4096, micro_batch=1, world_size=64, activation_checkpointing=False)
    assert m2["params_bytes"] == pytest.approx(m1["params_bytes"] * param_count(gqa) / param_count(mha))
    assert m2["activations_bytes"] < m1["activations_bytes"]
    assert m2["unsharded_bytes"] < m1["unsharded_bytes"]


def test_models_lists_the_released_shapes(home, run_cli):
    rows = {r["name"]: r for r in run_cli("models", "--json").json()}
    assert {k: rows[k]["params"] for k in RELEASED} == RELEASED
    assert rows["llama3-70b"]["n_kv_heads"] == 8 and rows["7b"]["n_kv_heads"] == 32
    assert rows["llama3-8b"]["flops_per_token"] == flops_per_token(get_preset("llama3-8b").args, 8192)


def _saved_bytes_per_token(args: ModelArgs, seq_len: int = 32) -> float:
    """What autograd keeps for one of our blocks, per token (micro-batch 3 minus 1)."""
    from model.llama import TransformerBlock

    torch.manual_seed(0)
    block = TransformerBlock(0, args)
    params = {p.untyped_storage().data_ptr() for p in block.parameters()}
    fc = precompute_freqs_cis(args.head_dim, seq_len)

    def saved(batch: int) -> int:
        storages: dict[int, int] = {}

        def pack(t):
            if t.untyped_storage().data_ptr() not in params:
                storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        x = torch.randn(batch, seq_len, args.dim, requires_grad=True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            block(x, fc)
        return sum(storages.values())

    return (saved(3) - saved(1)) / (2 * seq_len)


def test_saved_kv_activations_shrink_as_the_memory_plan_says():
    """The attention kernel keeps K and V at n_kv_heads (enable_gqa, no expanded copy): the
    difference autograd measures between MHA and GQA blocks is the plan's 2 * (h - kv_dim)."""
    mha = ModelArgs(dim=256, n_layers=1, n_heads=8, vocab_size=100)
    gqa = ModelArgs(dim=256, n_layers=1, n_heads=8, n_kv_heads=2, vocab_size=100)
    measured = _saved_bytes_per_token(mha) - _saved_bytes_per_token(gqa)
    planned = activation_bytes_per_token_layer(mha, False) - activation_bytes_per_token_layer(gqa, False)
    assert planned == 4 * 2 * (256 - 64)
    assert measured == pytest.approx(planned, rel=0.02)
