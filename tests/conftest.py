"""Shared fixtures: a fresh TALLY_HOME per test, and the CLI called in-process."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import pytest

import cli


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A new, empty TALLY_HOME (and no TALLY_DB from the environment)."""
    h = tmp_path / "home"
    monkeypatch.setenv("TALLY_HOME", str(h))
    monkeypatch.delenv("TALLY_DB", raising=False)
    return h


@pytest.fixture
def run_cli(capsys):
    """run_cli('runs', '--json') -> CliResult, through cli.main exactly as the shell would."""

    def _run(*args: str) -> CliResult:
        capsys.readouterr()
        code = cli.main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return _run


def assert_bad_input(result: CliResult, *needles: str) -> None:
    """Exit 2, one line on stderr, no traceback, nothing on stdout."""
    assert result.code == 2, (result.code, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for n in needles:
        assert n.lower() in result.stderr.lower(), (n, result.stderr)


@pytest.fixture(scope="session")
def ray_local():
    """One private local Ray instance for the whole test session (starting Ray costs 3-6 s and
    0.5 GB here, so tests share it). Tests that need Ray take this fixture; the code under test
    finds Ray already initialised and uses it."""
    import ray

    if not ray.is_initialized():
        from orchestrator.dashboard import forget_current_cluster

        forget_current_cluster()  # a dead `ray start` head's record slows every Train run
        ray.init(address="local", num_cpus=4, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()
