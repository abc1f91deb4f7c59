"""Export of a run trained by two Ray workers, read by transformers; and `train --init-from`
through Ray (two FSDP2 workers, each keeping its shard) giving back the exported weights.

Reuses the session's reference run (tests/conftest.py): 8 steps of `tiny` on 2 workers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from sqlalchemy import select

from orchestrator.store.home import Home
from orchestrator.store import RunEvent, Store
from tests.conftest import FAST

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # configs are built locally, never the Hub


@pytest.fixture
def tcli(run_cli, train_home, ray_local, monkeypatch):
    monkeypatch.setenv("TALLY_HOME", str(train_home))
    monkeypatch.delenv("TALLY_DB", raising=False)
    return run_cli


@pytest.mark.slow
def test_two_worker_run_exports_to_hf_and_comes_back_through_init_from(
        tcli, train_home, reference_run, tmp_path):
    from transformers import AutoTokenizer, LlamaForCausalLM

    from model.tokenizer import Tokenizer
    from orchestrator.data import open_dataset
    from orchestrator.run.export import read_model_state

    run_id = reference_run["id"]
    run_dir = Path(tcli("runs", "show", run_id, "--json").json()["run"]["storage_path"])
    manifest = json.loads((run_dir / "checkpoints" / "step-00000008" / "COMPLETE.json").read_text())
    assert manifest["world_size"] == 2
    res = tcli("export", run_id, "--format", "hf", "--out", tmp_path / "hf", "--dtype", "fp32",
               "--json")
    assert res.code == 0, res.stderr
    assert res.json()["step"] == 8
    hf = LlamaForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()

    # the validation loss the two workers measured at step 8, recomputed by transformers
    val = open_dataset("demo", home=Home(train_home), split="val")
    n = val.num_sequences(256)
    per_rank = 4 * 2 if n >= 16 else max(1, n // 2)
    batch = torch.from_numpy(val.get_batch(list(range(2 * per_rank)), 256))
    with torch.no_grad():
        logits = hf(input_ids=batch[:, :-1]).logits
    hf_loss = float(F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].reshape(-1)))
    store = Store(Home(train_home).db_url)
    with store.read() as s:
        ev = next(iter(s.scalars(select(RunEvent).where(RunEvent.run_id == run_id,
                                                        RunEvent.kind == "eval"))))
    assert hf_loss == pytest.approx(ev.details["val_loss"], rel=1e-5)
    tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    ours = Tokenizer(val.tokenizer_path)
    text = (Path(json.__file__).parent / "encoder.py").read_text()[:3000]
    assert tok(text)["input_ids"] == ours.encode(text, bos=True)

    # --init-from with no preset: the directory's shape (tiny's), on 2 workers, one step at a
    # negligible learning rate: its checkpoint holds the exported weights
    res = tcli("train", "--init-from", tmp_path / "hf", *FAST, "--workers", "2", "--max-steps",
               "1", "--lr", "1e-12", "--json")
    assert res.code == 0, res.stderr
    new = res.json()
    assert new["preset"] == "tiny"
    new_dir = Path(tcli("runs", "show", new["id"], "--json").json()["run"]["storage_path"])
    after = read_model_state(str(new_dir / "checkpoints" / "step-00000001"))
    before = read_model_state(str(run_dir / "checkpoints" / "step-00000008"))
    assert set(after) == set(before)
    for name, w in before.items():
        torch.testing.assert_close(after[name], w, atol=1e-9, rtol=0, msg=name)
