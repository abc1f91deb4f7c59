"""`fit NAME --points FILE.csv`: a law from runs trained elsewhere, stored like any other fit and
usable by `plan --fit NAME`; bad rows named by file and line."""

from __future__ import annotations

import numpy as np
import pytest

TRUE = {"E": 1.8, "A": 400.0, "B": 500.0, "alpha": 0.34, "beta": 0.28}


def _write_points(path, noise: float = 0.002, seed: int = 1) -> None:
    """5 sizes x 6 token counts from TRUE, with multiplicative noise on the loss."""
    rng = np.random.default_rng(seed)
    lines = ["name,params,tokens,loss"]
    for n in np.geomspace(2e7, 2e9, 5):
        for d in np.geomspace(2e8, 2e11, 6):
            loss = TRUE["E"] + TRUE["A"] / n ** TRUE["alpha"] + TRUE["B"] / d ** TRUE["beta"]
            loss *= 1 + noise * rng.standard_normal()
            lines.append(f"run-{n:.3g}-{d:.3g},{n:.6g},{d:.6g},{loss:.6f}")
    path.write_text("\n".join(lines) + "\n")


def test_fit_from_points_recovers_the_law_and_plans_with_it(home, run_cli, tmp_path):
    csv = tmp_path / "elsewhere.csv"
    _write_points(csv)
    r = run_cli("fit", "elsewhere", "--points", str(csv), "--bootstrap", "0", "--json")
    assert r.code == 0, r.stderr
    fit = r.json()
    c = fit["constants"]
    assert c["alpha"] == pytest.approx(TRUE["alpha"], abs=0.03)
    assert c["beta"] == pytest.approx(TRUE["beta"], abs=0.03)
    assert c["E"] == pytest.approx(TRUE["E"], abs=0.05)
    assert fit["details"]["n_runs"] == 30 and fit["details"]["source"]["rows"] == 30
    assert fit["details"]["run_ids"][0].startswith("run-")
    # stored: `fit --show` and `plan --fit NAME` read it back
    assert run_cli("fit", "elsewhere", "--show", "--json").json()["constants"] == c
    plan = run_cli("plan", "--target-perf", "2.3", "--fit", "elsewhere", "--no-presets", "--json")
    assert plan.code == 0, plan.stderr
    assert plan.json()["fit"]["name"] == "elsewhere"


def test_bad_points_are_named_by_line(home, run_cli, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("params,tokens,loss\n1e8,2e9,3.1\n2e8,lots,2.9\n")
    r = run_cli("fit", "x", "--points", str(bad))
    assert r.code == 2 and "line 3" in r.stderr and "tokens 'lots'" in r.stderr
    assert "Traceback" not in r.stderr
    bad.write_text("params,tokens,loss\n1e8,2e9,-3\n")
    r = run_cli("fit", "x", "--points", str(bad))
    assert r.code == 2 and "line 2" in r.stderr and "loss" in r.stderr
    bad.write_text("params,loss\n1e8,3\n")
    r = run_cli("fit", "x", "--points", str(bad))
    assert r.code == 2 and "lacks tokens" in r.stderr
    r = run_cli("fit", "x", "--points", str(tmp_path / "none.csv"))
    assert r.code == 2 and "no such file" in r.stderr
