"""Evaluation during training without Ray: the spec's two fields, the items the driver sends,
a worker's share of the items (sharding sums to the whole), the "eval-tasks" event into the
store (and out again on resume), `runs show`, `report run` and its plot."""

from __future__ import annotations

from datetime import datetime

import pytest

from orchestrator.eval import scoring
from orchestrator.eval.during import evaluate_shard, items_for_run
from orchestrator.eval.readers import load_tasks
from orchestrator.run.events import record_event
from orchestrator.run.spec import RunSpec
from planners.errors import BadInput
from tests.conftest import assert_bad_input
from tests.report_data import cpu_run
from tests.unit.eval_fixtures import TASKS, TINY, eval_tokenizer, tiny_model  # noqa: F401

FILES = f"{TASKS / 'science_qa.jsonl'},{TASKS / 'yes_no.jsonl'}"


def test_spec_fields_and_the_items_sent_to_the_workers(run_cli, home):
    with pytest.raises(BadInput, match="--eval-every N and --eval-tasks FILE go together"):
        items_for_run(RunSpec(preset="tiny", eval_every=2).validate())
    with pytest.raises(BadInput, match="--eval-every must be >= 1"):
        RunSpec(preset="tiny", eval_every=0, eval_tasks=FILES).validate()
    spec = RunSpec(preset="tiny", eval_every=2, eval_tasks=FILES).validate()
    items = items_for_run(spec)
    assert len(items) == 44 and items[0]["task"] == "science_qa"
    assert items_for_run(RunSpec(preset="tiny")) is None
    assert "--eval-every" in run_cli("train", "--help").stdout
    # a bad task file, or one option without the other, is refused before anything starts
    assert_bad_input(run_cli("train", "tiny", "--eval-tasks", FILES), "go together")
    assert_bad_input(run_cli("train", "tiny", "--eval-every", "2", "--eval-tasks",
                             home / "none.jsonl"), "not found")


def test_the_shards_sum_to_the_whole(eval_tokenizer, tiny_model):
    spec = RunSpec(preset="tiny", eval_every=1, eval_tasks=FILES)
    items = items_for_run(spec)[18:30]  # science_qa's last 6, yes_no's first 6
    whole = evaluate_shard(tiny_model, eval_tokenizer.path, items, rank=0, world=1,
                           device="cpu", max_len=TINY.max_seq_len)
    counts, _ = scoring.score_items(tiny_model, eval_tokenizer,
                                    load_tasks(FILES.split(","))[18:30], max_len=TINY.max_seq_len)
    assert whole == [{k: r[k] for k in ("task", "n", "acc", "acc_norm")}
                     for r in scoring.summarize(counts)]
    # without a process group each rank returns its own share: together they are the whole
    parts = [evaluate_shard(tiny_model, eval_tokenizer.path, items, rank=r, world=3,
                            device="cpu", max_len=TINY.max_seq_len) for r in range(3)]
    for i, task in enumerate(("science_qa", "yes_no")):
        assert sum(p[i]["n"] for p in parts) == whole[i]["n"]
        assert sum(p[i]["acc"] * p[i]["n"] for p in parts) == pytest.approx(
            whole[i]["acc"] * whole[i]["n"])


def test_eval_tasks_events_are_stored_shown_reported_and_plotted(home, run_cli, tmp_path):
    from orchestrator.store import open_store
    from orchestrator.store.home import Home

    store = open_store(None, Home.resolve())
    run_id = cpu_run(store)
    for step, acc in ((40, 0.25), (80, 0.5), (120, 0.625)):
        record_event(store, run_id, {"type": "eval-tasks", "step": step, "tokens": step * 2048,
                                     "time": datetime(2025, 11, 20, 9).isoformat(),
                                     "tasks": [{"task": "science_qa", "n": 24, "acc": acc,
                                                "acc_norm": acc / 2},
                                               {"task": "yes_no", "n": 20, "acc": 0.5,
                                                "acc_norm": 0.55}]})
    with pytest.raises(BadInput, match="eval-tasks event lacks acc_norm"):
        record_event(store, run_id, {"type": "eval-tasks", "step": 1, "tokens": 1,
                                     "tasks": [{"task": "x", "n": 1, "acc": 1.0}]})
    shown = run_cli("runs", "show", run_id, "--json").json()["eval_tasks"]
    assert len(shown) == 6 and shown[0] == {"step": 40, "tokens": 81920, "task": "science_qa",
                                            "n": 24, "acc": 0.25, "acc_norm": 0.125}
    human = run_cli("runs", "show", run_id).stdout
    assert "evaluation during training" in human and "62.5" in human
    png = tmp_path / "run.png"
    doc = run_cli("report", "run", run_id, "--plot", png, "--json").json()
    assert doc["series"]["eval_tasks"]["science_qa"]["acc"] == [0.25, 0.5, 0.625]
    assert doc["series"]["eval_tasks"]["science_qa"]["tokens"] == [81920, 163840, 245760]
    assert png.read_bytes()[:4] == b"\x89PNG"
    text = run_cli("report", "run", run_id).stdout
    assert "science_qa acc" in text and "62.5% at 245,760" in text
    # the same step again replaces its rows; a resume from step 80 drops the scores after it
    record_event(store, run_id, {"type": "eval-tasks", "step": 120, "tokens": 245760,
                                 "tasks": [{"task": "science_qa", "n": 24, "acc": 0.75,
                                            "acc_norm": 0.5}]})
    assert [r["acc"] for r in run_cli("runs", "show", run_id, "--json").json()["eval_tasks"]
            if r["step"] == 120] == [0.75]
    record_event(store, run_id, {"type": "resumed", "step": 80})
    assert {r["step"] for r in run_cli("runs", "show", run_id, "--json").json()["eval_tasks"]} \
        == {40, 80}
    store.close()
