"""tests/unit is what `make test-fast` runs: no Ray, no training. Starting Ray here fails the
test that tried (the end-to-end suites live in tests/e2e and tests/reliability)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def no_ray(monkeypatch):
    import ray

    def refuse(*args, **kwargs):
        raise AssertionError("a unit test started Ray: move it to tests/e2e")

    monkeypatch.setattr(ray, "init", refuse)
