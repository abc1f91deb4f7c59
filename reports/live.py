"""The live view of a training run: a rich progress bar on a terminal, elsewhere (a pipe, a
log file, CI) one plain line per update, never wrapped.

Shows what a user watches: step, loss, tokens/s, MFU, kWh and kg CO2eq so far, the projected
total energy (energy per token so far x tokens planned, carbontracker-style), and the ETA.
"""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from planners.footprint import Energy, footprint


class TrainProgress:
    def __init__(self, total_steps: int, tokens_planned: int, pue: float,
                 intensity_kg_per_kwh: float, predicted_kwh: float | None = None,
                 console: Console | None = None, every_s: float = 5.0):
        self.console = console or Console(file=sys.stderr)
        self.total, self.tokens_planned = total_steps, tokens_planned
        self.pue, self.intensity = pue, intensity_kg_per_kwh
        self.predicted_kwh = predicted_kwh
        self.tty = self.console.is_terminal
        self.every_s, self._last_line, self._last_step = every_s, 0.0, 0
        self.bar = None
        if self.tty:
            self.bar = Progress(TextColumn("step {task.completed}/{task.total}"), BarColumn(),
                                TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                                console=self.console, transient=False)
            self.task = self.bar.add_task("train", total=total_steps, info="starting workers")

    def __enter__(self) -> "TrainProgress":
        if self.bar:
            self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.bar:
            self.bar.stop()

    def line(self, m: dict) -> str:
        fp = footprint(Energy(m.get("energy_joules", 0.0)), pue=self.pue,
                       intensity_kg_per_kwh=self.intensity)
        parts = [f"loss {m['loss']:.4f}", f"{m['tokens_per_s']:,.0f} tok/s"]
        if m.get("mfu") is not None:
            parts.append(f"MFU {100 * m['mfu']:.1f}%")
        parts.append(f"{fp.it_energy_kwh:.4f} kWh")
        parts.append(f"{1000 * fp.tco2eq:.4f} kg CO2eq")
        if m.get("tokens") and m.get("energy_joules") and m["step"] >= 5:
            projected = m["energy_joules"] * self.tokens_planned / m["tokens"] / 3.6e6
            text = f"projected {projected:.4f} kWh"
            if self.predicted_kwh:
                text += f" (plan {self.predicted_kwh:.4f})"
            parts.append(text)
        return " | ".join(parts)

    def __call__(self, m: dict) -> None:
        if m["step"] == self._last_step:
            return
        self._last_step = m["step"]
        info = self.line(m)
        if self.bar:
            self.bar.update(self.task, completed=m["step"], info=info)
        elif time.monotonic() - self._last_line >= self.every_s or m["step"] == self.total:
            self._last_line = time.monotonic()
            # one line per update, never wrapped: logs and CI read it line by line
            self.console.print(f"step {m['step']}/{self.total} | {info}", highlight=False,
                               soft_wrap=True)
