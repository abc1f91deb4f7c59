"""`train --eval-every` through Ray for real: the reference run's 2 FSDP2 workers score two
shipped task files at steps 4 and 8 (tests/conftest.py `reference_run`), each its share of the
items, and the summed counts land in the store; the last agrees with `eval` on the same
checkpoint afterwards."""

from __future__ import annotations

import pytest

from tests.conftest import EVAL_TASKS


@pytest.mark.slow
def test_eval_every_stores_rows_from_two_workers(tcli_session, reference_run):
    run_id = reference_run["id"]
    shown = tcli_session("runs", "show", run_id, "--json").json()
    rows = shown["eval_tasks"]
    assert [(r["step"], r["task"], r["n"]) for r in rows] == [
        (4, "science_qa", 24), (4, "yes_no", 20), (8, "science_qa", 24), (8, "yes_no", 20)]
    assert rows[0]["tokens"] == 4 * 1024 and all(0 <= r["acc"] <= 1 for r in rows)
    assert [c["step"] for c in shown["checkpoints"]] == [2, 4, 6, 8]  # evaluated at checkpoints
    after = tcli_session("eval", run_id, "--step", "8", "--tasks", EVAL_TASKS, "--json").json()
    assert [(t["task"], t["n"], t["acc"], t["acc_norm"]) for t in after["tasks"]] == \
        [(r["task"], r["n"], r["acc"], r["acc_norm"]) for r in rows[2:]]
