"""What `train` shows while it runs: the launch line, the live progress (reports/live.py) or,
for a remote job, one line per step event; under `--events`, the `@tally {json}` lines a remote
follower reads."""

from __future__ import annotations

import json
import sys

from rich.console import Console

from reports.live import TrainProgress


class TrainOutput:
    """The launcher's `on_start` and `progress` callbacks for one `train` command. `quiet`
    (`--json` or `--events`): nothing but the final document or the event lines."""

    def __init__(self, store, console: Console, *, quiet: bool):  # noqa: ANN001 (Store)
        self.store, self.console, self.quiet = store, console, quiet
        self.live: TrainProgress | None = None

    def on_start(self, info: dict) -> None:
        launch = info["launch"]
        if self.quiet:
            return
        if launch is None:  # a remote job (--address http://...): its steps arrive as events
            self.console.print(f"run {info['run_id']}: submitted to {info['dashboard_url']} "
                               f"(token file: {info['token_path']}); following its job log")
            return
        self.console.print(f"run {info['run_id']}: {launch['preset']} on {launch['workers']} "
                           f"{launch['device']} worker(s), {launch['max_steps']} steps of "
                           f"{launch['batch_tokens']:,} tokens; checkpoints in "
                           f"{info.get('checkpoints') or info['run_dir']}")
        if info.get("dashboard_url"):
            self.console.print(f"Ray dashboard: {info['dashboard_url']} "
                               f"(token file: {info['token_path']})")
        cfg = self.store.get_run(info["run_id"]).config
        self.live = TrainProgress(launch["max_steps"], launch["tokens"], cfg["pue"],
                                  cfg["intensity_kg_per_kwh"], console=self.console).__enter__()

    def progress(self, m: dict) -> None:
        if self.quiet:
            return
        if self.live is not None:
            self.live(m)
        elif m.get("step") is not None:  # remote: one line per step event
            loss = f"{m['loss']:.4f}" if m.get("loss") is not None else "-"
            self.console.print(f"step {m['step']}  loss {loss}  tokens {m.get('tokens', 0):,}  "
                               f"energy {m.get('energy_joules', 0.0):.1f} J")

    @staticmethod
    def event_line(e: dict) -> None:
        sys.stdout.write("@tally " + json.dumps(e, default=str) + "\n")
        sys.stdout.flush()

    def close(self) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)
            self.live = None
