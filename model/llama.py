"""LLaMA (Touvron et al. 2023, arXiv 2302.13971 §2.2) in plain PyTorch, top to bottom in the
order data flows: RMSNorm, rotary embeddings, attention, SwiGLU feed-forward, block, model.

Parameter names are those of the released weights, so an original state dict loads without
renaming. No distributed code here: the trainer applies FSDP2 to `model.layers[i]` and the root,
and `compile_blocks` applies torch.compile, from the outside (as torchtitan does).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from model.presets import ModelArgs, loss_chunk_rows

IGNORE_INDEX = -100  # targets equal to this count neither in the loss nor in its mean


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Computed in float32 and cast back, as the released code does.
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


def precompute_freqs_cis(dim: int, end: int, theta: float = 10000.0) -> torch.Tensor:
    """The released code's complex table exp(i·t·theta^(-2k/dim)), kept as its real view:
    shape (end, dim // 2, 2) holding (cos, sin). Real, so it survives meta-device init,
    `to_empty` and FSDP like any buffer, and the rotation below needs no complex kernels."""
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float64)[: dim // 2] / dim))
    angles = torch.outer(torch.arange(end, dtype=torch.float64), freqs)  # (end, dim/2)
    return torch.stack([angles.cos(), angles.sin()], dim=-1).float()


def apply_rotary_emb(x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
    """Rotate ADJACENT channel pairs (2k, 2k+1) of x (B, T, H, head_dim) by position: the complex
    product (x_2k + i·x_2k+1)·(cos + i·sin) of the released model, written with real arithmetic."""
    cos, sin = freqs_cis[..., 0], freqs_cis[..., 1]  # (T, head_dim/2)
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    xp = x.float().unflatten(-1, (-1, 2))  # (B, T, H, head_dim/2, 2)
    x0, x1 = xp[..., 0], xp[..., 1]
    out = torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1)
    return out.flatten(-2).type_as(x)


class Attention(nn.Module):
    """Multi-head attention; with n_kv_heads < n_heads, grouped-query attention (Ainslie et al.
    2023): each K/V head serves n_heads / n_kv_heads consecutive query heads, as in Meta's
    reference `repeat_kv`."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.n_heads, self.n_kv_heads = args.n_heads, args.kv_heads
        self.head_dim = args.head_dim
        self.wq = nn.Linear(args.dim, args.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(args.dim, self.n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(args.dim, self.n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(args.n_heads * self.head_dim, args.dim, bias=False)

    def forward(self, x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim)
        k = self.wk(x).view(B, T, self.n_kv_heads, self.head_dim)
        v = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim)
        q, k = apply_rotary_emb(q, freqs_cis), apply_rotary_emb(k, freqs_cis)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, heads, T, head_dim)
        # Memory-efficient causal attention (§2.4): no stored attention matrix. enable_gqa
        # lets the kernel share each K/V head across its group without copying it.
        gqa = self.n_kv_heads != self.n_heads
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        out = out.transpose(1, 2).reshape(B, T, -1)  # (B, T, dim)
        return self.wo(out)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)  # gate
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)  # down
        self.w3 = nn.Linear(dim, hidden_dim, bias=False)  # up

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))  # SwiGLU


class TransformerBlock(nn.Module):
    def __init__(self, layer_id: int, args: ModelArgs):
        super().__init__()
        self.layer_id = layer_id
        self.attention = Attention(args)
        self.feed_forward = FeedForward(args.dim, args.ffn_hidden)
        self.attention_norm = RMSNorm(args.dim, eps=args.norm_eps)
        self.ffn_norm = RMSNorm(args.dim, eps=args.norm_eps)

    def forward(self, x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), freqs_cis)  # pre-normalisation
        return h + self.feed_forward(self.ffn_norm(h))


class Transformer(nn.Module):
    def __init__(self, args: ModelArgs, activation_checkpointing: bool = False):
        super().__init__()
        self.args = args
        self.activation_checkpointing = activation_checkpointing
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
        self.layers = nn.ModuleList(TransformerBlock(i, args) for i in range(args.n_layers))
        self.norm = RMSNorm(args.dim, eps=args.norm_eps)
        self.output = nn.Linear(args.dim, args.vocab_size, bias=False)  # untied from the input
        # Not in the state dict (the released weights have none); rebuilt by init_weights.
        self.register_buffer("freqs_cis", self._freqs_cis(), persistent=False)
        if self.output.weight.device.type != "meta":
            self.init_weights()

    def _freqs_cis(self) -> torch.Tensor:
        a = self.args
        return precompute_freqs_cis(a.head_dim, a.max_seq_len, a.rope_theta)

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (B, T) -> logits (B, T, vocab); with targets (B, T), the mean cross-entropy
        over targets != IGNORE_INDEX instead, computed without holding all the logits."""
        B, T = tokens.shape
        if T > self.args.max_seq_len:
            raise ValueError(f"sequence length {T} exceeds max_seq_len {self.args.max_seq_len}")
        h = self.tok_embeddings(tokens)  # (B, T, dim)
        freqs_cis = self.freqs_cis[:T]
        for layer in self.layers:
            if self.activation_checkpointing and torch.is_grad_enabled():
                h = checkpoint(layer, h, freqs_cis, use_reentrant=False)
            else:
                h = layer(h, freqs_cis)
        h = self.norm(h)
        if targets is None:
            return self.output(h)  # (B, T, vocab)
        return linear_cross_entropy(h.flatten(0, 1), self.output.weight, targets.reshape(-1))

    @torch.no_grad()
    def init_weights(self, seed: int | None = None) -> None:
        """Re-initialise every parameter and buffer in place (works after `to_empty` from meta).
        Linears and the embedding: normal(0, 0.02); the two projections that write into the
        residual stream (wo, w2) scaled by 1/sqrt(2·n_layers) as GPT-2 and torchtitan do; RMSNorm
        weights 1. Deterministic for a seed (the global RNG is left untouched then)."""
        std = 0.02
        residual_std = std / math.sqrt(2 * self.args.n_layers)
        devices = [p.device for p in self.parameters() if p.device.type == "cuda"]
        with torch.random.fork_rng(devices=devices[:1], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            nn.init.normal_(self.tok_embeddings.weight, std=std)
            for layer in self.layers:
                for lin in (layer.attention.wq, layer.attention.wk, layer.attention.wv,
                            layer.feed_forward.w1, layer.feed_forward.w3):
                    nn.init.normal_(lin.weight, std=std)
                for lin in (layer.attention.wo, layer.feed_forward.w2):
                    nn.init.normal_(lin.weight, std=residual_std)
                nn.init.ones_(layer.attention_norm.weight)
                nn.init.ones_(layer.ffn_norm.weight)
            nn.init.ones_(self.norm.weight)
            nn.init.normal_(self.output.weight, std=std)
        self.freqs_cis = self._freqs_cis().to(self.freqs_cis.device)

    def optimizer_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups as nanoGPT: decay the 2-D weights (matmuls, embedding), not the norms."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count (numel of every parameter); `non_embedding` drops the input table,
        which is a lookup, not a matmul (the untied output projection stays)."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.tok_embeddings.weight.numel() if non_embedding else n


def compile_blocks(model: Transformer, **compile_kwargs) -> Transformer:
    """torch.compile each block in place (inductor: fuses RMSNorm, RoPE and SwiGLU's elementwise
    work). Module names and the state dict are unchanged, so FSDP2 and checkpoints are unaffected.
    See bench/results/model_cpu.md for what it buys on CPU."""
    for layer in model.layers:
        layer.compile(**compile_kwargs)
    return model


# --- the loss: output projection and cross-entropy, chunked so the logits never all exist ---

class _LinearCrossEntropy(torch.autograd.Function):
    """mean CE(h @ w.T, targets). The gradients (softmax - onehot) are formed chunk by chunk
    during the forward, so only one chunk of logits is ever alive (as Liger's fused linear
    cross-entropy); backward only scales them. Same FLOPs as the plain path."""

    @staticmethod
    def forward(ctx, h, weight, targets):  # h (N, dim), weight (V, dim), targets (N,)
        n_valid = (targets != IGNORE_INDEX).sum().clamp(min=1)
        need_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        grad_h = torch.empty_like(h) if need_grad else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_grad else None
        loss = torch.zeros((), dtype=torch.float32, device=h.device)
        step = loss_chunk_rows(weight.shape[0])
        for s in range(0, h.shape[0], step):
            hc, tc = h[s:s + step], targets[s:s + step]
            logits = (hc @ weight.t()).float()  # (n, V)
            valid = tc != IGNORE_INDEX
            tc = tc.masked_fill(~valid, 0)
            lse = torch.logsumexp(logits, dim=-1)
            target_logit = logits.gather(1, tc[:, None]).squeeze(1)
            loss += ((lse - target_logit) * valid).sum()
            if need_grad:
                probs = logits.sub_(lse[:, None]).exp_()  # softmax, in place
                probs.scatter_add_(1, tc[:, None], -valid[:, None].to(probs.dtype))
                probs.mul_((valid.to(probs.dtype) / n_valid)[:, None])
                g = probs.to(h.dtype)
                grad_h[s:s + step] = g @ weight
                if hc.dtype == torch.float32:
                    grad_w.addmm_(g.t(), hc)
                else:  # bf16 matmul (float32 accumulation inside), summed over chunks in float32
                    grad_w += (g.t() @ hc).float()
        if need_grad:
            ctx.save_for_backward(grad_h, grad_w.to(weight.dtype))
        return loss / n_valid

    @staticmethod
    def backward(ctx, grad_loss):
        grad_h, grad_w = ctx.saved_tensors
        return grad_h * grad_loss, grad_w * grad_loss, None


def linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return _LinearCrossEntropy.apply(h, weight, targets)
