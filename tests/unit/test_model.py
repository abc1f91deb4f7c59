"""model/llama.py: sizes, shapes, causality, RoPE, state dicts, training, initialisation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from model.llama import (IGNORE_INDEX, Transformer, apply_rotary_emb, compile_blocks,
                         linear_cross_entropy, precompute_freqs_cis)
from model.presets import ModelArgs, get_preset, param_count

# A model small enough to train in a second: 2 layers, 4 heads of 16, FFN 256, vocab 97.
ARGS = ModelArgs(dim=64, n_layers=2, n_heads=4, vocab_size=97, multiple_of=64, max_seq_len=32)

# llama.md: exact counts of the released architecture (vocab 32000, untied output).
LLAMA_PARAMS = {"7b": 6_738_415_616, "13b": 13_015_864_320,
                "33b": 32_528_943_616, "65b": 65_285_660_672}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are too small to gain from threads; on a shared 2-core machine a second
    OpenMP thread only waits (the overfit test runs 5x slower with two under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tokens(batch=2, seq=16, seed=0, vocab=ARGS.vocab_size):
    return torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", sorted(LLAMA_PARAMS))
def test_llama_parameter_counts_exact_on_meta(name):
    args = get_preset(name).args
    with torch.device("meta"):
        model = Transformer(args)
    assert model.num_params() == param_count(args) == LLAMA_PARAMS[name]
    assert model.num_params(non_embedding=True) == LLAMA_PARAMS[name] - args.vocab_size * args.dim
    assert model.layers[0].feed_forward.w1.weight.shape == (args.ffn_hidden, args.dim)


@pytest.mark.parametrize("name", ["tiny", "small", "1b"])
def test_project_preset_counts_match_presets(name):
    args = get_preset(name).args
    with torch.device("meta"):
        model = Transformer(args)
    assert model.num_params() == param_count(args)
    assert isinstance(model.layers, torch.nn.ModuleList) and len(model.layers) == args.n_layers


def test_forward_shapes_and_loss():
    model = Transformer(ARGS)
    x = tokens(3, 20)
    logits = model(x)
    assert logits.shape == (3, 20, ARGS.vocab_size) and logits.dtype == torch.float32
    loss = model(x, tokens(3, 20, seed=1))
    assert loss.shape == () and math.isfinite(loss.item())
    # Freshly initialised: close to uniform over the vocabulary.
    assert abs(loss.item() - math.log(ARGS.vocab_size)) < 0.3
    with pytest.raises(ValueError, match="max_seq_len"):
        model(tokens(1, ARGS.max_seq_len + 1))


def test_causal_later_tokens_never_change_earlier_logits():
    model = Transformer(ARGS).eval()
    x = tokens(2, 24)
    base = model(x)
    for k in (1, 10, 23):
        changed = x.clone()
        changed[:, k:] = (changed[:, k:] + 1 + torch.arange(24 - k)) % ARGS.vocab_size
        out = model(changed)
        torch.testing.assert_close(out[:, :k], base[:, :k], rtol=0, atol=1e-5)
        assert not torch.allclose(out[:, k:], base[:, k:], atol=1e-3)  # the change does reach on


def test_rope_scores_depend_only_on_offset():
    head_dim, T = 16, 40
    freqs = precompute_freqs_cis(head_dim, T)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(head_dim, generator=g), torch.randn(head_dim, generator=g)
    qs = apply_rotary_emb(q.expand(1, T, 1, head_dim).contiguous(), freqs)[0, :, 0]  # (T, hd)
    ks = apply_rotary_emb(k.expand(1, T, 1, head_dim).contiguous(), freqs)[0, :, 0]
    scores = qs @ ks.T  # scores[m, n] = <R_m q, R_n k>
    for offset in (0, 3, 17):
        diag = torch.diagonal(scores, offset=-offset)  # all pairs with m - n == offset
        torch.testing.assert_close(diag, diag[:1].expand_as(diag), rtol=0, atol=1e-4)
    assert not torch.allclose(scores[5, 5], scores[5, 2], atol=1e-3)  # and it does depend on it
    # Norms are preserved: a rotation.
    torch.testing.assert_close(qs.norm(dim=-1), q.norm().expand(T), rtol=1e-5, atol=1e-5)


def test_rope_equals_released_complex_formula():
    """The released model.py: view adjacent pairs (2i, 2i+1) as complex, multiply by
    polar(1, t * theta^(-2i/d))."""
    B, T, H, hd, theta = 2, 12, 3, 8, 10000.0
    x = torch.randn(B, T, H, hd, generator=torch.Generator().manual_seed(1))
    freqs = 1.0 / (theta ** (torch.arange(0, hd, 2)[: hd // 2].float() / hd))
    freqs_cis = torch.polar(torch.ones(T, hd // 2), torch.outer(torch.arange(T).float(), freqs))
    x_ = torch.view_as_complex(x.reshape(B, T, H, -1, 2))
    expected = torch.view_as_real(x_ * freqs_cis[None, :, None, :]).flatten(3)
    got = apply_rotary_emb(x, precompute_freqs_cis(hd, T, theta))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # Not the rotate-half convention (pairs (i, i + d/2)): that would be a different result.
    cos, sin = (torch.cat([t, t], -1)[None, :, None, :] for t in (freqs_cis.real, freqs_cis.imag))
    rotate_half = torch.cat([-x[..., hd // 2:], x[..., : hd // 2]], -1)
    assert not torch.allclose(got[:, 1:], (x * cos + rotate_half * sin)[:, 1:], atol=1e-3)


def released_llama_keys(n_layers: int) -> set[str]:
    """Key names of an original LLaMA checkpoint (consolidated.*.pth), written out by hand."""
    keys = {"tok_embeddings.weight", "norm.weight", "output.weight"}
    for i in range(n_layers):
        keys |= {f"layers.{i}.attention.{w}.weight" for w in ("wq", "wk", "wv", "wo")}
        keys |= {f"layers.{i}.feed_forward.{w}.weight" for w in ("w1", "w2", "w3")}
        keys |= {f"layers.{i}.attention_norm.weight", f"layers.{i}.ffn_norm.weight"}
    return keys


def test_state_dict_round_trip_and_released_names(tmp_path):
    model = Transformer(ARGS)
    sd = model.state_dict()
    assert set(sd) == released_llama_keys(ARGS.n_layers)  # freqs_cis is not persistent
    torch.save(sd, tmp_path / "model.pt")
    other = Transformer(ARGS)
    other.init_weights(seed=123)
    x = tokens()
    assert not torch.allclose(other(x), model(x))
    other.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True), strict=True)
    torch.testing.assert_close(other(x), model(x), rtol=0, atol=0)
    # A dict keyed as the released weights, built without our model, loads without renaming.
    shapes = {k: v.shape for k, v in sd.items()}
    released = {k: torch.randn(shapes[k]) for k in released_llama_keys(ARGS.n_layers)}
    result = other.load_state_dict(released, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    torch.testing.assert_close(other.layers[1].attention.wk.weight,
                               released["layers.1.attention.wk.weight"])


def test_tiny_model_overfits_a_small_batch():
    torch.manual_seed(0)
    model = Transformer(ARGS)
    model.init_weights(seed=0)
    x, y = tokens(4, 32, seed=3), tokens(4, 32, seed=4)
    opt = torch.optim.AdamW(model.optimizer_groups(0.0), lr=3e-3)
    first = None
    for _ in range(150):
        opt.zero_grad()
        loss = model(x, y)
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert first > 4.0 and loss.item() < 0.05, (first, loss.item())


def test_init_statistics():
    args = ModelArgs(dim=256, n_layers=4, n_heads=4, vocab_size=1024, max_seq_len=64)
    model = Transformer(args)
    model.init_weights(seed=7)
    residual = 0.02 / math.sqrt(2 * args.n_layers)
    for name, p in model.named_parameters():
        if p.dim() == 1:
            assert torch.equal(p, torch.ones_like(p)), name
            continue
        std = residual if name.endswith(("wo.weight", "w2.weight")) else 0.02
        assert abs(p.std().item() - std) < 0.03 * std, (name, p.std().item(), std)
        assert abs(p.mean().item()) < 4 * std / math.sqrt(p.numel()), (name, p.mean().item())


def test_init_deterministic_for_a_seed_and_after_meta():
    a, b = Transformer(ARGS), Transformer(ARGS)
    state = torch.get_rng_state()
    a.init_weights(seed=5)
    b.init_weights(seed=5)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left alone
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), n
    b.init_weights(seed=6)
    assert not torch.equal(a.output.weight, b.output.weight)
    # Meta-device build, materialised with to_empty, then initialised: same model, same buffer.
    with torch.device("meta"):
        m = Transformer(ARGS)
    m.to_empty(device="cpu")
    m.init_weights(seed=5)
    for (n, p), q in zip(a.named_parameters(), m.parameters()):
        assert torch.equal(p, q), n
    assert torch.equal(m.freqs_cis, precompute_freqs_cis(ARGS.head_dim, ARGS.max_seq_len))
    x = tokens()
    torch.testing.assert_close(m(x), a(x), rtol=0, atol=0)


def grads(model, x, y):
    model.zero_grad()
    model(x, y).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def test_activation_checkpointing_same_gradients():
    plain = Transformer(ARGS)
    ac = Transformer(ARGS, activation_checkpointing=True)
    ac.load_state_dict(plain.state_dict())
    x, y = tokens(seed=8), tokens(seed=9)
    g_plain, g_ac = grads(plain, x, y), grads(ac, x, y)
    for n in g_plain:
        torch.testing.assert_close(g_ac[n], g_plain[n], rtol=1e-5, atol=1e-7)


def test_chunked_loss_equals_cross_entropy_of_logits():
    model = Transformer(ARGS)
    x, y = tokens(seed=10), tokens(seed=11)
    y[0, :5] = IGNORE_INDEX
    g_fused = grads(model, x, y)
    loss_fused = model(x, y)
    model.zero_grad()
    loss_ref = F.cross_entropy(model(x).flatten(0, 1), y.flatten(), ignore_index=IGNORE_INDEX)
    loss_ref.backward()
    torch.testing.assert_close(loss_fused, loss_ref)
    for n, p in model.named_parameters():
        torch.testing.assert_close(g_fused[n], p.grad, rtol=1e-4, atol=1e-7)
    # Several chunks (rows > chunk size) give the same as one.
    h = torch.randn(3000, 8, requires_grad=True)
    w = torch.randn(2**14, 8, requires_grad=True)  # 2**25 / 2**14 = 2048 rows per chunk
    t = torch.randint(0, 2**14, (3000,))
    linear_cross_entropy(h, w, t).backward()
    ref_h, ref_w = h.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    F.cross_entropy(ref_h @ ref_w.T, t).backward()
    torch.testing.assert_close(h.grad, ref_h.grad, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(w.grad, ref_w.grad, rtol=1e-4, atol=1e-7)


def test_optimizer_groups_decay_only_2d_weights():
    model = Transformer(ARGS)
    decay, no_decay = model.optimizer_groups(0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    assert len(no_decay["params"]) == 2 * ARGS.n_layers + 1  # the RMSNorm weights
    assert sum(p.numel() for g in (decay, no_decay) for p in g["params"]) == model.num_params()


@pytest.mark.slow
def test_compile_blocks_matches_eager():
    eager = Transformer(ARGS)
    compiled = Transformer(ARGS)
    compiled.load_state_dict(eager.state_dict())
    compile_blocks(compiled)
    assert set(compiled.state_dict()) == set(eager.state_dict())
    x, y = tokens(seed=12), tokens(seed=13)
    g_e, g_c = grads(eager, x, y), grads(compiled, x, y)
    for n in g_e:
        torch.testing.assert_close(g_c[n], g_e[n], rtol=1e-4, atol=1e-6)
