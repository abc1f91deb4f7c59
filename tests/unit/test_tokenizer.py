"""The SentencePiece BPE tokenizer: LLaMA's settings, round trips, digits, bytes, ids."""

from __future__ import annotations

import json
import random
import sysconfig
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from model import tokenizer as tk

WORDS = ("the of and to in a is that for it as was with be by on not he this are or his from at "
         "which but have an they you were her she there been one all we their has would when if "
         "so what out up into about who them then more some could time these two may first "
         "river mountain language history energy carbon model token window garden").split()


def corpus_lines() -> list[str]:
    """Prose built from common words, plus real Python source with its indentation."""
    rng = random.Random(0)
    prose = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 20))).capitalize() + "."
             for _ in range(3000)]
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    code = []
    for name in ("textwrap.py", "shlex.py", "fnmatch.py", "glob.py"):
        code += (stdlib / name).read_text(encoding="utf-8").splitlines()
    return prose + [line for line in code if line.strip()] + ["\tindented\twith\ttabs = 1"] * 50


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    (d / "sentences.txt").write_text("\n".join(corpus_lines()) + "\n", encoding="utf-8")
    calls = []
    tok = tk.train(d / "sentences.txt", d, "t", vocab_size=600,
                   progress=lambda done, total: calls.append((done, total)))
    return tok, d, calls


def test_round_trip_prose_code_and_non_ascii(trained):
    tok, _, _ = trained
    texts = [
        "The river and the mountain were there, as it was.",
        "def f(x):\n    if x:\n\treturn  [1,  2]   # trailing  \n\n\n",
        "class A:\n        pass\r\n\t\t\tdeep\n  \n",
        "Ünïcödé naïve café, 日本語のテキスト, русский, emoji 🙂🚀, \u00a0nbsp and zero\u200bwidth",
        "   leading spaces and trailing   ",
        "",
        " ",
        "\n",
    ]
    for text in texts:
        assert tok.decode(tok.encode(text)) == text, repr(text)


def test_unknown_characters_fall_back_to_bytes(trained):
    tok, _, _ = trained
    pieces = tok.pieces("日本🙂")
    assert pieces and all(p.startswith("<0x") or p == "▁" for p in pieces), pieces
    assert tok.sp.unk_id() not in tok.encode("日本🙂 ẞ")


def test_digits_are_split(trained):
    tok, _, _ = trained
    pieces = tok.pieces("in 2023 there were 1234567 tokens and 42.5%")
    digit_pieces = [p.lstrip("▁") for p in pieces if any(c.isdigit() for c in p)]
    assert digit_pieces and all(len(p) == 1 for p in digit_pieces), pieces


def test_whitespace_is_kept_for_code(trained):
    tok, _, _ = trained
    # identity normalisation: runs of spaces become (whitespace-only) pieces, never folded
    assert tok.encode("a    b") != tok.encode("a b")
    assert any(set(p) == {"▁"} and len(p) > 1 for p in tok.pieces("x\n        y"))


def test_ids_settings_and_progress(trained):
    tok, d, calls = trained
    assert (tok.vocab_size, tok.bos_id, tok.eos_id) == (600, tk.BOS_ID, tk.EOS_ID)
    ids = tok.encode("the river", bos=True, eos=True)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    assert tok.decode(ids) == "the river"
    meta = json.loads((d / "t.json").read_text())
    assert meta["id"] == tok.id and meta["vocab_size"] == 600
    s = meta["settings"]
    assert (s["model_type"], s["normalization_rule_name"]) == ("bpe", "identity")
    assert s["split_digits"] and s["byte_fallback"] and not s["remove_extra_whitespaces"]
    assert calls[-1] == (600, 600) and len(calls) >= 2 and calls[0][0] > 300
    assert [c[0] for c in calls] == sorted(c[0] for c in calls)
    assert not list(d.glob(".*tmp*"))


def test_batch_encode_matches_single(trained):
    tok, _, _ = trained
    texts = corpus_lines()[:200]
    assert tok.encode_batch(texts, num_threads=2) == [tok.encode(t) for t in texts]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=200))
def test_round_trip_any_text(trained, text):
    tok, _, _ = trained
    assert tok.decode(tok.encode(text)) == text


def test_vocabulary_too_large_for_corpus(tmp_path):
    (tmp_path / "s.txt").write_text("tiny corpus\nof two lines\n")
    with pytest.raises(tk.VocabularyTooLarge, match="at most"):
        tk.train(tmp_path / "s.txt", tmp_path, "big", vocab_size=5000)
    assert not list(tmp_path.glob("big*")) and not list(tmp_path.glob(".big*"))


def test_load_rejects_a_non_model(tmp_path):
    (tmp_path / "x.model").write_bytes(b"not a model")
    with pytest.raises(tk.TokenizerError):
        tk.load(tmp_path / "x.model")


def test_training_is_reproducible_for_a_seed(tmp_path):
    lines = corpus_lines()
    (tmp_path / "s.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    ids = [tk.train(tmp_path / "s.txt", tmp_path / f"r{i}", "r", vocab_size=500,
                    sentences=len(lines) // 2, seed=seed).id for i, seed in enumerate((5, 5, 6))]
    assert ids[0] == ids[1] != ids[2]
