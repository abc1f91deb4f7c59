"""`train --eval-every` through Ray for real: 2 FSDP2 workers score the task files at their
checkpoints, each its share of the items, and the summed counts land in the store; the last
one agrees with `eval` on the same checkpoint afterwards."""

from __future__ import annotations

import pytest

from tests.conftest import FAST
from tests.unit.eval_fixtures import TASKS

FILES = f"{TASKS / 'science_qa.jsonl'},{TASKS / 'yes_no.jsonl'}"


@pytest.mark.slow
def test_eval_every_stores_rows_from_two_workers(tcli_session):
    res = tcli_session("train", "tiny", *FAST, "--workers", "2", "--max-steps", "4",
                       "--checkpoint-every", "4", "--eval-every", "2", "--eval-tasks", FILES,
                       "--json")
    assert res.code == 0, res.stderr
    run_id = res.json()["id"]
    shown = tcli_session("runs", "show", run_id, "--json").json()
    rows = shown["eval_tasks"]
    assert [(r["step"], r["task"], r["n"]) for r in rows] == [
        (2, "science_qa", 24), (2, "yes_no", 20), (4, "science_qa", 24), (4, "yes_no", 20)]
    assert rows[0]["tokens"] == 2 * 1024 and all(0 <= r["acc"] <= 1 for r in rows)
    assert [c["step"] for c in shown["checkpoints"]] == [2, 4]  # --eval-every checkpoints too
    after = tcli_session("eval", run_id, "--step", "4", "--tasks", FILES, "--json").json()
    assert [(t["task"], t["n"], t["acc"], t["acc_norm"]) for t in after["tasks"]] == \
        [(r["task"], r["n"], r["acc"], r["acc_norm"]) for r in rows[2:]]
