"""SentencePiece BPE, trained and loaded as LLaMA's was (Touvron et al. 2023, §2.1).

LLaMA's settings: BPE, numbers split into single digits, unknown UTF-8 falls back to bytes, and
an *identity* normalisation that folds no whitespace, so indentation, tabs and runs of spaces in
code survive and `decode(encode(text)) == text`. Ids: unk 0, bos 1, eos 2, no pad.

A model is stored as `<dir>/<name>.model` beside `<dir>/<name>.json`, its training settings.
Training runs SentencePiece in a child process so its log (one line per 100 merges) can
drive a progress callback without touching this process's stderr.

Plain SentencePiece and the standard library only: `model/` imports nothing else of ours.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterable, Sequence

import sentencepiece as spm

UNK_ID, BOS_ID, EOS_ID = 0, 1, 2

# What LLaMA's released tokenizer.model says about itself (its trainer_spec), less the corpus.
LLAMA_SETTINGS: dict = {
    "model_type": "bpe",
    "split_digits": True,
    "byte_fallback": True,
    "normalization_rule_name": "identity",
    "remove_extra_whitespaces": False,
    "allow_whitespace_only_pieces": True,
    "add_dummy_prefix": True,
    "split_by_unicode_script": True,
    "split_by_whitespace": True,
    "character_coverage": 0.99995,
    "max_sentence_length": 4192,  # bytes; longer lines are skipped in training, not in encoding
    "unk_id": UNK_ID, "bos_id": BOS_ID, "eos_id": EOS_ID, "pad_id": -1,
}
# Enough lines for a stable 8k-32k vocabulary; SentencePiece samples them from the whole input.
DEFAULT_SENTENCES = 200_000

_TRAIN = ("import json, sys, sentencepiece as spm; spm.set_random_generator_seed(int(sys.argv[2])); "
          "spm.SentencePieceTrainer.train(**json.loads(sys.argv[1]))")
_PROGRESS = re.compile(r"Merged: freq=\d+ merges=(\d+)")
_TOO_SMALL = re.compile(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)")
_ALPHABET = re.compile(r"Alphabet size=(\d+)")
_TOO_HIGH = re.compile(r"Vocabulary size (?:is )?too high \((\d+)\)\. Please set it to a value <= (\d+)")


class TokenizerError(ValueError):
    """The tokenizer cannot be trained or loaded as asked (the caller turns it into bad input)."""


class VocabularyTooLarge(TokenizerError):
    def __init__(self, asked: int, most: int):
        self.asked, self.most = asked, most
        super().__init__(f"vocabulary size {asked} is too large for this corpus; "
                         f"it supports at most {most} pieces (use a smaller --vocab-size or more text)")


class Tokenizer:
    """A trained SentencePiece model: encode, decode, and the ids training needs."""

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        try:
            self.sp = spm.SentencePieceProcessor(model_file=self.path)
        except (OSError, RuntimeError) as e:
            raise TokenizerError(f"cannot load tokenizer {self.path!r}: {e}") from None
        self.vocab_size = self.sp.vocab_size()
        self.bos_id, self.eos_id = self.sp.bos_id(), self.sp.eos_id()

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        return self.sp.encode(text, add_bos=bos, add_eos=eos)

    def encode_batch(self, texts: Sequence[str], bos: bool = False, eos: bool = False,
                     num_threads: int = 1) -> list[list[int]]:
        return self.sp.encode(list(texts), add_bos=bos, add_eos=eos, num_threads=num_threads)

    def decode(self, ids: Iterable[int]) -> str:
        return self.sp.decode([int(i) for i in ids if i not in (self.bos_id, self.eos_id)])

    def pieces(self, text: str) -> list[str]:
        return self.sp.encode(text, out_type=str)

    @property
    def id(self) -> str:
        """Hash of the vocabulary (pieces, scores, kinds): the tokenizer id a dataset's manifest
        records. Not of the file, which also records the paths it was trained from."""
        sp, h = self.sp, hashlib.sha256()
        for i in range(self.vocab_size):
            h.update(f"{sp.id_to_piece(i)}\t{sp.get_score(i)}\t{int(sp.is_byte(i))}"
                     f"{int(sp.is_control(i))}{int(sp.is_unknown(i))}\n".encode())
        return h.hexdigest()[:16]


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def train(sentences_file: str | os.PathLike, out_dir: str | os.PathLike, name: str,
          vocab_size: int = 32000, sentences: int = DEFAULT_SENTENCES, seed: int = 0,
          progress: Callable[[int, int], None] | None = None, **overrides) -> Tokenizer:
    """Train on a text file (one sentence per line) and store `<out_dir>/<name>.model` + `.json`.

    `sentences` caps the lines trained on: a sample drawn with `seed`, so training is
    reproducible. `progress(done,
    total)` is called as merges are made (pieces so far, out of vocab_size). Raises VocabularyTooLarge when the corpus cannot
    support `vocab_size` pieces; nothing is left under `out_dir` on failure.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp_prefix = out_dir / f".{name}.tmp-{os.getpid()}"
    # Sample the lines here, seeded: SentencePiece's own sampling differs from run to run.
    lines = Path(sentences_file).read_text(encoding="utf-8").splitlines()
    sample = tmp_prefix.with_suffix(".txt")
    keep = sorted(random.Random(seed).sample(range(len(lines)), min(int(sentences), len(lines))))
    sample.write_text("".join(lines[i] + "\n" for i in keep), encoding="utf-8")
    settings = {**LLAMA_SETTINGS, **overrides, "vocab_size": int(vocab_size),
                "input_sentence_size": 0, "num_threads": os.cpu_count() or 1,
                "sentences": len(keep), "sentences_in_corpus": len(lines), "seed": int(seed)}
    args = {k: v for k, v in settings.items() if k not in ("sentences", "sentences_in_corpus", "seed")}
    args.update(input=str(sample), model_prefix=str(tmp_prefix), minloglevel=0)
    del lines
    proc = subprocess.Popen([sys.executable, "-c", _TRAIN, json.dumps(args), str(int(seed) + 1)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            errors="replace")
    tail: list[str] = []
    base = 3 + (256 if settings["byte_fallback"] else 0)  # pieces there before any merge
    assert proc.stderr is not None
    for line in proc.stderr:
        tail = (tail + [line.rstrip()])[-20:]
        if m := _ALPHABET.search(line):
            base += int(m.group(1))
        elif (m := _PROGRESS.search(line)) and progress:
            progress(min(base + int(m.group(1)), vocab_size), vocab_size)
    rc = proc.wait()
    sample.unlink(missing_ok=True)
    model, vocab = Path(f"{tmp_prefix}.model"), Path(f"{tmp_prefix}.vocab")
    if rc != 0:
        for p in (model, vocab):
            p.unlink(missing_ok=True)
        log = "\n".join(tail)
        m = _TOO_HIGH.search(log)
        if m:
            raise VocabularyTooLarge(int(m.group(1)), int(m.group(2)))
        m = _TOO_SMALL.search(log)
        if m:
            raise TokenizerError(f"vocabulary size {m.group(1)} is too small for this corpus: its "
                                 f"characters, the 256 byte pieces and the specials need "
                                 f"{m.group(2)}; use a vocabulary of at least {m.group(2)}")
        raise TokenizerError(f"SentencePiece training failed: {tail[-1] if tail else rc}")
    vocab.unlink(missing_ok=True)
    final = out_dir / f"{name}.model"
    os.replace(model, final)
    tok = Tokenizer(final)
    meta = {"name": name, "id": tok.id, "vocab_size": tok.vocab_size, "bos_id": tok.bos_id,
            "eos_id": tok.eos_id, "sentencepiece": spm.__version__, "settings": settings}
    tmp_json = out_dir / f".{name}.json.tmp-{os.getpid()}"
    tmp_json.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp_json, out_dir / f"{name}.json")
    if progress:
        progress(vocab_size, vocab_size)
    return tok


def load(path: str | os.PathLike) -> Tokenizer:
    return Tokenizer(path)
