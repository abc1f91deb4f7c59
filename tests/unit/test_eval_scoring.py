"""The scoring rule of `eval`: lm-evaluation-harness's tokenisation at the context/continuation
boundary, raw against length-normalised picks, LLaMA's "Answer:" rule, batching (shared rows)
equal to scoring each request alone, the standard errors, and the item file's checks."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from orchestrator.eval import scoring
from orchestrator.eval.items import Item
from orchestrator.eval.readers import read_file
from planners.errors import BadInput
from tests.unit.eval_fixtures import TINY, eval_tokenizer, tiny_model  # noqa: F401


def test_boundary_tokenisation(eval_tokenizer):
    tok = eval_tokenizer
    ctx, cont = scoring.encode_pair(tok, "Question: is it?\nAnswer:", " yes")
    assert ctx == tok.encode("Question: is it?\nAnswer:", bos=True) and ctx[0] == tok.bos_id
    assert ctx + cont == tok.encode("Question: is it?\nAnswer: yes", bos=True)
    # trailing spaces of the context belong to the continuation
    assert scoring.encode_pair(tok, "Answer:  ", "yes") == scoring.encode_pair(tok, "Answer:", "  yes")
    # where the whole encoding merges across the boundary, the continuation is the tail after
    # as many tokens as the context has (not the continuation encoded alone)
    ctx, cont = scoring.encode_pair(tok, "json", "ed")
    whole = tok.encode("jsoned", bos=True)
    assert whole[:len(ctx)] != ctx, "precondition: this pair merges across the boundary"
    assert cont == whole[len(ctx):] and cont != tok.encode("ed")


def _alone(model, ctx, cont, max_len):
    """One request, one forward, no sharing: the reference for the batched path."""
    seq = (ctx + cont)[-(max_len + 1):]
    with torch.no_grad():
        logp = model(torch.tensor([seq[:-1]])).float().log_softmax(-1)[0]
    n = len(cont)
    return sum(float(logp[len(seq) - 1 - n + i, seq[len(seq) - n + i]]) for i in range(n))


def test_batched_and_shared_rows_equal_each_request_alone(eval_tokenizer, tiny_model):
    tok = eval_tokenizer
    long_ctx = "The answer to the question below is written in the json module. " * 8
    items = [
        Item("t", ("Is it?",) * 2, ("yes", "no"), 0, "answer"),
        Item("t", ("Was it?",) * 2, ("yes", "no"), 1, "answer"),
        Item("t", ("Pick one:",) * 3, ("the cat sat", "a dog", "the cat sat down"), 2),
        Item("u", ("Alice went to the", "Bob went to the"), ("shop.", "shop."), 1),
        Item("u", (long_ctx,) * 2, ("first", "second choice"), 0),  # truncated on the left
    ]
    groups = scoring.requests_of(tok, items)
    want = [_alone(tiny_model, c, k, TINY.max_seq_len) for g in groups for c, k in g]
    plan = scoring.plan_rows(groups, TINY.max_seq_len)
    assert len(plan.uses) == len(want) == 15
    assert len(plan.rows) < len(plan.uses)  # "Answer: yes/no" shared across items
    for bs in (1, 3, 64):
        got = scoring.run_plan(tiny_model, plan, bs)
        assert got == pytest.approx(want, abs=1e-4)
    assert len(scoring.batches(plan, 3)) == math.ceil(len(plan.rows) / 3)


def _one_token_words(tok, ctx, k=None):
    """Words that are each one token after `ctx` (read off the vocabulary), shortest first."""
    out = []
    for i in range(tok.vocab_size):
        piece = tok.sp.id_to_piece(i)
        if piece.startswith("\u2581") and piece[1:].isalpha() and len(piece) > 2:
            if len(scoring.encode_pair(tok, ctx, " " + piece[1:])[1]) == 1:
                out.append(piece[1:])
    assert len(out) >= (k or 3), "the test tokenizer has too few one-token words"
    return sorted(out, key=len)[:k] if k else sorted(out, key=len)


class Uniform(torch.nn.Module):
    """Every token equally likely: a continuation's score is -(its tokens) * log(vocab)."""

    def forward(self, tokens, targets=None):
        return torch.zeros(*tokens.shape, TINY.vocab_size)


def test_raw_and_length_normalised_picks_differ(eval_tokenizer):
    tok = eval_tokenizer
    words = _one_token_words(tok, "Pick:")
    short, long_ = words[0], f"{words[-1]} {words[-2]}"  # more tokens, more characters per token
    n_short = len(scoring.encode_pair(tok, "Pick:", " " + short)[1])
    n_long = len(scoring.encode_pair(tok, "Pick:", " " + long_)[1])
    assert n_short < n_long and n_short / len(short) > n_long / len(long_)  # precondition
    items = [Item("t", ("Pick:",) * 2, (short, long_), 1),
             Item("t", ("Pick:",) * 2, (short, long_), 0)]
    counts, _ = scoring.score_items(Uniform(), tok, items, max_len=TINY.max_seq_len)
    c = counts["t"]
    assert (c.n, c.acc, c.acc_norm) == (2, 1, 1)  # raw picks `short`, normalised picks `long_`
    assert scoring.decide(items[0], [-2.0, -3.0]) == (0, 1)


class Bigram(torch.nn.Module):
    """logits of the next token from the current one only, from a table set by hand."""

    def __init__(self, table):
        super().__init__()
        self.table = table

    def forward(self, tokens, targets=None):
        return self.table[tokens]


def test_answer_rule_divides_by_the_unconditional_probability(eval_tokenizer):
    tok = eval_tokenizer
    ctx = "Is the sky green?"
    common, rare = _one_token_words(tok, ctx, 2)
    last_ctx = scoring.encode_pair(tok, ctx, " " + common)[0][-1]
    last_answer = scoring.encode_pair(tok, "Answer:", " " + common)[0][-1]
    assert last_ctx != last_answer
    a = scoring.encode_pair(tok, ctx, " " + common)[1][0]
    b = scoring.encode_pair(tok, ctx, " " + rare)[1][0]
    table = torch.zeros(TINY.vocab_size, TINY.vocab_size)
    table[last_ctx, a], table[last_ctx, b] = 6.0, 5.0  # in context: `common` more likely
    table[last_answer, a] = 8.0  # but it is likely after anything: "Answer:" says so
    model = Bigram(table)
    item = Item("boolq", (ctx,) * 2, (common, rare), 1, "answer")
    counts, _ = scoring.score_items(model, tok, [item], max_len=TINY.max_seq_len)
    assert (counts["boolq"].acc, counts["boolq"].acc_norm) == (0, 1)
    chars = Item("boolq", (ctx,) * 2, (common, rare), 1, "chars")  # same lengths decide nothing new
    lls = scoring.run_plan(model, scoring.plan_rows(scoring.requests_of(tok, [item]), 64), 4)
    assert lls[0] > lls[1] and lls[0] - lls[2] < lls[1] - lls[3]
    assert scoring.decide(chars, lls[:2])[0] == 0


def test_standard_errors_are_lm_evals():
    scores = [1, 0, 1, 1, 0, 1, 1]
    want = statistics.stdev(scores) / math.sqrt(len(scores))
    assert scoring.stderr_of(sum(scores), len(scores)) == pytest.approx(want)
    assert scoring.stderr_of(1, 1) is None
    rows = scoring.summarize({"t": scoring.Counts(7, 5, 3)})
    assert rows == [{"task": "t", "n": 7, "acc": 5 / 7, "acc_norm": 3 / 7,
                     "acc_stderr": pytest.approx(want),
                     "acc_norm_stderr": pytest.approx(scoring.stderr_of(3, 7))}]


@pytest.mark.parametrize("line,needle", [
    ('{"context": "a", "choices": ["x"], "answer": 0', "malformed JSON"),
    ('{"context": "a", "choices": ["x", "y"], "answer": 2}', "answer index 2 is out of range"),
    ('{"context": "a", "choices": [], "answer": 0}', "choice list is empty"),
    ('{"context": "a", "choices": ["x"], "answer": 0, "normalization": "tokens"}',
     "unknown normalization 'tokens'"),
    ('{"context": "a", "choices": ["x"], "answer": 0, "label": 1}', "unknown field 'label'"),
    ('{"contexts": ["a"], "choices": ["x", "y"], "answer": 0}', "one per choice"),
])
def test_bad_items_name_file_and_line(tmp_path, line, needle):
    f = tmp_path / "mine.jsonl"
    f.write_text('{"context": "ok", "choices": ["x"], "answer": 0}\n\n' + line + "\n")
    with pytest.raises(BadInput) as e:
        read_file(f)
    assert f"{f} line 3" in str(e.value) and needle in str(e.value)


def test_items_default_task_and_per_choice_contexts(tmp_path):
    f = tmp_path / "wino.jsonl"
    f.write_text('{"contexts": ["A sat", "B sat"], "choices": ["down.", "down."], "answer": 1}\n')
    (it,) = read_file(f)
    assert (it.task, it.contexts, it.shared_context) == ("wino", ("A sat", "B sat"), False)
