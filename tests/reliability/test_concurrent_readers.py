"""The store under concurrent readers: while the reference run writes its steps, two other
processes run `runs --json` and `report carbon --json` in a loop (see conftest.reference).
No reader errs, every read is one JSON document, and no row is lost."""

from __future__ import annotations

import json

import pytest

from tests.reliability._record import record
from tests.reliability.conftest import STEPS


@pytest.mark.slow
def test_readers_never_fail_and_see_rows_only_grow(reference):
    run_id = reference["run_id"]
    reads = reference["reads"]
    assert len(reads["runs"]) >= 2 and len(reads["report"]) >= 2, {k: len(v) for k, v in reads.items()}
    seen = []
    for _, code, out, err in reads["runs"] + reads["report"]:
        assert code == 0 and "Traceback" not in err, err
        json.loads(out)  # exactly one JSON document
    for _, _, out, _ in sorted(reads["runs"]):
        row = next((r for r in json.loads(out) if r["id"] == run_id), None)
        if row is not None:
            seen.append(row["steps"])
    assert seen == sorted(seen), seen  # a reader never sees a row vanish
    assert [s for s, _ in reference["losses"]] == list(range(1, STEPS + 1))
    record("concurrent-readers", readers=2, reads=len(reads["runs"]) + len(reads["report"]),
           reader_errors=0, steps_seen_by_runs_reader=seen, rows_lost=0)
