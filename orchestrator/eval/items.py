"""Evaluation items: tally's JSON-lines form, read and checked.

One item a line:

    {"task": "arc_easy", "context": "Question: ...\\nAnswer:", "choices": ["a", "b"],
     "answer": 1, "normalization": "chars"}

- `task` names the task the item counts in (default: the file's name without `.jsonl`).
- `choices` are scored as continuations " " + choice of `context`; `answer` is the index of the
  right one.
- `normalization` says how `acc_norm` is computed: "chars" (default; the score divided by the
  choice's length in characters, as lm-evaluation-harness and LLaMA after Gao et al. 2021) or
  "answer" (LLaMA's rule for OpenBookQA and BoolQ: log P(choice | context) minus
  log P(choice | "Answer:")).
- `contexts` (optional, instead of `context`): one context per choice, each choice scored on its
  own context (WinoGrande: the sentence up to the blank, filled with each option, the part after
  the blank being the continuation).

Bad input raises BadInput naming the file and the line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from planners.errors import BadInput

NORMALIZATIONS = ("chars", "answer")
FIELDS = {"task", "context", "contexts", "choices", "answer", "normalization", "id"}


@dataclass(frozen=True)
class Item:
    task: str
    contexts: tuple[str, ...]  # one per choice (the same string repeated when shared)
    choices: tuple[str, ...]
    answer: int
    normalization: str = "chars"

    @property
    def shared_context(self) -> bool:
        return len(set(self.contexts)) == 1


def item_from(obj, where: str, default_task: str) -> Item:
    """Check one decoded JSON object; `where` ("FILE line N") starts every error."""
    if not isinstance(obj, dict):
        raise BadInput(f"{where}: an item is a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - FIELDS)
    if unknown:
        raise BadInput(f"{where}: unknown field {unknown[0]!r}; an item has "
                       f"{', '.join(sorted(FIELDS))}")
    choices = obj.get("choices")
    if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
        raise BadInput(f"{where}: \"choices\" must be a list of strings")
    if not choices:
        raise BadInput(f"{where}: the choice list is empty; give at least one choice")
    if "context" in obj and "contexts" in obj:
        raise BadInput(f"{where}: give \"context\" or \"contexts\" (one per choice), not both")
    if "contexts" in obj:
        contexts = obj["contexts"]
        if not isinstance(contexts, list) or not all(isinstance(c, str) for c in contexts) \
                or len(contexts) != len(choices):
            raise BadInput(f"{where}: \"contexts\" must be a list of {len(choices)} strings, "
                           "one per choice")
    elif isinstance(obj.get("context"), str):
        contexts = [obj["context"]] * len(choices)
    else:
        raise BadInput(f"{where}: \"context\" must be a string")
    answer = obj.get("answer")
    if not isinstance(answer, int) or isinstance(answer, bool):
        raise BadInput(f"{where}: \"answer\" must be the index of the right choice (an integer)")
    if not 0 <= answer < len(choices):
        raise BadInput(f"{where}: answer index {answer} is out of range for {len(choices)} "
                       f"choices (0 to {len(choices) - 1})")
    norm = obj.get("normalization", "chars")
    if norm not in NORMALIZATIONS:
        raise BadInput(f"{where}: unknown normalization {norm!r}; use one of "
                       f"{', '.join(NORMALIZATIONS)}")
    task = obj.get("task", default_task)
    if not isinstance(task, str) or not task:
        raise BadInput(f"{where}: \"task\" must be a non-empty string")
    return Item(task, tuple(contexts), tuple(choices), answer, norm)


def task_name(path: str | Path) -> str:
    name = Path(path).name
    for suffix in (".jsonl", ".json"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_lines(path: str | Path):
    """(line number, decoded object) for each non-blank line; BadInput on malformed JSON."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise BadInput(f"task file {str(p)!r} not found; give a JSON-lines file of items")
    with p.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as e:
                raise BadInput(f"{p} line {n}: malformed JSON ({e.msg} at column {e.colno})") from None
