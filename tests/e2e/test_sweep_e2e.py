"""A real sweep end to end: `sweep` trains a small ladder through `train_run` (Ray, the
store, metering) on the small stdlib dataset, a second `sweep` trains nothing new, and `fit` on
its two runs refuses with the reason (a fit needs six: fitting stored runs, and ladders over
several budgets, are tested on synthetic runs in tests/unit/test_fit_cli.py and
test_fitting.py; each real run here costs a Ray Train worker group)."""

from __future__ import annotations

import pytest

from orchestrator.scaling.fits import final_val_loss
from orchestrator.store.home import Home
from orchestrator.store import Store
from tests.e2e.test_train import tcli  # noqa: F401 (fixture)

# 1 budget x 2 sizes, 2 sequences of 256 tokens a step: 6 and 9 steps at vocabulary 2048.
SWEEP = ("sweep", "--budgets", "2e9", "--sizes", "2", "--batch-tokens", "512",
         "--lr", "3e-3", "--json")


@pytest.mark.slow
def test_real_sweep_trains_resumes_and_fits_or_refuses(tcli, train_home):
    first = tcli(*SWEEP)
    assert first.code == 0, first.stderr
    out = first.json()
    points = out["points"]
    assert len(points) == 2 and out["todo"] == 0 and out["done"] == 2
    assert out["assumptions"]["vocab_size"] == 2048  # read from the data set's tokenizer
    assert [p["status"] for p in points] == ["trained"] * 2
    assert len({p["params"] for p in points}) == 2 and {p["budget_flops"] for p in points} == {2e9}
    store = Store(Home(train_home).db_url)
    try:
        for p in points:
            ev = final_val_loss(store, p["run_id"])  # the trainer's own "eval" event
            assert ev is not None and ev["val_loss"] == p["val_loss"]
            assert 0 < ev["val_loss"] < 10 and ev["tokens"] == p["tokens"]
            assert ev["params"] == p["params"]
            run = store.get_run(p["run_id"])
            assert run.status == "completed" and run.config["sweep"]["id"] == out["sweep_id"]
            assert run.config["spec"]["custom_preset"]["args"]["vocab_size"] == 2048
    finally:
        store.close()

    before = {r["id"] for r in tcli("runs", "--json").json()}
    assert {p["run_id"] for p in points} <= before
    again = tcli(*SWEEP)  # resumable: everything is done, nothing is trained
    assert again.code == 0, again.stderr
    redo = again.json()
    assert redo["sweep_id"] == out["sweep_id"] and redo["done"] == 2 and redo["todo"] == 0
    assert [p["status"] for p in redo["points"]] == ["done"] * 2
    assert [p["run_id"] for p in redo["points"]] == [p["run_id"] for p in points]
    assert {r["id"] for r in tcli("runs", "--json").json()} == before  # no run was started

    fit = tcli("fit", "e2e", "--sweep", out["sweep_id"], "--bootstrap", "5", "--json")
    assert fit.code == 2 and "at least 6 runs" in fit.stderr and "Traceback" not in fit.stderr
    assert len(fit.stderr.strip().splitlines()) == 1
