"""`data import`: nanoGPT flat token files and Megatron-LM .bin/.idx, written here; and bad input
across prepare and import (exit 2, one line, nothing left behind)."""

from __future__ import annotations

import bz2
import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from model import tokenizer as tk
from orchestrator.data import Sampler, open_dataset
from orchestrator.data.importer import write_megatron
from orchestrator.store.home import Home
from tests.conftest import assert_bad_input
from tests.unit.test_data_stream import make_docs, write_jsonl_zst, write_parquet


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    (d / "s.txt").write_text("\n".join(make_docs(400, 9)) + "\n")
    return tk.train(d / "s.txt", d, "t", vocab_size=400)


@pytest.fixture(scope="module")
def encoded(tok):
    return [tok.encode(d) for d in make_docs(120, 11)]


def test_flat_nanogpt_file(tok, encoded, tmp_path, run_cli, monkeypatch):
    """train.bin as nanoGPT writes it: uint16 ids, an end-of-text id after every document."""
    monkeypatch.setenv("TALLY_HOME", str(tmp_path / "home"))
    flat = np.concatenate([np.asarray(d + [tok.eos_id], np.uint16) for d in encoded])
    flat.tofile(tmp_path / "train.bin")
    flat[: len(flat) // 10].tofile(tmp_path / "val.bin")
    r = run_cli("data", "import", "nano", tmp_path / "train.bin", "--val", tmp_path / "val.bin",
                "--tokenizer", tok.path, "--json")
    assert r.code == 0, r.stderr
    m = r.json()
    assert m["splits"]["train"]["n_tokens"] == len(flat)
    assert m["splits"]["train"]["n_documents"] == len(encoded)
    ds = open_dataset("nano", Home(tmp_path / "home"), verify=True)
    stream = np.concatenate([np.asarray(s) for s in ds.shards])
    assert np.array_equal(stream, flat)  # the tokens as they were, not re-tokenised
    starts = np.concatenate(([0], np.cumsum([len(d) + 1 for d in encoded])[:-1]))
    assert np.array_equal(ds._docs[:, 0], starts)
    assert ds.get_batch(Sampler(ds.num_sequences(32), 0, 4).indices(0), 32).shape == (4, 33)
    assert run_cli("data", "show", "nano", "--verify", "--json").json()["verified"] is True


def test_megatron_indexed_dataset(tok, encoded, tmp_path):
    from orchestrator.data.importer import import_tokens

    binp, idxp = write_megatron(tmp_path / "corpus_text_document", encoded, np.uint16,
                                sequences_per_document=2)
    m = import_tokens("mega", str(tmp_path / "corpus_text_document"), tokenizer=tok.path,
                      home=Home(tmp_path / "home"), shard_tokens=2000)
    assert m["imported"][0]["layout"] == "megatron"
    assert m["splits"]["train"]["n_documents"] == len(encoded)
    assert len(m["splits"]["train"]["shards"]) > 1
    ds = open_dataset("mega", Home(tmp_path / "home"), verify=True)
    stream = np.concatenate([np.asarray(s, np.int64) for s in ds.shards])
    assert stream.tolist() == [t for d in encoded for t in d]
    ends = list(ds._docs[1:, 0]) + [len(stream)]
    assert [tok.decode(stream[a:b]) for a, b in zip(ds._docs[:, 0], ends)] == \
        [tok.decode(d) for d in encoded]
    m32 = import_tokens("mega32", str(write_megatron(tmp_path / "w32", encoded, np.int32)[0]),
                        tokenizer=tok.path, home=Home(tmp_path / "home"))
    assert m32["splits"]["train"]["shards"][0]["sha256"] == \
        import_tokens("again", str(binp), tokenizer=tok.path, home=Home(tmp_path / "x"),
                      shard_tokens=1 << 27)["splits"]["train"]["shards"][0]["sha256"]


def _leftovers(home: Path) -> list[Path]:
    return [p for p in home.rglob("*") if p.name not in ("data", "tokenizers", "sources")] \
        if home.exists() else []


def test_import_bad_input(tok, encoded, tmp_path, run_cli, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("TALLY_HOME", str(home))
    big = np.concatenate([np.asarray(d, np.uint32) for d in encoded])
    big[77] = 70000
    big.tofile(tmp_path / "big.bin")
    assert_bad_input(run_cli("data", "import", "x", tmp_path / "big.bin", "--dtype", "uint32",
                             "--tokenizer", tok.path), "big.bin", "70000", "position 77",
                     "vocabulary of 400")
    (tmp_path / "odd.bin").write_bytes(b"\x01\x00\x02")
    assert_bad_input(run_cli("data", "import", "x", tmp_path / "odd.bin", "--tokenizer",
                             tok.path), "odd.bin", "3 bytes", "uint16")
    binp, idxp = write_megatron(tmp_path / "m", encoded)
    blob = binp.read_bytes()
    binp.write_bytes(blob[:-4])  # the .bin lost its last two tokens
    assert_bad_input(run_cli("data", "import", "x", tmp_path / "m", "--tokenizer", tok.path),
                     "m.idx", "does not match m.bin", "bytes")
    binp.write_bytes(blob)
    raw = bytearray(idxp.read_bytes())
    struct.pack_into("<Q", raw, 18, 5)  # claims 5 sequences
    idxp.write_bytes(bytes(raw))
    assert_bad_input(run_cli("data", "import", "x", binp, "--tokenizer", tok.path),
                     "m.idx", "does not match", "5 sequences")
    assert_bad_input(run_cli("data", "import", "x", tmp_path / "nothing.bin", "--tokenizer",
                             tok.path), "nothing.bin")
    assert not _leftovers(home)


@pytest.mark.parametrize("case", ["non-utf8 zst", "corrupt gz", "corrupt zst", "truncated zst",
                                  "corrupt bz2",
                                  "parquet without field", "parquet not text", "not parquet"])
def test_prepare_bad_input_leaves_nothing_behind(case, tok, tmp_path, run_cli, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("TALLY_HOME", str(home))
    docs = make_docs(30, 1)
    f = tmp_path / "bad"
    if case == "non-utf8 zst":
        import zstandard

        good = "".join(json.dumps({"text": d}) + "\n" for d in docs[:3]).encode()
        f = tmp_path / "bad.jsonl.zst"
        f.write_bytes(zstandard.ZstdCompressor().compress(good + b'{"text": "caf\xe9"}\n'))
        needles = ["bad.jsonl.zst", f"offset {len(good) + 13}", "UTF-8"]
    elif case == "corrupt gz":
        f = tmp_path / "bad.jsonl.gz"
        f.write_bytes(gzip.compress(("\n".join(json.dumps({"text": d}) for d in docs)).encode())[:-30])
        needles = ["bad.jsonl.gz", "gz stream", "corrupt"]
    elif case == "corrupt zst":
        write_jsonl_zst(tmp_path / "ok.jsonl.zst", docs)
        blob = bytearray((tmp_path / "ok.jsonl.zst").read_bytes())
        blob[20:40] = b"\xff" * 20
        f = tmp_path / "bad.jsonl.zst"
        f.write_bytes(bytes(blob))
        (tmp_path / "ok.jsonl.zst").unlink()
        needles = ["bad.jsonl.zst", "zst stream", "corrupt"]
    elif case == "truncated zst":
        write_jsonl_zst(tmp_path / "ok.jsonl.zst", docs)
        f = tmp_path / "bad.jsonl.zst"
        f.write_bytes((tmp_path / "ok.jsonl.zst").read_bytes()[:-9])
        (tmp_path / "ok.jsonl.zst").unlink()
        needles = ["bad.jsonl.zst", "zst stream", "truncated"]
    elif case == "corrupt bz2":
        f = tmp_path / "bad.txt.bz2"
        f.write_bytes(b"BZh9" + b"\x00" * 64)
        needles = ["bad.txt.bz2", "bz2 stream", "corrupt"]
    elif case == "parquet without field":
        f = tmp_path / "bad.parquet"
        write_parquet(f, docs, field="content")
        needles = ["bad.parquet", "no column 'text'", "content, id", "--text-field"]
    elif case == "parquet not text":
        f = tmp_path / "bad.parquet"
        write_parquet(f, docs)
        needles = ["bad.parquet", "'id'", "not text"]
    else:
        f = tmp_path / "bad.parquet"
        f.write_bytes(b"PAR1 not really")
        needles = ["bad.parquet", "not a readable parquet"]
    extra = ["--text-field", "id"] if case == "parquet not text" else []
    r = run_cli("data", "prepare", f"a={f}", "--name", "bad", "--tokenizer", tok.path, *extra)
    assert_bad_input(r, *needles)
    assert not _leftovers(home), _leftovers(home)
