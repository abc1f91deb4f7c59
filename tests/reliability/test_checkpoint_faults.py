"""A checkpoint write interrupted and a checkpoint corrupted on disk: detected, the previous
complete one used, and said so (a `checkpoint-skipped` RunEvent and a warning line).

Extends tests/test_checkpoint.py (checksum and size mismatches, a bare .tmp dir) and
tests/test_train.py (a zeroed shard on resume) with the other ways a save dies: a marker cut
short, a file missing, a stale .tmp of the same step, and, end to end, a run that meets a
half-written newer checkpoint and a bit-flipped newest one and still equals the uninterrupted run.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import torch

from orchestrator.run import checkpoint as ckpt
from tests.reliability._record import record
from tests.reliability.conftest import STEPS, assert_same_history, events, losses, val_loss


def _model():
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(3, 8)).sum().backward()
    opt.step()
    return model, opt


def test_marker_cut_short_or_file_missing_falls_back(tmp_path):
    model, opt = _model()
    for step in (1, 2, 3):
        ckpt.save(tmp_path, step, model, opt, {"step": step})
    marker = ckpt.step_dir(tmp_path, 3) / ckpt.MARKER
    marker.write_text(marker.read_text()[:40])  # the write of the marker itself interrupted
    shard = next(ckpt.step_dir(tmp_path, 2).glob("*.distcp"))
    shard.unlink()  # a file lost from a complete checkpoint
    found = ckpt.find_latest(tmp_path)
    assert found.step == 1
    reasons = dict((p.name, r) for p, r in found.skipped)
    assert "unreadable marker" in reasons["step-00000003"]
    assert "missing" in reasons["step-00000002"]


def test_nothing_usable_is_reported_not_guessed(tmp_path):
    model, opt = _model()
    ckpt.save(tmp_path, 1, model, opt, {"step": 1})
    shard = next(ckpt.step_dir(tmp_path, 1).glob("*.distcp"))
    shard.write_bytes(shard.read_bytes()[:-1])
    found = ckpt.find_latest(tmp_path)
    assert found.step == -1 and found.skipped  # the loop then starts from step 0, saying why


def test_a_save_over_a_stale_tmp_of_the_same_step_is_clean(tmp_path):
    model, opt = _model()
    stale = ckpt.step_dir(tmp_path, 5).with_name("step-00000005.tmp")
    stale.mkdir(parents=True)
    (stale / "__0_0.distcp").write_bytes(b"half")
    (stale / "junk").write_bytes(b"x")
    path = ckpt.save(tmp_path, 5, model, opt, {"step": 5})
    assert not stale.exists() and not (path / "junk").exists()
    assert ckpt.verify(path) is None


@pytest.mark.slow
def test_run_meets_a_half_written_and_a_corrupt_checkpoint(rel_cli, rel_home, reference):
    from tests.reliability.conftest import FAST, LAUNCH

    half = LAUNCH.copy()  # the reference launch, stopped at step 6 (same 12-step horizon)
    half[half.index("--max-steps") + 1] = "6"
    res = rel_cli("train", "tiny", *FAST, *half, "--json")
    assert res.code == 0, res.stderr
    run_id = res.json()["id"]
    root = Path(res.json().get("storage_path") or
                rel_cli("runs", "show", run_id, "--json").json()["run"]["storage_path"])
    ck = root / "checkpoints"
    assert [s for s, _ in ckpt.complete_steps(ck)] == [6, 3]
    # a save of step 9 killed midway: its .tmp holds part of a shard and no marker
    tmp = ck / "step-00000009.tmp"
    shutil.copytree(ck / "step-00000006", tmp)
    (tmp / ckpt.MARKER).unlink()
    shard = next(tmp.glob("*.distcp"))
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    # and one bit flipped in the newest complete checkpoint
    shard = next((ck / "step-00000006").glob("*.distcp"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0x01
    shard.write_bytes(bytes(data))
    t0 = time.time()
    res = rel_cli("train", "--resume", run_id, "--max-steps", str(STEPS), "--json")
    assert res.code == 0, res.stderr
    warning = [l for l in res.stderr.splitlines() if l.startswith("warning:")]
    assert any("step-00000006" in l and "falling back" in l for l in warning), res.stderr
    skipped = [e.details for e in events(rel_home, run_id, "checkpoint-skipped")]
    assert len(skipped) == 1 and skipped[0]["path"].endswith("step-00000006")
    assert "checksum" in skipped[0]["reason"]
    assert events(rel_home, run_id, "resume")[-1].details["step"] == 3
    assert_same_history(losses(rel_home, run_id), reference["losses"])
    assert val_loss(rel_home, run_id) == pytest.approx(reference["val_loss"], rel=1e-6)
    assert not list(ck.glob("*.tmp"))  # the half-written one was cleared by the next save
    record("checkpoint-interrupted-and-corrupted", injections=2,
           faults="half-written step-9 .tmp (no marker) + 1 bit flipped in step-6",
           detected=True, resumed_from_step=3, survived=True,
           resume_command_s=round(time.time() - t0, 2))
