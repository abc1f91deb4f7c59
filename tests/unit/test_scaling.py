"""The loss law and its fits, against the published checks in reference/scaling.md."""

from __future__ import annotations

import math

import pytest

from orchestrator.store import Fit, Store
from planners.errors import BadInput
from planners.scaling import CHINCHILLA, EPOCH, LossLaw, parse_constants, resolve_fit
from planners.sizing import chinchilla_point, inference_optimal


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def test_chinchilla_loss_at_70b_1t():
    assert CHINCHILLA.loss(70e9, 1e12) == pytest.approx(1.947273, abs=1e-6)


def test_published_1947_check():
    """Target 1.947, D_inf = 2e12: Chinchilla N 3.408e10, D 1.810e12 (5.065e23 FLOPs in all);
    inference-aware N 2.418e10, D 2.657e12 (4.823e23, 95.2% of Chinchilla's)."""
    chin = chinchilla_point(CHINCHILLA, 1.947)
    assert rel(chin.params, 3.408e10) < 1e-3 and rel(chin.tokens, 1.810e12) < 1e-3
    chin_total = 6 * chin.params * chin.tokens + 2 * chin.params * 2e12
    assert rel(chin_total, 5.065e23) < 1e-3
    opt = inference_optimal(CHINCHILLA, 1.947, 2e12)
    assert rel(opt.params, 2.418e10) < 5e-3 and rel(opt.tokens, 2.657e12) < 5e-3
    total = 6 * opt.params * opt.tokens + 2 * opt.params * 2e12
    assert rel(total, 4.823e23) < 5e-3
    assert total / chin_total == pytest.approx(0.952, abs=5e-4)
    assert CHINCHILLA.loss(opt.params, opt.tokens) == pytest.approx(1.947, abs=1e-9)


def test_13b_to_7b_example():
    """Sardana & Frankle fig. 1: a Chinchilla-optimal 13B's quality at 2T inference tokens is
    reached by about 7B (6.97e9) trained longer, saving about 1.7e22 FLOPs (17%)."""
    a, b = CHINCHILLA.alpha, CHINCHILLA.beta
    target = CHINCHILLA.E + CHINCHILLA.A * (1 + a / b) / 13e9 ** a  # loss of the 13B optimum
    chin = chinchilla_point(CHINCHILLA, target)
    assert rel(chin.params, 13e9) < 1e-9
    opt = inference_optimal(CHINCHILLA, target, 2e12)
    assert rel(opt.params, 6.97e9) < 5e-3
    cost = lambda p: 6 * p.params * p.tokens + 2 * p.params * 2e12  # noqa: E731
    saved = cost(chin) - cost(opt)
    assert rel(saved, 1.7e22) < 0.02
    assert saved / cost(chin) == pytest.approx(0.17, abs=0.006)


def test_named_and_typed_fits():
    assert resolve_fit(None) is CHINCHILLA and resolve_fit("Chinchilla") is CHINCHILLA
    assert resolve_fit("epoch") is EPOCH
    law = resolve_fit("beta=0.283, alpha=0.336,E=1.69,a=406.4,B=410.7")
    assert law.constants() == CHINCHILLA.constants() and law.name == "custom"
    assert law.loss(70e9, 1e12) == pytest.approx(1.947273, abs=1e-6)
    assert "0.34" in CHINCHILLA.source  # the paper's rounded exponents are named


@pytest.mark.parametrize("text,needle", [
    ("E=1.69,A=406.4,B=410.7,alpha=0.336", "beta"),
    ("E=1.69,A=406.4,B=410.7,alpha=0.336,beta=x", "beta=x"),
    ("E=1.69,A=-4,B=410.7,alpha=0.336,beta=0.283", "A, B, alpha, beta > 0"),
    ("E=1.69,A=1,A=2,B=410.7,alpha=0.336,beta=0.283", "all five once"),
    ("gamma=1,E=1.69,A=406.4,B=410.7,alpha=0.336", "all five once"),
])
def test_bad_constants(text, needle):
    with pytest.raises(BadInput) as e:
        parse_constants(text)
    assert needle in str(e.value)


def test_unknown_fit_lists_names():
    with pytest.raises(BadInput) as e:
        resolve_fit("hoffmann")
    assert "chinchilla" in str(e.value) and "epoch" in str(e.value) and "E=1.69" in str(e.value)


def test_stored_fit_from_a_real_store(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'tally.db'}")
    with store.write() as s:
        s.add(Fit(name="ours", constants={"E": 2.0, "A": 300.0, "B": 500.0, "alpha": 0.3,
                                          "beta": 0.3}, details={"runs": ["r1", "r2"]}))
        s.add(Fit(name="broken", constants={"E": 2.0}, details={}))
    law = resolve_fit("ours", store)
    assert isinstance(law, LossLaw) and law.name == "ours"
    assert law.loss(1e9, 1e10) == pytest.approx(2.0 + 300 / 1e9 ** 0.3 + 500 / 1e10 ** 0.3)
    with pytest.raises(BadInput) as e:
        resolve_fit("theirs", store)
    assert "ours" in str(e.value) and "chinchilla" in str(e.value)
    with pytest.raises(BadInput, match="alpha"):
        resolve_fit("broken", store)
    # already-loaded constants work without a store
    assert resolve_fit("x", fits={"x": {"E": 1, "A": 2, "B": 3, "alpha": 0.5,
                                         "beta": 0.5}}).loss(4, 9) == pytest.approx(3.0)
    store.close()


def test_loss_decreases_in_both_arguments():
    for law in (CHINCHILLA, EPOCH):
        assert law.loss(1e9, 1e11) > law.loss(2e9, 1e11) > law.loss(2e9, 2e11) > law.E
        assert math.isclose(law.loss(1e30, 1e30), law.E, rel_tol=1e-6)
