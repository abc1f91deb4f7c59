"""Task files to items: tally's JSON-lines form (items.py), or a benchmark's file as its authors
distribute it, converted as lm-evaluation-harness's task does (prompt, choices, answer):

    arc         AI2's ARC jsonl (ARC-Easy-*.jsonl, ARC-Challenge-*.jsonl): question.stem,
                question.choices [{text, label}], answerKey
                -> "Question: {stem}\\nAnswer:", the choices' texts
    openbookqa  AI2's OpenBookQA jsonl (the same layout as ARC, so give --format openbookqa)
                -> "{stem}", the choices' texts; acc_norm by LLaMA's "Answer:" rule
    hellaswag   hellaswag_{train,val}.jsonl: activity_label, ctx_a, ctx_b, endings, label
                -> preprocess("{activity_label}: {ctx_a} {ctx_b.capitalize()}"), endings
                   preprocessed (WikiHow's " [title]" -> ". ", other [..] removed)
    boolq       BoolQ's {train,dev}.jsonl: question, passage, answer (true/false)
                -> "{passage}\\nQuestion: {question}?\\nAnswer:", ["no", "yes"]; "Answer:" rule
    piqa        PIQA's {train,valid}.jsonl (goal, sol1, sol2) with the labels beside it in
                {train,valid}-labels.lst, one 0/1 a line
                -> "Question: {goal}\\nAnswer:", [sol1, sol2]
    winogrande  WinoGrande's {train_*,dev}.jsonl: sentence with "_", option1, option2, answer
                "1"/"2" -> per choice the sentence up to the blank filled with the option;
                the part after the blank is the continuation scored (partial scoring)

Without --format the layout is told from the first line's fields (ARC's layout reads as arc).
"""

from __future__ import annotations

import re
from pathlib import Path

from orchestrator.eval.items import Item, item_from, read_lines, task_name
from planners.errors import BadInput

FORMATS = ("arc", "hellaswag", "boolq", "piqa", "winogrande", "openbookqa", "tally")


class _Bad(Exception):
    """A line that does not have the format's fields (the caller names file and line)."""


def _need(obj, *keys):
    if not isinstance(obj, dict):
        raise _Bad(f"a JSON object, got {type(obj).__name__}")
    for k in keys:
        if k not in obj:
            raise _Bad(f"no {k!r} field")
    return [obj[k] for k in keys]


def _ai2(obj) -> tuple[str, list[str], int]:
    """ARC and OpenBookQA: (stem, choice texts, answer index)."""
    question, key = _need(obj, "question", "answerKey")
    stem, choices = _need(question, "stem", "choices")
    if not isinstance(choices, list) or not choices:
        raise _Bad("question.choices must be a non-empty list")
    labels = [str(_need(c, "label")[0]) for c in choices]
    texts = [_need(c, "text")[0] for c in choices]
    key = str(key).strip()
    if key not in labels:
        raise _Bad(f"answerKey {key!r} is none of the labels {', '.join(labels)}")
    return stem, texts, labels.index(key)


def _arc(obj, task, extra):
    stem, texts, answer = _ai2(obj)
    return {"task": task, "context": f"Question: {stem}\nAnswer:", "choices": texts,
            "answer": answer}


def _openbookqa(obj, task, extra):
    stem, texts, answer = _ai2(obj)
    return {"task": task, "context": stem, "choices": texts, "answer": answer,
            "normalization": "answer"}


def hellaswag_preprocess(text: str) -> str:
    """lm-evaluation-harness's hellaswag `preprocess` (the brackets are WikiHow artifacts)."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def _hellaswag(obj, task, extra):
    label, ctx_a, ctx_b, endings, activity = _need(obj, "label", "ctx_a", "ctx_b", "endings",
                                                   "activity_label")
    if label is None or str(label) == "":
        raise _Bad("no label (HellaSwag's test split is unlabelled)")
    ctx = ctx_a + " " + ctx_b.capitalize()
    return {"task": task, "context": hellaswag_preprocess(activity + ": " + ctx),
            "choices": [hellaswag_preprocess(e) for e in endings], "answer": int(label)}


def _boolq(obj, task, extra):
    question, passage, answer = _need(obj, "question", "passage", "answer")
    if not isinstance(answer, bool):
        raise _Bad(f"answer must be true or false, got {answer!r}")
    return {"task": task, "context": f"{passage}\nQuestion: {question}?\nAnswer:",
            "choices": ["no", "yes"], "answer": int(answer), "normalization": "answer"}


def _piqa(obj, task, labels):
    goal, sol1, sol2 = _need(obj, "goal", "sol1", "sol2")
    label = labels.pop(0) if labels else None
    if label is None:
        raise _Bad("no label: the labels file has fewer lines than this file")
    return {"task": task, "context": f"Question: {goal}\nAnswer:", "choices": [sol1, sol2],
            "answer": label}


def _winogrande(obj, task, extra):
    sentence, o1, o2, answer = _need(obj, "sentence", "option1", "option2", "answer")
    if "_" not in sentence:
        raise _Bad("the sentence has no blank '_'")
    if str(answer) not in ("1", "2"):
        raise _Bad(f"answer must be \"1\" or \"2\", got {answer!r}")
    i = sentence.index("_")
    rest = sentence[i + 1:].strip()
    return {"task": task, "contexts": [sentence[:i] + o1, sentence[:i] + o2],
            "choices": [rest, rest], "answer": int(answer) - 1}


READERS = {"arc": _arc, "openbookqa": _openbookqa, "hellaswag": _hellaswag, "boolq": _boolq,
           "piqa": _piqa, "winogrande": _winogrande}


def detect(obj) -> str | None:
    if not isinstance(obj, dict):
        return None
    keys = set(obj)
    if isinstance(obj.get("question"), dict) and "answerKey" in keys:
        return "arc"
    if {"ctx_a", "ctx_b", "endings"} <= keys:
        return "hellaswag"
    if {"question", "passage", "answer"} <= keys:
        return "boolq"
    if {"goal", "sol1", "sol2"} <= keys:
        return "piqa"
    if {"sentence", "option1", "option2"} <= keys:
        return "winogrande"
    if "choices" in keys and "answer" in keys:
        return "tally"
    return None


def _task(fmt: str, path: Path) -> str:
    """lm-evaluation-harness's task names; ARC's from the file (ARC-Easy-Test.jsonl)."""
    if fmt == "arc":
        name = path.name.lower()
        return "arc_challenge" if "challenge" in name else "arc_easy" if "easy" in name else "arc"
    return fmt if fmt != "tally" else task_name(path)


def _piqa_labels(path: Path) -> list[int]:
    stem = path.name[:-len(".jsonl")] if path.name.endswith(".jsonl") else path.stem
    lst = path.with_name(f"{stem}-labels.lst")
    if not lst.is_file():
        raise BadInput(f"{path}: PIQA's labels are not beside it (looked for {lst.name}); "
                       "PIQA ships them as <split>-labels.lst next to <split>.jsonl")
    labels = []
    for n, line in enumerate(lst.read_text().splitlines(), 1):
        if line.strip() not in ("0", "1"):
            raise BadInput(f"{lst} line {n}: a PIQA label is 0 or 1, got {line.strip()!r}")
        labels.append(int(line))
    return labels


def read_file(path: str, fmt: str | None = None) -> list[Item]:
    """One file's items, in format `fmt` or the format told from its first line."""
    p = Path(path).expanduser()
    lines = list(read_lines(p))
    if not lines:
        raise BadInput(f"task file {str(p)!r} holds no items")
    if fmt is None:
        fmt = detect(lines[0][1])
        if fmt is None:
            raise BadInput(f"{p} line {lines[0][0]}: unknown format (fields "
                           f"{', '.join(sorted(lines[0][1])) if isinstance(lines[0][1], dict) else '-'}); "
                           f"give --format, one of {', '.join(FORMATS)}")
    task = _task(fmt, p)
    if fmt == "tally":
        return [item_from(obj, f"{p} line {n}", task) for n, obj in lines]
    extra = _piqa_labels(p) if fmt == "piqa" else None
    if extra is not None and len(extra) != len(lines):
        raise BadInput(f"{p}: {len(lines)} items but {len(extra)} labels in its labels file")
    items = []
    for n, obj in lines:
        where = f"{p} line {n}"
        try:
            converted = READERS[fmt](obj, task, extra)
        except _Bad as e:
            raise BadInput(f"{where}: not a {fmt} item ({e})") from None
        except (TypeError, ValueError, AttributeError) as e:
            raise BadInput(f"{where}: not a {fmt} item ({type(e).__name__}: {e})") from None
        items.append(item_from(converted, f"{where} ({fmt})", task))
    return items


def load_tasks(paths: list[str], fmt: str | None = None, limit: int | None = None) -> list[Item]:
    """The items of every file, in order; `limit`: the first N items of each task."""
    if fmt is not None and fmt not in FORMATS:
        raise BadInput(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    items: list[Item] = []
    for path in paths:
        items += read_file(path, fmt)
    if limit is None:
        return items
    kept, seen = [], {}
    for it in items:
        seen[it.task] = seen.get(it.task, 0) + 1
        if seen[it.task] <= limit:
            kept.append(it)
    return kept
