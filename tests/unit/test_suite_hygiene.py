"""The suite itself: `make test` leaves the checkout as it found it."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_reliability_figures_are_written_outside_the_checkout(monkeypatch):
    import importlib

    from tests.reliability import _record

    monkeypatch.delenv("TALLY_RECORD_RELIABILITY", raising=False)
    assert ROOT not in importlib.reload(_record).RESULTS.resolve().parents
    monkeypatch.setenv("TALLY_RECORD_RELIABILITY", "1")
    assert importlib.reload(_record).RESULTS == ROOT / "bench" / "results" / "reliability.json"
    monkeypatch.delenv("TALLY_RECORD_RELIABILITY")
    importlib.reload(_record)
