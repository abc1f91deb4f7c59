"""`sweep`, `fit`, `fits` through the CLI, on a real SQLite store holding runs with "eval" events
(the record the trainer writes at the end of each run)."""

from __future__ import annotations

import sys
import types

import matplotlib.image
import numpy as np
import pytest

from orchestrator.scaling.fits import final_val_loss, load_fit
from orchestrator.store.home import Home
from orchestrator.store import open_store
from orchestrator.scaling.sweep import point_key
from planners.fitting import interval_laws, predict
from planners.isoflop import isoflop_ladder
from tests.conftest import assert_bad_input

LAW = {"E": 2.2, "A": 60.0, "B": 900.0, "alpha": 0.30, "beta": 0.38}
BUDGETS = "1e13,3e13,1e14"


_OPEN = []


def _store():
    store = open_store(None, Home.resolve())
    _OPEN.append(store)
    return store


@pytest.fixture(autouse=True)
def _close_stores():
    """Close the stores a test opened, so no engine is left for the garbage collector to close
    (and checkpoint its WAL) in the middle of a later test."""
    yield
    while _OPEN:
        _OPEN.pop().close()


def _sweep_id(run_cli, *extra):
    r = run_cli("sweep", "--budgets", BUDGETS, "--sizes", "4", "--dry-run", "--json", *extra)
    assert r.code == 0, r.stderr
    return r.json()


def _record_runs(store, sid, noise=0.003, seed=0, eval_=True, status="completed"):
    """Runs as the sweep + trainer leave them: config['sweep'] and a final 'eval' event."""
    rng = np.random.default_rng(seed)
    ids = []
    for p in isoflop_ladder([1e13, 3e13, 1e14], 4):
        run = store.create_run("sweep", {"sweep": point_key(sid, p, "demo", 0)}, status=status)
        if eval_:
            loss = float(predict(LAW, p.params, p.tokens)) * float(np.exp(rng.normal(0, noise)))
            store.add_event(run.id, "eval", step=p.steps, tokens=p.tokens, val_loss=loss,
                            params=p.params)
        ids.append(run.id)
    return ids


def test_sweep_dry_run_then_resume_after_runs_finish(home, run_cli):
    info = _sweep_id(run_cli)
    assert info["dry_run"] and info["todo"] == len(info["points"]) >= 9 and info["done"] == 0
    assert info["predicted_time_s_left"] == pytest.approx(
        sum(p["flops"] for p in info["points"]) / 1.5e11)
    assert info["sweep_id"] == _sweep_id(run_cli)["sweep_id"]  # same command, same sweep
    assert info["sweep_id"] != _sweep_id(run_cli, "--seed", "1")["sweep_id"]
    ids = _record_runs(_store(), info["sweep_id"])
    again = _sweep_id(run_cli)
    assert again["todo"] == 0 and again["done"] == len(ids)
    assert {p["run_id"] for p in again["points"]} == set(ids)
    human = run_cli("sweep", "--budgets", BUDGETS, "--sizes", "4", "--dry-run")
    assert "0 to train" in human.stdout and "1.5e+11 FLOP/s" in human.stdout


def test_sweep_trains_only_what_is_left_through_train_run(home, run_cli, monkeypatch):
    """The sweep loop's bookkeeping alone, fast: a stand-in train_run with the launcher's
    signature records a run the way the trainer does (tests/test_sweep_e2e.py trains for real)."""
    calls = []

    def train_run(store, preset, tokens, *, data, seed, config_extra, name, home=None):
        calls.append((preset.args.dim, tokens))
        run = store.create_run(preset.name, {"data": data, "seed": seed, **config_extra},
                               name=name, status="completed")
        store.add_event(run.id, "eval", step=tokens // preset.batch_tokens, tokens=tokens,
                        val_loss=float(predict(LAW, preset.params, tokens)), params=preset.params)
        return run.id

    monkeypatch.setitem(sys.modules, "orchestrator.run.launcher",
                        types.SimpleNamespace(train_run=train_run))
    sid = _sweep_id(run_cli)["sweep_id"]
    store = _store()
    ladder = isoflop_ladder([1e13, 3e13, 1e14], 4)
    done = [i for i, p in zip(_record_runs(store, sid), ladder) if p.budget_flops == 1e13]
    assert len(done) == 4  # the first budget's ladder already finished
    with store.write() as s:  # ...but pretend the rest never happened
        from orchestrator.store import Run
        for run in s.query(Run).all():
            if run.id not in done:
                s.delete(run)
    r = run_cli("sweep", "--budgets", BUDGETS, "--sizes", "4", "--json")
    assert r.code == 0, r.stderr
    out = r.json()
    assert len(calls) == len(out["points"]) - 4 == 8
    assert [p["status"] for p in out["points"]] == ["done"] * 4 + ["trained"] * 8
    assert out["todo"] == 0 and all(p["val_loss"] for p in out["points"])
    assert run_cli("sweep", "--budgets", BUDGETS, "--sizes", "4", "--json").code == 0
    assert len(calls) == 8  # nothing redone


def test_fit_from_sweep_stores_show_list_and_plot(home, run_cli, tmp_path):
    sid = _sweep_id(run_cli)["sweep_id"]
    _record_runs(_store(), sid)
    png = tmp_path / "fit.png"
    r = run_cli("fit", "mine", "--sweep", sid, "--bootstrap", "10", "--plot", png, "--json")
    assert r.code == 0, r.stderr
    out = r.json()
    c = out["constants"]
    assert set(c) == {"E", "A", "B", "alpha", "beta"}
    assert out["details"]["n_runs"] == 12 and len(out["details"]["residuals"]) == 12
    assert abs(out["details"]["exponents"]["a"] - c["beta"] / (c["alpha"] + c["beta"])) < 1e-12
    assert "bootstrap" not in out["details"] and out["details"]["n_bootstrap"] == 10
    assert all(abs(x["residual_pct"]) < 3 for x in out["details"]["residuals"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.image.imread(png).shape[0] > 200
    stored = load_fit(_store(), "mine")
    assert stored["constants"] == c and len(stored["details"]["bootstrap"]) == 10
    assert len(interval_laws(stored["details"], budget_flops=1e15)) == 3
    shown = run_cli("fit", "mine", "--show", "--json").json()
    assert shown["constants"] == c
    listing = run_cli("fits", "--json").json()
    assert [f["name"] for f in listing] == ["mine"]
    human = run_cli("fit", "mine", "--show")
    assert "a = beta/(alpha+beta)" in human.stdout and "residuals" in human.stdout
    again = run_cli("fit", "mine", "--sweep", sid, "--bootstrap", "0", "--json").json()
    assert again["replaced"] is True and again["details"]["intervals"] == {}


def test_fit_by_run_ids_and_final_val_loss_takes_newest_eval(home, run_cli):
    store = _store()
    ids = _record_runs(store, "sweep-x")
    store.add_event(ids[0], "eval", step=1, tokens=5, val_loss=1.0, params=7)
    assert final_val_loss(store, ids[0])["val_loss"] == 1.0
    r = run_cli("fit", "byid", "--runs", ",".join(ids[1:]), "--bootstrap", "0", "--json")
    assert r.code == 0, r.stderr
    assert r.json()["details"]["run_ids"] == ids[1:]


def test_fit_holdout_predicts_left_out_runs(home, run_cli):
    ids = _record_runs(_store(), "sweep-h", noise=0.002)
    r = run_cli("fit", "h", "--runs", ",".join(ids), "--holdout", f"{ids[2]},{ids[6]}",
                "--bootstrap", "0", "--json")
    assert r.code == 0, r.stderr
    d = r.json()["details"]
    assert d["n_runs"] == len(ids) - 2 and ids[2] not in d["run_ids"]
    assert [x["run_id"] for x in d["holdout"]] == [ids[2], ids[6]]
    assert all(abs(x["error_pct"]) < 3 for x in d["holdout"])
    assert_bad_input(run_cli("fit", "h", "--runs", ",".join(ids[1:]), "--holdout", ids[0]),
                     "--holdout run")


def test_fit_bad_input(home, run_cli):
    store = _store()
    assert_bad_input(run_cli("fit", "nope", "--show"), "no fit named 'nope'", "none yet")
    ids = _record_runs(store, "sweep-a")
    no_eval = _record_runs(store, "sweep-b", eval_=False)
    assert_bad_input(run_cli("fit", "f", "--runs", ",".join(ids[:4])), "at least 6 runs", "got 4")
    assert_bad_input(run_cli("fit", "f", "--runs", ",".join(ids[:5] + no_eval[:2])),
                     "2 run(s) have no validation loss", no_eval[0])
    assert_bad_input(run_cli("fit", "f", "--runs", ids[0] + ",ghost"), "no run with id 'ghost'")
    assert_bad_input(run_cli("fit", "f", "--sweep", "sweep-zzz"), "no runs belong to sweep")
    one_budget = [i for i, p in zip(ids, isoflop_ladder([1e13, 3e13, 1e14], 4))
                  if p.budget_flops == 1e14]
    extra = store.create_run("x", {})  # a fifth point on the same budget
    store.add_event(extra.id, "eval", step=1, tokens=1e14 / 6 / 4e6, val_loss=3.0, params=4e6)
    dup = store.create_run("x", {})
    store.add_event(dup.id, "eval", step=1, tokens=1e14 / 6 / 5e6, val_loss=3.0, params=5e6)
    assert_bad_input(run_cli("fit", "f", "--runs", ",".join(one_budget + [extra.id, dup.id])),
                     "one compute budget")
    run_cli("fit", "kept", "--runs", ",".join(ids), "--bootstrap", "0")
    assert_bad_input(run_cli("fit", "other", "--show"), "no fit named 'other'", "kept")
    assert_bad_input(run_cli("fit", "bad name!", "--runs", ",".join(ids)), "fit name")
    assert_bad_input(run_cli("fit", "f", "--runs", ",".join(ids), "--sweep", "sweep-a"), "not both")
    assert_bad_input(run_cli("fit", "kept", "--show", "--plot", "x.jpg"), ".png")
    assert_bad_input(run_cli("sweep", "--budgets", "1e14,lots", "--dry-run"), "budget 'lots'")
    assert_bad_input(run_cli("sweep", "--budgets", "1e14", "--sizes", "0", "--dry-run"), "--sizes")


def test_fits_empty_listing(home, run_cli):
    assert run_cli("fits", "--json").json() == []
    assert "No fits yet" in run_cli("fits").stdout


def test_sweep_without_a_launcher_fails_at_run_time(home, monkeypatch):
    from orchestrator.scaling.sweep import run_sweep
    from planners.errors import RunFailed

    monkeypatch.setitem(sys.modules, "orchestrator.run.launcher", None)  # import raises ImportError
    with pytest.raises(RunFailed, match="training is not available.*--dry-run"):
        run_sweep(_store(), [1e13, 3e13], 3)
