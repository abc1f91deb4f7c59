"""Progress bars for the stages of preparing or importing a data set."""

from __future__ import annotations

from typing import Any

from rich.console import Console


class StageBars:
    """Rich progress bars on stderr (only on a terminal), one per stage: (stage, done, total)."""

    def __init__(self, console: Console):
        self.console = console

    def __enter__(self):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self.bars = Progress(TextColumn("{task.description:<26}"), BarColumn(),
                             MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                             console=self.console,
                             disable=not self.console.is_terminal)
        self.tasks: dict[str, Any] = {}
        self.bars.start()
        return self.update

    def update(self, stage: str, done: float, total: float) -> None:
        if stage not in self.tasks:
            unit = {"gather": "sources", "read": "sources", "tokenizer": "pieces",
                    "tokenise": "characters"}.get(stage, "tokens")
            self.tasks[stage] = self.bars.add_task(f"{stage} ({unit})", total=total)
        self.bars.update(self.tasks[stage], completed=done, total=total)

    def __exit__(self, *exc):
        self.bars.stop()
