"""Shared fixtures: a fresh TALLY_HOME per test, and the CLI called in-process."""

from __future__ import annotations

import contextlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

import cli
from tests.s3fixture import s3_server  # noqa: F401  (a real S3 API on 127.0.0.1)

# `make test` runs the suite in two pytest-xdist workers, each with its own private Ray
# instance: their session files and Ray's "current cluster" record (which `ray start` heads
# write) must not mix, so each worker gets a Ray temp dir of its own (short: Ray's sockets
# live there). The subprocesses a test starts inherit it.
if os.environ.get("PYTEST_XDIST_WORKER") and "RAY_TMPDIR" not in os.environ:
    import tempfile

    os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix=f"ray-{os.environ['PYTEST_XDIST_WORKER']}-",
                                                dir="/tmp")


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
        from orchestrator.infra.dashboard import forget_current_cluster

        forget_current_cluster()  # a dead `ray start` head's record slows every Train run
        ray.init(address="local", num_cpus=4, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


# -- real training: one dataset and one reference run for every suite that trains ------------
# (tests/test_train.py, test_train_scheduling.py, test_sweep_e2e.py): preparing the dataset and
# training the reference once per session, not once per module, saves a Ray Train run each.

FAST = ["--batch-tokens", "1024", "--micro-batch", "2", "--no-meter", "--no-dashboard"]
# One 8-step schedule shared by the runs that compare losses: 2 workers straight through (the
# reference), 1 worker for its first half (same global batch), 2 workers stopped at 4 then
# resumed, and a run paused by the carbon threshold.
_TASKS = Path(__file__).resolve().parents[1] / "orchestrator" / "eval" / "tasks"
EVAL_TASKS = f"{_TASKS / 'science_qa.jsonl'},{_TASKS / 'yes_no.jsonl'}"  # shipped task files
SCHEDULE = ["--tokens", str(8 * 1024), "--checkpoint-every", "2", "--lr", "3e-3",
            "--warmup-steps", "2", "--seed", "3"]


@pytest.fixture(scope="session")
def train_home(tmp_path_factory):
    """A TALLY_HOME with a small real dataset (Python's own json/email/asyncio sources)."""
    from orchestrator.data import prepare
    from orchestrator.store.home import Home

    stdlib = Path(os.__file__).parent
    root = tmp_path_factory.mktemp("train-home")
    prepare([f"json={stdlib}/json/*.py", f"email={stdlib}/email/*.py",
             f"asyncio={stdlib}/asyncio/*.py"], name="demo", home=Home(root).ensure(),
            vocab_size=2048)
    return root


@pytest.fixture(scope="session")
def tcli_session(train_home, ray_local):
    """run_cli for session fixtures: the CLI in-process with TALLY_HOME=train_home."""

    def _run(*args) -> CliResult:
        out, err = io.StringIO(), io.StringIO()
        old = os.environ.get("TALLY_HOME")
        os.environ["TALLY_HOME"] = str(train_home)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = cli.main([str(a) for a in args])
        finally:
            if old is None:
                os.environ.pop("TALLY_HOME", None)
            else:
                os.environ["TALLY_HOME"] = old
        return CliResult(code, out.getvalue(), err.getvalue())

    return _run


@pytest.fixture(scope="session")
def reference_run(tcli_session):
    """SCHEDULE on 2 workers, 8 steps, straight through, metered (one meter on this node) and
    scored on two shipped task files at steps 4 and 8 (`--eval-every`, at checkpoints it makes
    anyway): the runs compared with it train without evaluation, so their equal losses also
    show that evaluating does not disturb training."""
    fast_metered = [a for a in FAST if a != "--no-meter"] + ["--meter-interval", "0.5"]
    res = tcli_session("train", "tiny", *fast_metered, *SCHEDULE, "--workers", "2",
                       "--max-steps", "8", "--eval-every", "4", "--eval-tasks", EVAL_TASKS,
                       "--json")
    assert res.code == 0, res.stderr
    return res.json()
