"""The CLI shell: help, version, --json, runs, and bad input as one line with exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from orchestrator.store.home import Home
from orchestrator.store import open_store
from tests.conftest import assert_bad_input

ROOT = Path(__file__).resolve().parents[2]


def test_help_and_version_in_a_real_process():
    res = subprocess.run([sys.executable, "cli.py", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0 and "runs" in res.stdout
    res = subprocess.run([sys.executable, "cli.py", "--version"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.startswith("tally ")


def test_runs_json_is_empty_list_on_new_home(home, run_cli):
    res = run_cli("runs", "--json")
    assert res.code == 0 and res.json() == []
    assert (home / "tally.db").exists()
    res = run_cli("--json", "runs")
    assert res.code == 0 and res.json() == []


def test_runs_lists_and_shows_a_run(home, run_cli):
    store = open_store(None, Home.resolve())
    run = store.create_run("tiny", {"max_steps": 3}, status="completed")
    store.add_steps(run.id, [{"step": s, "tokens": 100 * s, "loss": 5.0 - s} for s in (1, 2, 3)])
    store.add_checkpoint(run.id, 3, "/tmp/ck", True)
    store.add_event(run.id, "resume", step=2, path="/tmp/ck2")
    rows = run_cli("runs", "--json").json()
    assert [(r["id"], r["steps"], r["tokens"], r["final_loss"]) for r in rows] == \
        [(run.id, 3, 300, 2.0)]
    shown = run_cli("runs", "show", run.id, "--json").json()
    assert shown["run"]["config"] == {"max_steps": 3}
    assert shown["checkpoints"][0]["complete"] is True
    assert [(e["kind"], e["details"]) for e in shown["events"]] == \
        [("resume", {"step": 2, "path": "/tmp/ck2"})]
    human = run_cli("runs")
    assert human.code == 0 and run.id in human.stdout
    human = run_cli("runs", "show", run.id)
    assert human.code == 0 and "events (1)" in human.stdout and "/tmp/ck2" in human.stdout


def test_usage_errors_are_one_line(home, run_cli):
    assert_bad_input(run_cli("runs", "--bogus"), "--bogus")
    assert_bad_input(run_cli("no-such-command"), "no-such-command")
    assert_bad_input(run_cli("runs", "show"), "run_id")


def test_sigterm_outside_a_run_exits_143_with_one_line(home, run_cli, monkeypatch):
    """typer turns a KeyboardInterrupt into a silent exit 130: a SIGTERM (or Ctrl-C) during any
    command but `train` (here `data prepare`) must still say so and exit 128 + the signal."""
    import os
    import signal
    import time

    import orchestrator.data as data

    def interrupted(*a, **k):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises here
        raise AssertionError("SIGTERM did not interrupt")

    monkeypatch.setattr(data, "prepare_command", interrupted)
    res = run_cli("data", "prepare", "x=nothing.txt")
    assert res.code == 143, res
    assert res.stderr.strip() == "interrupted by SIGTERM" and not res.stdout
