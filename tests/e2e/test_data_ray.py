"""`data prepare --address`: the units tokenised as Ray tasks give the shards a local prepare
gives, byte for byte."""

from __future__ import annotations

import pytest

from orchestrator.data import prepare, sources
from orchestrator.store.home import Home


@pytest.mark.slow
def test_ray_tasks_give_the_local_shards(ray_local, tmp_path, monkeypatch):
    from tests.unit.test_data_stream import make_docs, write_jsonl_zst

    for i in range(3):
        write_jsonl_zst(tmp_path / f"web{i}.jsonl.zst", make_docs(60, 20 + i))
    (tmp_path / "notes.txt").write_text("\n".join(make_docs(200, 30)))
    monkeypatch.setattr(sources, "UNIT_BYTES", 4096)  # notes.txt in several byte ranges
    specs = [f"web={tmp_path}/web*.jsonl.zst:2", f"notes={tmp_path}/notes.txt"]
    args = dict(vocab_size=400, val_fraction=0.1, seed=2, shard_tokens=3000)
    local = prepare(specs, "a", Home(tmp_path / "local"), workers=1, **args)
    on_ray = prepare(specs, "a", Home(tmp_path / "ray"), address="auto", **args)
    assert on_ray["workers"]["ray"] is True and on_ray["units"] == local["units"] > 4
    assert on_ray["tokenizer"]["id"] == local["tokenizer"]["id"]
    for split in ("train", "val"):
        assert [s["sha256"] for s in on_ray["splits"][split]["shards"]] == \
            [s["sha256"] for s in local["splits"][split]["shards"]]
        assert on_ray["splits"][split]["docs_sha256"] == local["splits"][split]["docs_sha256"]
