"""What the eval tests share: a small SentencePiece tokenizer in LLaMA's settings (trained on
this project's own English task files and Python's json sources) and a tiny random model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model.presets import ModelArgs

TASKS = Path(__file__).resolve().parents[2] / "orchestrator" / "eval" / "tasks"
TINY = ModelArgs(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=512, multiple_of=16,
                 max_seq_len=64)


@pytest.fixture(scope="session")
def eval_tokenizer(tmp_path_factory):
    from model import tokenizer as tk

    root = tmp_path_factory.mktemp("eval-tok")
    src = Path(json.__file__).parent
    text = [p.read_text() for p in sorted(src.glob("*.py"))]
    text += [p.read_text() for p in sorted(TASKS.glob("*.jsonl"))]
    corpus = root / "text.txt"
    corpus.write_text("\n".join(text))
    return tk.train(corpus, root, "eval", vocab_size=500)


@pytest.fixture(scope="session")
def tiny_model():
    import torch

    from model.llama import Transformer

    torch.manual_seed(0)
    model = Transformer(TINY)
    model.init_weights(seed=7)
    return model.eval()
