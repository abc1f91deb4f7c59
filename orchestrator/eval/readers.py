"""Task files to items: tally's own JSON-lines form (items.py)."""

from __future__ import annotations

from orchestrator.eval.items import Item, read_items
from planners.errors import BadInput

FORMATS = ("tally",)


def load_tasks(paths: list[str], fmt: str | None = None, limit: int | None = None) -> list[Item]:
    """The items of every file, in order; `limit`: the first N items of each task."""
    if fmt is not None and fmt not in FORMATS:
        raise BadInput(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    items: list[Item] = []
    for path in paths:
        items += read_items(path)
    if limit is None:
        return items
    kept, seen = [], {}
    for it in items:
        seen[it.task] = seen.get(it.task, 0) + 1
        if seen[it.task] <= limit:
            kept.append(it)
    return kept
