"""Model presets in one registry, and the parameter / FLOP arithmetic that goes with them.

Torch-free on purpose: the planner and `cli.py models` use it without building a model.
LLaMA sizes are Table 2 of Touvron et al. 2023 (arXiv 2302.13971).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace


@dataclass(frozen=True)
class ModelArgs:
    dim: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    vocab_size: int = 32000
    multiple_of: int = 256  # SwiGLU hidden size, a multiple of a large power of two
    norm_eps: float = 1e-6
    max_seq_len: int = 2048
    rope_theta: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def ffn_hidden(self) -> int:
        """2/3 * 4d, rounded *up* to a multiple of `multiple_of` (7B: 11008)."""
        hidden = int(2 * (4 * self.dim) / 3)
        return self.multiple_of * ((hidden + self.multiple_of - 1) // self.multiple_of)


@dataclass(frozen=True)
class Preset:
    name: str
    args: ModelArgs
    lr: float  # peak learning rate
    batch_tokens: int  # global batch, in tokens
    train_tokens: int  # tokens of the full recipe
    seq_len: int = 2048
    warmup_steps: int = 2000
    llama: bool = False  # one of the paper's Table 2 models
    note: str = ""
    aliases: tuple[str, ...] = field(default=())

    @property
    def params(self) -> int:
        return param_count(self.args)

    def as_dict(self) -> dict:
        a = self.args
        return {
            "name": self.name,
            "params": self.params,
            "non_embedding_params": self.params - embedding_params(a),
            "dim": a.dim,
            "n_layers": a.n_layers,
            "n_heads": a.n_heads,
            "ffn_hidden": a.ffn_hidden,
            "vocab_size": a.vocab_size,
            "seq_len": self.seq_len,
            "lr": self.lr,
            "batch_tokens": self.batch_tokens,
            "train_tokens": self.train_tokens,
            "warmup_steps": self.warmup_steps,
            "flops_per_token": flops_per_token(a, self.seq_len),
            "llama": self.llama,
        }


def param_count(a: ModelArgs) -> int:
    """Exact count: L*(4d^2 + 3*d*h + 2d) + 2*V*d + d (untied output, RMSNorm weights)."""
    d, h, L, V = a.dim, a.ffn_hidden, a.n_layers, a.vocab_size
    return L * (4 * d * d + 3 * d * h + 2 * d) + 2 * V * d + d


def loss_chunk_rows(vocab_size: int) -> int:
    """Rows of logits the chunked cross-entropy (model/llama.py) forms at once: about 128 MB of
    float32 logits per chunk. Here, torch-free, because the memory plan counts them too."""
    return max(256, 2**25 // vocab_size)


def embedding_params(a: ModelArgs) -> int:
    """The input embedding table: a lookup, no matmul FLOPs (the output projection does count)."""
    return a.vocab_size * a.dim


def flops_per_token(a: ModelArgs, seq_len: int) -> int:
    """Training FLOPs per token as torchtitan counts them for MFU:
    6*(N - N_embedding) + 12*L*d*T (forward + backward, attention scores at full T, no causal
    discount). PaLM appendix B and torchtitan's `get_num_flop_per_token`."""
    return 6 * (param_count(a) - embedding_params(a)) + 12 * a.n_layers * a.dim * seq_len


_M = 1_000_000
PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        # Trains for real on a 2-core CPU: a few million parameters, well under a second a step.
        Preset("tiny", ModelArgs(dim=256, n_layers=4, n_heads=4, vocab_size=8192, max_seq_len=256),
               lr=1e-3, batch_tokens=8 * 256, train_tokens=50 * _M, seq_len=256, warmup_steps=20,
               note="CPU demo and tests"),
        Preset("small", ModelArgs(dim=512, n_layers=8, n_heads=8, vocab_size=8192, max_seq_len=512),
               lr=6e-4, batch_tokens=16 * 512, train_tokens=500 * _M, seq_len=512, warmup_steps=100,
               note="tens of millions of parameters; CPU benchmarks and sweeps"),
        # Sized for one 80 GB GPU (TinyLlama-like width and depth, LLaMA's vocabulary).
        Preset("1b", ModelArgs(dim=2048, n_layers=22, n_heads=16, vocab_size=32000),
               lr=4e-4, batch_tokens=1024 * 2048, train_tokens=25_000 * _M, note="one 80 GB GPU"),
        Preset("7b", ModelArgs(dim=4096, n_layers=32, n_heads=32), lr=3.0e-4,
               batch_tokens=4 * 2**20, train_tokens=1_000_000 * _M, llama=True, aliases=("llama-7b",)),
        Preset("13b", ModelArgs(dim=5120, n_layers=40, n_heads=40), lr=3.0e-4,
               batch_tokens=4 * 2**20, train_tokens=1_000_000 * _M, llama=True, aliases=("llama-13b",)),
        Preset("33b", ModelArgs(dim=6656, n_layers=60, n_heads=52), lr=1.5e-4,
               batch_tokens=4 * 2**20, train_tokens=1_400_000 * _M, llama=True, aliases=("llama-33b",)),
        Preset("65b", ModelArgs(dim=8192, n_layers=80, n_heads=64), lr=1.5e-4,
               batch_tokens=4 * 2**20, train_tokens=1_400_000 * _M, llama=True, aliases=("llama-65b",)),
    ]
}
_ALIASES = {alias: p.name for p in PRESETS.values() for alias in p.aliases}


class UnknownPreset(LookupError):
    pass


def get_preset(name: str) -> Preset:
    """Look a preset up by name or alias (case-insensitive: `7B`, `llama-7b`)."""
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in PRESETS:
        raise UnknownPreset(
            f"unknown preset {name!r}; known presets: {', '.join(PRESETS)} (also llama-7b ...)"
        )
    return PRESETS[key]


def with_overrides(preset: Preset, **changes) -> Preset:
    return replace(preset, **changes)


def args_dict(a: ModelArgs) -> dict:
    return asdict(a)
