"""`eval` in-process: a run's checkpoint (and an older step), the same weights exported to a
Meta directory, the validation perplexity of the run's own dataset, the JSON document, and the
bad inputs (exit 2, one line naming the file and line)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from orchestrator.eval import scoring
from orchestrator.eval.readers import load_tasks
from orchestrator.store import Store
from orchestrator.store.home import Home
from tests.conftest import assert_bad_input
from tests.unit.eval_fixtures import TASKS, TINY, eval_tokenizer  # noqa: F401
from tests.unit.test_export import _make_run

FILES = [str(TASKS / "science_qa.jsonl"), str(TASKS / "yes_no.jsonl"), str(TASKS / "blanks.jsonl")]


@pytest.fixture
def run(home, eval_tokenizer, tmp_path):
    """A run with checkpoints at steps 2 and 4 of a tiny model, on a dataset with a val split."""
    from orchestrator.data import prepare

    home.mkdir(parents=True, exist_ok=True)
    src = Path(json.__file__).parent
    prepare([f"json={src}/*.py"], name="evalset", home=Home(home), tokenizer=eval_tokenizer.path,
            val_fraction=0.2)
    run_id, model, run_dir = _make_run(home, eval_tokenizer.path, args=TINY)
    store = Store(Home(home).db_url)
    cfg = store.get_run(run_id).config
    cfg["request"]["data"] = "evalset"
    cfg["seq_len"] = 32  # the launch plan's, as run_config stores it
    store.update_run(run_id, config=cfg)
    return run_id, model.eval(), home


def test_eval_a_run_scores_as_the_scorer_and_measures_perplexity(run, run_cli, eval_tokenizer):
    run_id, model, home = run
    res = run_cli("eval", run_id, "--tasks", ",".join(FILES), "--batch-size", "5", "--limit", "6",
                  "--json")
    assert res.code == 0, res.stderr
    doc = res.json()
    assert doc["source"]["step"] == 4 and [t["task"] for t in doc["tasks"]] == \
        ["science_qa", "yes_no", "blanks"]
    counts, _ = scoring.score_items(model, eval_tokenizer, load_tasks(FILES, limit=6),
                                    max_len=TINY.max_seq_len)
    assert doc["tasks"] == scoring.summarize(counts)
    assert doc["tasks"][0]["n"] == 6 and doc["items"] == 18
    assert doc["rows"] < doc["requests"]  # yes/no share rows
    # the perplexity: exp(mean loss) over the run's own validation split at its seq_len
    from orchestrator.data import open_dataset

    val = open_dataset("evalset", home=Home(home), split="val")
    n = val.num_sequences(32)
    with torch.no_grad():
        batch = torch.from_numpy(val.get_batch(list(range(n)), 32))
        loss = float(model(batch[:, :-1], batch[:, 1:]))
    assert doc["perplexity"] == pytest.approx(math.exp(loss), rel=1e-4)
    assert doc["validation"]["tokens"] == n * 32
    # an older step, a limit, the human rendering
    res = run_cli("eval", run_id, "--tasks", FILES[0], "--step", "2", "--limit", "5")
    assert res.code == 0, res.stderr
    assert f"run {run_id} step 2" in res.stdout and "science_qa" in res.stdout
    assert "validation perplexity" in res.stdout


def test_eval_an_exported_directory_matches_the_run(run, run_cli, tmp_path):
    run_id, _, _ = run
    out = tmp_path / "meta"
    assert run_cli("export", run_id, "--format", "meta", "--dtype", "fp32", "--out", out).code == 0
    # science_qa's items fit the run's 64-token context (Meta's params.json has no context
    # length: the directory's model reads up to 2048 tokens, so longer items would differ)
    a = run_cli("eval", run_id, "--tasks", FILES[0], "--json").json()
    b = run_cli("eval", out, "--tasks", FILES[0], "--json").json()
    assert b["source"]["kind"] == "dir" and b["tasks"] == a["tasks"]
    assert b["perplexity"] is None and "--data" in b["validation"]["absent"]
    c = run_cli("eval", out, "--tasks", FILES[0], "--data", "evalset", "--json").json()
    v = c["validation"]
    assert c["perplexity"] is None and "shorter than one sequence of 2048 tokens" in v["absent"]
    assert_bad_input(run_cli("eval", out, "--tasks", FILES[1], "--step", "2"), "--step", "directory")


def test_bad_eval_input(run, run_cli, tmp_path, home):
    run_id, _, _ = run
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"context": "a", "choices": ["x", "y"], "answer": 1}\n{"context": \n')
    assert_bad_input(run_cli("eval", run_id, "--tasks", f"{FILES[0]},{bad}"), f"{bad} line 2",
                     "malformed JSON")
    bad.write_text('{"context": "a", "choices": ["x", "y"], "answer": 5}\n')
    assert_bad_input(run_cli("eval", run_id, "--tasks", bad), f"{bad} line 1", "out of range")
    bad.write_text('{"context": "a", "choices": [], "answer": 0}\n')
    assert_bad_input(run_cli("eval", run_id, "--tasks", bad), f"{bad} line 1", "empty")
    assert_bad_input(run_cli("eval", run_id, "--tasks", FILES[0], "--format", "mmlu"),
                     "--format 'mmlu'", "tally")
    assert_bad_input(run_cli("eval", run_id, "--tasks", tmp_path / "none.jsonl"), "not found")
    bad.write_text('{"prompt": "a", "target": "b"}\n')
    assert_bad_input(run_cli("eval", run_id, "--tasks", bad), f"{bad} line 1", "unknown format")
    assert_bad_input(run_cli("eval", "no-such-run", "--tasks", FILES[0]), "no-such-run")
    assert_bad_input(run_cli("eval", FILES[0], "--tasks", FILES[0]), "neither a run id nor a directory")
    assert_bad_input(run_cli("eval", run_id, "--tasks", FILES[0], "--step", "3"),
                     "no complete checkpoint at step 3", "4, 2")
    store = Store(Home(home).db_url)
    empty = store.create_run("tiny", {"request": {}}, status="failed")
    store.update_run(empty.id, storage_path=str(tmp_path / "nothing"))
    assert_bad_input(run_cli("eval", empty.id, "--tasks", FILES[0]), "no complete checkpoint")
    assert_bad_input(run_cli("eval", run_id, "--tasks", FILES[0], "--batch-size", "0"),
                     "--batch-size")
