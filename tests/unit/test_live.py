"""Progress outside a terminal (reports/live.py, cli.err): one line per update, never wrapped."""

import io
import sys

from rich.console import Console

from reports.live import TrainProgress


def _step(step: int) -> dict:
    return {"step": step, "tokens": step * 1_048_576, "loss": 2.345678, "tokens_per_s": 123456.7,
            "mfu": 0.4321, "energy_joules": 3.6e6 * step}


def test_pipe_gets_one_unwrapped_line_per_update():
    buf = io.StringIO()  # not a terminal: rich would wrap at 80 columns
    progress = TrainProgress(1000, 1000 * 1_048_576, 1.1, 0.385, predicted_kwh=1234.5,
                             console=Console(file=buf), every_s=0.0)
    with progress:
        for step in (1, 2, 2, 5, 6):  # a repeated step is not a new update
            progress(_step(step))
    lines = buf.getvalue().splitlines()
    assert len(lines) == 4, lines
    assert all(line.startswith("step ") for line in lines)
    assert max(len(line) for line in lines) > 80  # long, and still one line each
    assert lines[-1] == ("step 6/1000 | loss 2.3457 | 123,457 tok/s | MFU 43.2% | 6.0000 kWh | "
                         "2.5410 kg CO2eq | projected 1000.0000 kWh (plan 1234.5000)")


def test_cli_stderr_messages_never_wrap(monkeypatch):
    import cli

    buf = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buf)
    text = "run abc: tiny on 2 cpu worker(s), 200 steps of 1,024 tokens; checkpoints in " + \
        "/a/very/long/path/" * 6
    cli.err().print(text)
    assert buf.getvalue() == text + "\n"
