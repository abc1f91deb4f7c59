"""Model presets in one registry, and the parameter / FLOP arithmetic that goes with them.

Torch-free on purpose: the planner and `cli.py models` use it without building a model.
LLaMA sizes are Table 2 of Touvron et al. 2023 (arXiv 2302.13971); the LLaMA 2 and LLaMA 3
shapes are those of Meta's released `params.json` files (Touvron et al. 2023b, arXiv
2307.09288; Llama Team 2024, arXiv 2407.21783), grouped-query attention included.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace


@dataclass(frozen=True)
class ModelArgs:
    """The fields of Meta's `params.json` (plus the context length)."""

    dim: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    vocab_size: int = 32000
    multiple_of: int = 256  # SwiGLU hidden size, a multiple of a large power of two
    norm_eps: float = 1e-6
    max_seq_len: int = 2048
    rope_theta: float = 10000.0
    n_kv_heads: int | None = None  # grouped-query attention (Ainslie et al. 2023); None: n_heads
    ffn_dim_multiplier: float | None = None  # LLaMA 2 70B and LLaMA 3: 1.3

    def __post_init__(self):
        kv = self.kv_heads
        if kv < 1 or self.n_heads % kv:
            raise ValueError(f"n_kv_heads {kv} must divide n_heads {self.n_heads}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def kv_dim(self) -> int:
        """Width of the K and V projections: n_kv_heads * head_dim (= dim without GQA)."""
        return self.kv_heads * self.head_dim

    @property
    def ffn_hidden(self) -> int:
        """2/3 * 4d, times ffn_dim_multiplier if any, rounded *up* to a multiple of
        `multiple_of` (7B: 11008; LLaMA 3 8B: 14336), as Meta's reference FeedForward does."""
        hidden = int(2 * (4 * self.dim) / 3)
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
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
            "n_kv_heads": a.kv_heads,
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


def block_params(a: ModelArgs) -> int:
    """One transformer block: wq, wo (d x d), wk, wv (kv_dim x d, smaller under GQA by
    n_heads / n_kv_heads), SwiGLU's three d x h matrices, two RMSNorm weights."""
    d, h, kv = a.dim, a.ffn_hidden, a.kv_dim
    return 2 * d * d + 2 * d * kv + 3 * d * h + 2 * d


def param_count(a: ModelArgs) -> int:
    """Exact count: L*block + 2*V*d + d (untied output, final RMSNorm); without GQA that is
    L*(4d^2 + 3*d*h + 2d) + 2*V*d + d."""
    return a.n_layers * block_params(a) + 2 * a.vocab_size * a.dim + a.dim


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
    discount). PaLM appendix B and torchtitan's `get_num_flop_per_token`. Under GQA the smaller
    K/V projections are in N; the scores and the weighted sum still run for every query head
    (n_heads * head_dim = d), so the attention term keeps d."""
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
        # The released LLaMA 2 and 3 shapes (Meta's params.json; context, tokens and peak lr
        # from the papers). 70B models and LLaMA 3 use grouped-query attention with 8 KV heads.
        Preset("llama2-7b", ModelArgs(dim=4096, n_layers=32, n_heads=32, norm_eps=1e-5,
                                      max_seq_len=4096),
               lr=3.0e-4, batch_tokens=4 * 2**20, train_tokens=2_000_000 * _M, seq_len=4096,
               note="LLaMA 2 7B"),
        Preset("llama2-13b", ModelArgs(dim=5120, n_layers=40, n_heads=40, norm_eps=1e-5,
                                       max_seq_len=4096),
               lr=3.0e-4, batch_tokens=4 * 2**20, train_tokens=2_000_000 * _M, seq_len=4096,
               note="LLaMA 2 13B"),
        Preset("llama2-70b", ModelArgs(dim=8192, n_layers=80, n_heads=64, n_kv_heads=8,
                                       multiple_of=4096, ffn_dim_multiplier=1.3, norm_eps=1e-5,
                                       max_seq_len=4096),
               lr=1.5e-4, batch_tokens=4 * 2**20, train_tokens=2_000_000 * _M, seq_len=4096,
               note="LLaMA 2 70B (GQA, 8 KV heads)"),
        Preset("llama3-8b", ModelArgs(dim=4096, n_layers=32, n_heads=32, n_kv_heads=8,
                                      vocab_size=128256, multiple_of=1024, ffn_dim_multiplier=1.3,
                                      norm_eps=1e-5, rope_theta=500000.0, max_seq_len=8192),
               lr=3.0e-4, batch_tokens=4 * 2**20, train_tokens=15_000_000 * _M, seq_len=8192,
               note="LLaMA 3 8B (GQA, 8 KV heads)"),
        Preset("llama3-70b", ModelArgs(dim=8192, n_layers=80, n_heads=64, n_kv_heads=8,
                                       vocab_size=128256, multiple_of=4096, ffn_dim_multiplier=1.3,
                                       norm_eps=1e-5, rope_theta=500000.0, max_seq_len=8192),
               lr=1.5e-4, batch_tokens=4 * 2**20, train_tokens=15_000_000 * _M, seq_len=8192,
               note="LLaMA 3 70B (GQA, 8 KV heads)"),
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
