"""Checkpoints in an S3 bucket end to end (moto's S3 server on 127.0.0.1): a run writes its
checkpoints to the bucket, a worker SIGKILLed mid-run resumes from the bucket's newest complete
checkpoint, a half-written checkpoint in the bucket is skipped and said so, and the losses equal
the uninterrupted reference run's (tests/conftest.py `reference_run`: the same 8-step schedule
on local disk)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import fsspec
import pytest

from orchestrator.run import checkpoint as ckpt
from orchestrator.store import Store
from orchestrator.store.home import Home
from tests.reliability.conftest import events
from tests.e2e.test_train import _losses


@pytest.mark.slow
def test_checkpoints_in_a_bucket_survive_a_worker_sigkill(train_home, reference_run, ray_local,
                                                          s3_server, tmp_path, monkeypatch):
    from orchestrator.run.launcher import train
    from orchestrator.run.spec import RunSpec

    monkeypatch.chdir(tmp_path)  # a local folder named "s3:" would appear here
    storage = f"{s3_server}/team"
    req = RunSpec(preset="tiny", workers=2, max_steps=8, tokens=8 * 1024, batch_tokens=1024,
                micro_batch=2, checkpoint_every=2, warmup_steps=2, lr=3e-3, seed=3,
                meter=False, dashboard=False, max_failures=2, storage=storage)
    home = Home(train_home)
    result: dict = {}
    started: dict = {}
    thread = threading.Thread(target=lambda: result.update(
        train(Store(home.db_url), home, req, on_start=started.update)))
    thread.start()
    deadline = time.time() + 480
    while "run_id" not in started and time.time() < deadline:
        time.sleep(0.05)
    run_id = started["run_id"]
    root = f"{storage}/{run_id}/checkpoints"
    s3 = fsspec.filesystem("s3", skip_instance_cache=True)
    pid_file = Path(started["run_dir"]) / "workers" / "rank1.pid"

    def steps() -> list[int]:
        return [s for s, _ in _losses(train_home, run_id)]

    while not steps() and time.time() < deadline:  # the first worker group has looked for one
        time.sleep(0.05)
    # a save of step 8 cut short (shards, no COMPLETE.json): the restarted group must pass it by
    half = f"{root.split('://', 1)[1]}/step-00000008"
    s3.pipe_file(f"{half}/__0_0.distcp", b"\x00" * 4096)
    s3.pipe_file(f"{half}/.metadata", b"cut short")
    while time.time() < deadline and not (steps() and max(steps()) >= 3 and pid_file.exists()):
        time.sleep(0.05)
    killed_at_step = max(steps())
    victim = int(pid_file.read_text())
    os.kill(victim, signal.SIGKILL)
    thread.join(timeout=600)
    assert not thread.is_alive()
    assert result["status"] == "completed", result
    assert result["storage_path"] == f"{storage}/{run_id}"  # the URI, not a local path
    # resumed from the bucket's newest complete checkpoint, with the same losses as the
    # uninterrupted reference (local disk), no step lost or repeated
    got, want = _losses(train_home, run_id), _losses(train_home, reference_run["id"])
    assert [s for s, _ in got] == [s for s, _ in want] == list(range(1, 9))
    for (step, a), (_, b) in zip(got, want):
        assert a == pytest.approx(b, rel=1e-6), (step, a, b)
    resumes = [e.details["step"] for e in events(train_home, run_id, "resume")]
    assert resumes and resumes[-1] in (2, 4, 6) and resumes[-1] <= killed_at_step + 1
    assert events(train_home, run_id, "resume")[-1].details["path"].startswith(root)
    skipped = [e.details for e in events(train_home, run_id, "checkpoint-skipped")]
    assert [(s["path"], "COMPLETE.json" in s["reason"]) for s in skipped] == \
        [(f"{root}/step-00000008", True)]
    assert int(pid_file.read_text()) != victim
    # in the bucket: the three newest complete checkpoints (--keep-last 3), step 8 rewritten
    assert [s for s, _ in ckpt.complete_steps(root)] == [8, 6, 4]
    assert ckpt.verify(f"{root}/step-00000008") is None
    s3.invalidate_cache()
    assert not [k for k in s3.find(root.split("://", 1)[1]) if ".tmp" in k]
    assert not (tmp_path / "s3:").exists()
    assert not list(Path(started["run_dir"]).glob("**/*.distcp"))  # local: pid files, no shards
