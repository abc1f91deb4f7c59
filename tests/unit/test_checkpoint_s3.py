"""Checkpoints in an S3 bucket (moto's S3 server on 127.0.0.1, s3fs as the client): the same
complete-or-nothing rules as on a local disk, without renames (tests/test_checkpoint.py is the
local counterpart)."""

from __future__ import annotations

import json

import fsspec
import pytest
import torch

from orchestrator.run import checkpoint as ckpt


def _model_and_opt(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Linear(16, 4))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(5, 8)).pow(2).mean().backward()
    opt.step()
    return model, opt


@pytest.fixture
def root(s3_server):
    return f"{s3_server}/runs/r1/checkpoints"


def _fs():
    return fsspec.filesystem("s3", skip_instance_cache=True)  # a second client: what is stored


def _keys(fs, uri: str) -> set[str]:
    base = uri.split("://", 1)[1]
    return {p[len(base) + 1:] for p in fs.find(base)}


def test_save_load_round_trip_in_the_bucket(root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may land in a local folder named "s3:"
    model, opt = _model_and_opt(0)
    path = ckpt.save(root, 10, model, opt, {"step": 10, "tokens": 1000})
    assert path == f"{root}/step-00000010"
    fs = _fs()
    keys = _keys(fs, root)
    assert f"step-00000010/{ckpt.MARKER}" in keys and "step-00000010/.metadata" in keys
    assert not any(".tmp" in k for k in keys)  # written in place: no rename on an object store
    manifest = json.loads(fs.cat_file(f"{path.split('://')[1]}/{ckpt.MARKER}"))
    assert set(manifest["files"]) == {k.split("/", 1)[1] for k in keys} - {ckpt.MARKER}
    assert not list(tmp_path.iterdir())
    other, other_opt = _model_and_opt(1)
    assert ckpt.find_latest(root).path == path
    extra = ckpt.load(path, other, other_opt)
    assert extra["step"] == 10
    for a, b in zip(model.parameters(), other.parameters()):
        assert torch.equal(a, b)
    sa, sb = opt.state_dict()["state"], other_opt.state_dict()["state"]
    assert all(torch.equal(sa[k]["exp_avg"], sb[k]["exp_avg"]) for k in sa)


def test_half_written_and_corrupt_checkpoints_are_skipped(root):
    model, opt = _model_and_opt(0)
    for step in (2, 4):
        ckpt.save(root, step, model, opt, {"step": step})
    fs, base = _fs(), root.split("://", 1)[1]
    # a save of step 6 killed before its marker: the shards are there, COMPLETE.json is not
    for key in fs.find(f"{base}/step-00000004"):
        if not key.endswith(ckpt.MARKER):
            data = fs.cat_file(key)
            fs.pipe_file(key.replace("step-00000004", "step-00000006"), data[: len(data) // 2])
    found = ckpt.find_latest(root)
    assert found.step == 4
    assert [(ckpt.basename(p), "COMPLETE.json" in r) for p, r in found.skipped] == \
        [("step-00000006", True)]
    # one bit flipped in the newest complete one: its checksum fails, step 2 is used
    shard = next(k for k in fs.find(f"{base}/step-00000004") if k.endswith(".distcp"))
    data = bytearray(fs.cat_file(shard))
    data[len(data) // 2] ^= 0x01
    fs.pipe_file(shard, bytes(data))
    found = ckpt.find_latest(root)
    assert found.step == 2
    assert "checksum" in dict((ckpt.basename(p), r) for p, r in found.skipped)["step-00000004"]
    # nothing usable: reported, not guessed
    fs.rm_file(f"{base}/step-00000002/{ckpt.MARKER}")
    found = ckpt.find_latest(root)
    assert found.step == -1 and len(found.skipped) == 3


def test_keep_last_prunes_the_bucket_and_clears_stale_partial_saves(root):
    model, opt = _model_and_opt(0)
    fs, base = _fs(), root.split("://", 1)[1]
    fs.pipe_file(f"{base}/step-00000001/__0_0.distcp", b"a save of step 1 cut short")
    for step in (2, 3, 4, 5):
        ckpt.save(root, step, model, opt, {"step": step}, keep_last=2)
    assert [s for s, _ in ckpt.complete_steps(root)] == [5, 4]
    fs.invalidate_cache()
    assert {k.split("/")[0] for k in _keys(fs, root)} == {"step-00000005", "step-00000004"}
    ckpt.prune(root, 0)  # even asked for none, the newest complete one stays
    assert [s for s, _ in ckpt.complete_steps(root)] == [5]


def test_a_save_over_a_half_written_save_of_the_same_step_is_clean(root):
    model, opt = _model_and_opt(0)
    fs, base = _fs(), root.split("://", 1)[1]
    fs.pipe_file(f"{base}/step-00000005/__0_0.distcp", b"half")
    fs.pipe_file(f"{base}/step-00000005/junk", b"x")
    path = ckpt.save(root, 5, model, opt, {"step": 5})
    assert "step-00000005/junk" not in _keys(fs, root)
    assert ckpt.verify(path) is None
