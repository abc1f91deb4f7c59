"""Checkpoints: complete-or-nothing, verified on load, fall back past a corrupt newest one."""

from __future__ import annotations

import json

import pytest
import torch

from orchestrator.run import checkpoint as ckpt
from orchestrator.run.worker import lr_at


def _model_and_opt(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Linear(16, 4))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x = torch.randn(5, 8)
    model(x).pow(2).mean().backward()
    opt.step()
    return model, opt


def test_save_load_round_trip(tmp_path):
    model, opt = _model_and_opt(0)
    path = ckpt.save(tmp_path, 10, model, opt, {"step": 10, "tokens": 1000})
    assert path.name == "step-00000010" and (path / ckpt.MARKER).is_file()
    assert not list(tmp_path.glob("*.tmp"))
    other, other_opt = _model_and_opt(1)
    extra = ckpt.load(path, other, other_opt)
    assert extra["step"] == 10
    for a, b in zip(model.parameters(), other.parameters()):
        assert torch.equal(a, b)
    sa, sb = opt.state_dict()["state"], other_opt.state_dict()["state"]
    assert all(torch.equal(sa[k]["exp_avg"], sb[k]["exp_avg"]) for k in sa)


def test_incomplete_and_corrupt_checkpoints_fall_back(tmp_path):
    model, opt = _model_and_opt(0)
    ckpt.save(tmp_path, 10, model, opt, {"step": 10})
    ckpt.save(tmp_path, 20, model, opt, {"step": 20})
    # a save killed midway: a .tmp directory with no marker never counts
    (tmp_path / "step-00000030.tmp").mkdir()
    (tmp_path / "step-00000030.tmp" / "__0_0.distcp").write_bytes(b"partial")
    assert ckpt.find_latest(tmp_path).step == 20
    # flip a byte in the newest complete checkpoint: detected, previous one used, reason given
    shard = next(p for p in (tmp_path / "step-00000020").iterdir() if p.suffix == ".distcp")
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    found = ckpt.find_latest(tmp_path)
    assert found.step == 10
    assert found.skipped and "checksum" in found.skipped[0][1]
    # a truncated file is caught by its size
    shard.write_bytes(bytes(data[:10]))
    assert "bytes" in ckpt.find_latest(tmp_path).skipped[0][1]


def test_keep_last_prunes_old_checkpoints(tmp_path):
    model, opt = _model_and_opt(0)
    for step in (1, 2, 3, 4):
        ckpt.save(tmp_path, step, model, opt, {"step": step}, keep_last=2)
    assert [s for s, _ in ckpt.complete_steps(tmp_path)] == [4, 3]


def test_marker_lists_every_file(tmp_path):
    model, opt = _model_and_opt(0)
    path = ckpt.save(tmp_path, 5, model, opt, {"step": 5})
    manifest = json.loads((path / ckpt.MARKER).read_text())
    on_disk = {p.name for p in path.iterdir()} - {ckpt.MARKER}
    assert set(manifest["files"]) == on_disk
    assert any(name.startswith("rng-rank0") for name in on_disk)


@pytest.mark.parametrize("step,expected", [
    (1, 1e-3 / 10), (10, 1e-3),              # warm-up: linear to the peak
    (55, 1e-4 + 0.9e-3 * 0.5),               # half-way through the cosine
    (100, 1e-4), (150, 1e-4),                # the floor: 10% of the peak, then flat
])
def test_lr_schedule(step, expected):
    assert lr_at(step, peak=1e-3, warmup=10, total=100, min_ratio=0.1) == pytest.approx(expected)


def test_lr_schedule_is_monotone_after_warmup():
    lrs = [lr_at(s, peak=3e-4, warmup=2000, total=250_000, min_ratio=0.1)
           for s in range(2000, 250_001, 997)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
