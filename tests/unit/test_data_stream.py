"""Streaming prepare: formats (.zst, Parquet, s3://), determinism across process counts, resume
after an interruption, exact-duplicate removal. Small corpora written in tmp."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import numpy as np
import pytest

from model.tokenizer import Tokenizer
from orchestrator.data import mix, open_dataset, prepare, sources
from orchestrator.store.home import Home

WORDS = ("the of and to in a is that for it as was with be by on not he this are or his from at "
         "which but have an they you were her she there been one all we their has would when if "
         "river mountain language history energy carbon model token window garden").split()


def make_docs(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [f"Doc {seed}-{i}. " + "\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14)))
                                            for _ in range(rng.randint(1, 6))) for i in range(n)]


def write_jsonl_zst(path: Path, docs: list[str]) -> None:
    import zstandard

    blob = "".join(json.dumps({"text": d}) + "\n" for d in docs).encode()
    cut = blob.find(b"\n", len(blob) // 2) + 1  # two frames back to back, as zstd -c a b
    path.write_bytes(zstandard.ZstdCompressor().compress(blob[:cut]) +
                     zstandard.ZstdCompressor().compress(blob[cut:]))


def write_parquet(path: Path, docs: list[str], field: str = "text", row_group: int = 50) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({field: docs, "id": list(range(len(docs)))}), path,
                   row_group_size=row_group)


def all_documents(home: Home, name: str) -> list[str]:
    """Every document of both splits, decoded, as the shards hold them."""
    out = []
    for split in ("train", "val"):
        try:
            ds = open_dataset(name, home, split, verify=True)
        except Exception:
            continue
        tok = Tokenizer(ds.tokenizer_path)
        stream = np.concatenate([np.asarray(s, np.int64) for s in ds.shards])
        starts = list(ds._docs[:, 0]) + [len(stream)]
        out += [tok.decode(stream[a + 1:b - 1]) for a, b in zip(starts[:-1], starts[1:])]
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    docs = {"web": make_docs(240, 1), "books": make_docs(90, 2), "wiki": make_docs(60, 3),
            "notes": make_docs(100, 4)}
    (root / "web").mkdir()
    for i in range(3):  # one source over three .jsonl.zst files
        write_jsonl_zst(root / "web" / f"part{i}.jsonl.zst", docs["web"][i * 80:(i + 1) * 80])
    write_parquet(root / "books.parquet", docs["books"])
    with gzip.open(root / "wiki.jsonl.gz", "wt") as f:
        f.writelines(json.dumps({"text": d}) + "\n" for d in docs["wiki"])
    with open(root / "notes.jsonl", "w") as f:  # uncompressed: read in byte ranges
        f.writelines(json.dumps({"text": d}) + "\n" for d in docs["notes"])
    specs = [f"web={root}/web/*.jsonl.zst:3", f"books={root}/books.parquet:1",
             f"wiki={root}/wiki.jsonl.gz:1", f"notes={root}/notes.jsonl:1"]
    return root, docs, specs


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    """The corpus prepared on one process (units of 2 KiB, so files split), tokenizer trained."""
    _, _, specs = corpus
    home = Home(tmp_path_factory.mktemp("ref"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sources, "UNIT_BYTES", 2048)
        m = prepare(specs, "ref", home, vocab_size=500, val_fraction=0.1, seed=5, workers=1,
                    shard_tokens=4000)
    return home, m


def test_every_format_round_trips_each_document_once(corpus, reference):
    _, docs, _ = corpus
    home, m = reference
    got = set(all_documents(home, "ref"))
    assert got <= {d for ds in docs.values() for d in ds}  # exactly as written, nothing else
    for s in m["sources"]:  # a source drawn for a whole pass or more shows every document
        if s["epochs"] >= 1:
            assert set(docs[s["name"]]) <= got, s["name"]
    assert [s["documents"] + s["val_documents"] for s in m["sources"]] == [240, 90, 60, 100]
    # compressed files whole, the Parquet file in row groups, notes.jsonl in byte ranges
    assert m["units"] >= 3 + 2 + 1 + 3


def test_one_and_two_processes_give_byte_identical_shards(corpus, reference, tmp_path,
                                                          monkeypatch):
    _, _, specs = corpus
    _, ref = reference
    monkeypatch.setattr(sources, "UNIT_BYTES", 2048)
    two = prepare(specs, "two", Home(tmp_path), vocab_size=500, val_fraction=0.1, seed=5,
                  workers=2, shard_tokens=4000)
    assert two["workers"]["processes"] == 2 and ref["workers"]["processes"] == 1
    assert two["tokenizer"]["id"] == ref["tokenizer"]["id"]
    for split in ("train", "val"):
        a, b = ref["splits"][split], two["splits"][split]
        assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]
        assert a["docs_sha256"] == b["docs_sha256"]
    assert len(ref["splits"]["train"]["shards"]) > 2


def test_weights_epochs_and_window(corpus, reference, tmp_path):
    """--tokens 3x the natural size with weights 3:1:1: epochs follow the weights; the window
    mixes the sources along the stream (every 200-document stretch holds all three)."""
    _, _, specs = corpus
    home, ref = reference
    total = ref["splits"]["train"]["n_tokens"] * 3
    m = prepare(specs, "w", Home(tmp_path), tokenizer=str(home.data / "ref" / "tokenizer.model"),
                val_fraction=0.1, seed=5, tokens=total, window=64)
    for s in m["sources"]:
        assert s["sampled_tokens"] == pytest.approx(s["target_tokens"], rel=0.03)
        assert s["epochs"] == pytest.approx(s["sampled_tokens"] / s["tokens"], abs=1e-3)
    ds = open_dataset("w", Home(tmp_path))
    src = ds._docs[:, 1]
    for a in range(0, len(src) - 200, 200):
        assert set(src[a:a + 200]) == {0, 1, 2, 3}
    assert m["shuffle_window_documents"] == 64


def test_interrupted_prepare_resumes_from_finished_units_and_shards(corpus, reference,
                                                                    tmp_path, monkeypatch):
    _, _, specs = corpus
    _, ref = reference
    home = Home(tmp_path)
    monkeypatch.setattr(sources, "UNIT_BYTES", 2048)
    seen = []

    def stop_after_three_units(stage, done, total):
        seen.append((stage, done))
        if stage == "tokenise" and done == 3:
            raise KeyboardInterrupt

    args = dict(vocab_size=500, val_fraction=0.1, seed=5, workers=1, shard_tokens=4000)
    with pytest.raises(KeyboardInterrupt):
        prepare(specs, "r", home, progress=stop_after_three_units, **args)
    assert not (home.data / "r").exists() and not (home.tokenizers / "r.model").exists()
    work = [p for p in home.data.iterdir() if p.name.startswith(".r.work-")]
    assert len(work) == 1 and len(list((work[0] / "spill").glob("*.meta.npy"))) == 3

    real = mix.raw_to_npy  # second try: stop after the train shards, before their index
    monkeypatch.setattr(mix, "raw_to_npy", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    seen.clear()
    with pytest.raises(KeyboardInterrupt):
        prepare(specs, "r", home, progress=lambda s, d, t: seen.append((s, d)), **args)
    assert ("sample", 1) not in seen  # the tokenizer was kept
    assert min(d for s, d in seen if s == "tokenise") == 4  # units 1-3 were not encoded again
    shards = sorted(work[0].glob("train_*.bin"))
    stamps = {p.name: p.stat().st_mtime_ns for p in shards}
    assert len(shards) == len(ref["splits"]["train"]["shards"])
    assert not (home.data / "r").exists()

    monkeypatch.setattr(mix, "raw_to_npy", real)
    m = prepare(specs, "r", home, **args)
    assert {p.name: p.stat().st_mtime_ns for p in sorted((home.data / "r").glob("train_*.bin"))} \
        == stamps  # the finished shards were kept, not written again
    assert [s["sha256"] for s in m["splits"]["train"]["shards"]] == \
        [s["sha256"] for s in ref["splits"]["train"]["shards"]]
    assert not [p for p in home.data.iterdir() if p.name.startswith(".")]


def test_dedup_counts_and_removes_exact_duplicates(reference, tmp_path):
    home, _ = reference
    docs = make_docs(50, 7)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for i, d in enumerate(docs):
        (tmp_path / "a" / f"{i:02d}.txt").write_text(d)
    extra = make_docs(10, 8)
    # b: 20 documents seen in a, 5 of those a second time, 10 of its own
    for i, d in enumerate(docs[:20] + docs[:5] + extra):
        (tmp_path / "b" / f"{i:02d}.txt").write_text(d)
    tok = str(home.data / "ref" / "tokenizer.model")
    specs = [f"a={tmp_path}/a", f"b={tmp_path}/b"]
    kept = prepare(specs, "k", Home(tmp_path / "h"), tokenizer=tok, val_fraction=0.1)
    assert [s["duplicate_documents"] for s in kept["sources"]] == [0, 25]
    assert [s["duplicates_removed"] for s in kept["sources"]] == [0, 0]
    assert [s["documents"] + s["val_documents"] for s in kept["sources"]] == [50, 35]
    m = prepare(specs, "d", Home(tmp_path / "h"), tokenizer=tok, val_fraction=0.1, dedup=True)
    assert [s["duplicates_removed"] for s in m["sources"]] == [0, 25]
    assert [s["documents"] + s["val_documents"] for s in m["sources"]] == [50, 10]
    got = set(all_documents(Home(tmp_path / "h"), "d"))
    assert got <= set(docs + extra) and set(extra) <= got and m["dedup"] is True


def test_s3_source_through_fsspec(s3_server, corpus, reference, tmp_path):
    import boto3

    root, docs, _ = corpus
    home, _ = reference
    bucket = f"corpus-{tmp_path.name.lower().replace('_', '-')}"[:60]
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    for p in sorted((root / "web").iterdir()):
        s3.upload_file(str(p), bucket, f"web/{p.name}")
    s3.upload_file(str(root / "books.parquet"), bucket, "books.parquet")
    m = prepare([f"web=s3://{bucket}/web/*.jsonl.zst", f"books=s3://{bucket}/books.parquet"],
                "s3", Home(tmp_path), tokenizer=str(home.data / "ref" / "tokenizer.model"),
                val_fraction=0)
    assert m["sources"][0]["files"] == 3 and m["sources"][0]["pattern"].startswith("s3://")
    assert [s["documents"] for s in m["sources"]] == [240, 90]  # every object, every row
    got = set(all_documents(Home(tmp_path), "s3"))
    assert got <= set(docs["web"] + docs["books"])
    assert set(next(docs[s["name"]] for s in m["sources"] if s["epochs"] >= 1)) <= got


def test_large_plain_text_file_is_cut_into_documents(reference, tmp_path, monkeypatch):
    home, _ = reference
    text = "\n".join(" ".join(random.Random(i).choice(WORDS) for _ in range(10))
                     for i in range(400)) + "\n"
    (tmp_path / "big.txt").write_text(text)
    monkeypatch.setattr(sources, "MAX_DOC_BYTES", 4096)
    m = prepare([f"big={tmp_path}/big.txt"], "big", Home(tmp_path / "h"), val_fraction=0,
                tokenizer=str(home.data / "ref" / "tokenizer.model"))
    got = all_documents(Home(tmp_path / "h"), "big")
    assert m["sources"][0]["documents"] == len(got) > 3
    assert all(len(d.encode()) < 4096 + 200 and d.endswith("\n") for d in got)  # line breaks
    assert sum(len(d) for d in got) == len(text)  # one pass, nothing lost or doubled


def test_processes_fit_the_memory_setting_and_fill_the_cores():
    from orchestrator.data.prepare import DRIVER_BYTES, WORKER_BYTES, plan_processes

    assert plan_processes(1_000_000_000, 100, cores=16) == (5, 4)  # 300 MB + 5 x 120 MB <= 1 GB
    assert DRIVER_BYTES + 5 * WORKER_BYTES <= 1_000_000_000 < DRIVER_BYTES + 6 * WORKER_BYTES
    assert plan_processes(4_000_000_000, 100, cores=16) == (16, 1)
    assert plan_processes(1_000_000_000, 1, cores=16) == (1, 16)  # one unit: all threads on it
    assert plan_processes(1_000_000_000, 100, workers=1, cores=2) == (1, 2)
