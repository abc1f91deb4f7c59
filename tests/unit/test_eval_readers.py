"""The benchmark readers: each author's layout (tiny hand-written files in tests/data/eval)
converted to the prompt, choices and answer lm-evaluation-harness's task builds; detection by
fields; the bad inputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.eval.items import Item
from orchestrator.eval.readers import hellaswag_preprocess, load_tasks, read_file
from planners.errors import BadInput
from tests.unit.eval_fixtures import TASKS

DATA = Path(__file__).resolve().parents[1] / "data" / "eval"


def test_arc_and_openbookqa():
    a, b = read_file(DATA / "ARC-Easy-Test.jsonl")
    assert a == Item("arc_easy", ("Question: Which object reflects light best?\nAnswer:",) * 4,
                     ("a mirror", "a brick", "a sponge", "a log"), 0, "chars")
    assert (b.choices, b.answer) == (("food and water", "paint", "music"), 0)  # labels "1".."3"
    (o,) = read_file(DATA / "openbookqa-test.jsonl", "openbookqa")
    assert o == Item("openbookqa", ("A magnet will stick to",) * 4,
                     ("a wooden spoon", "an iron nail", "a glass cup", "a paper bag"), 1, "answer")
    assert read_file(DATA / "openbookqa-test.jsonl")[0].task == "arc"  # same layout: say --format


def test_hellaswag_as_lm_eval_preprocesses_it():
    a, b = read_file(DATA / "hellaswag_val.jsonl")
    assert a.contexts[0] == "Making tea: A woman fills a kettle with water. She"
    assert (a.answer, a.choices[2]) == (2, "puts the kettle on the stove.")
    assert b.contexts[0] == "Home and Garden: How to water a plant. Check the soil. If the soil is dry,"
    assert (b.answer, b.choices[0]) == (0, "give the plant water. Pour slowly.")
    assert hellaswag_preprocess(" x [title] y [step] z ") == "x. y z"


def test_boolq_piqa_winogrande():
    t, f = read_file(DATA / "dev.jsonl")
    assert t == Item("boolq", ("The Sun is the star at the centre of the Solar System.\n"
                               "Question: is the sun a star?\nAnswer:",) * 2, ("no", "yes"), 1,
                     "answer")
    assert f.answer == 0
    p1, p2 = read_file(DATA / "valid.jsonl")
    assert p1.contexts[0] == "Question: To open a jar with a tight lid,\nAnswer:"
    assert (p1.answer, p2.answer, p2.choices) == (0, 1, ("leave it open in the sun.",
                                                          "store it in a closed bag."))
    w1, w2 = read_file(DATA / "winogrande_dev.jsonl")
    assert w1 == Item("winogrande", ("The cup held more than the glass because the cup",
                                     "The cup held more than the glass because the glass"),
                      ("was bigger.", "was bigger."), 0, "chars")
    assert w2.contexts == ("Sam gave Max a book because Sam", "Sam gave Max a book because Max")


def test_shipped_task_files_read_and_limit():
    items = load_tasks(sorted(str(p) for p in TASKS.glob("*.jsonl")))
    tasks = {it.task for it in items}
    assert tasks == {"blanks", "completion", "science_qa", "yes_no"} and len(items) >= 80
    limited = load_tasks(sorted(str(p) for p in TASKS.glob("*.jsonl")), limit=3)
    assert len(limited) == 12


def test_bad_benchmark_files(tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text('{"prompt": "a", "target": "b"}\n')
    with pytest.raises(BadInput, match=f"{f} line 1: unknown format .*--format, one of arc"):
        read_file(f)
    with pytest.raises(BadInput, match="--format 'mmlu' is not one of"):
        load_tasks([str(f)], "mmlu")
    f.write_text('{"question": {"stem": "q", "choices": [{"text": "a", "label": "A"}]}, '
                 '"answerKey": "A"}\n{"question": {"stem": "q", "choices": [{"text": "a", '
                 '"label": "A"}]}, "answerKey": "E"}\n')
    with pytest.raises(BadInput, match=f"{f} line 2: not a arc item .answerKey 'E'"):
        read_file(f)
    f.write_text('{"sentence": "no blank", "option1": "a", "option2": "b", "answer": "1"}\n')
    with pytest.raises(BadInput, match="line 1: not a winogrande item .the sentence has no blank"):
        read_file(f)
    g = tmp_path / "train.jsonl"
    g.write_text('{"goal": "g", "sol1": "a", "sol2": "b"}\n')
    with pytest.raises(BadInput, match="train-labels.lst"):
        read_file(g)
    (tmp_path / "train-labels.lst").write_text("2\n")
    with pytest.raises(BadInput, match="train-labels.lst line 1: a PIQA label is 0 or 1"):
        read_file(g)
    h = tmp_path / "hellaswag_test.jsonl"
    h.write_text('{"activity_label": "a", "ctx_a": "b", "ctx_b": "c", "endings": ["d"], "label": ""}\n')
    with pytest.raises(BadInput, match="test split is unlabelled"):
        read_file(h)
