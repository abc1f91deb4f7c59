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


# -- how `make test` splits the suite over its two pytest-xdist workers ------------------------
# Each test file is one unit of work, except the files that share an expensive session fixture:
# those go to one worker together, so the fixture is built once. The units are handed out
# longest first (longest-processing-time scheduling), with the two reference groups first so
# they start on different workers. (pytest 9.2 ignores xdist 3.8's `xdist_group` mark: xdist
# sets `item._nodeid`, which pytest no longer reads; hence a scheduler of our own.)
SHARED_FIXTURE_GROUPS = {
    # tests/reliability/conftest.py `reference` (a run read by two store readers)
    "rel-reference": ["tests/reliability/test_checkpoint_faults.py",
                      "tests/reliability/test_concurrent_readers.py",
                      "tests/reliability/test_driver_kill.py",
                      "tests/reliability/test_node_loss.py",
                      "tests/reliability/test_worker_kill.py"],
    # `reference_run` above
    "reference-run": ["tests/e2e/test_train.py", "tests/e2e/test_train_scheduling.py",
                      "tests/e2e/test_eval_training.py", "tests/e2e/test_export_e2e.py",
                      "tests/reliability/test_storage_s3.py"],
}
# the other long files (seconds on 2 cores, bench of the suite), first in the queue
LONG_FILES = ["tests/e2e/test_dashboard.py", "tests/e2e/test_observability.py",
              "tests/reliability/test_stop_signals.py", "tests/e2e/test_sweep_e2e.py"]
_GROUP_OF = {f: g for g, files in SHARED_FIXTURE_GROUPS.items() for f in files}


def unit_of(nodeid: str) -> str:
    """The unit of work a test belongs to: its file, or its file's shared-fixture group."""
    path = nodeid.split("::", 1)[0]
    return _GROUP_OF.get(path, path)


def queue_rank(unit: str) -> int:
    order = [*SHARED_FIXTURE_GROUPS, *LONG_FILES]
    return order.index(unit) if unit in order else len(order)


def pytest_xdist_make_scheduler(config, log):  # noqa: ANN001 (xdist's hook)
    from xdist.scheduler import LoadScopeScheduling

    class SharedFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid)

        def schedule(self) -> None:
            """LoadScopeScheduling.schedule (xdist 3.8) with the queue in our order."""
            assert self.collection_is_completed
            if self.collection is not None:
                for node in self.nodes:
                    self._reschedule(node)
                return
            if not self._check_nodes_have_same_collection():
                self.log("**Different tests collected, aborting run**")
                return
            self.collection = list(next(iter(self.registered_collections.values())))
            if not self.collection:
                return
            units: dict[str, dict[str, bool]] = {}
            for nodeid in self.collection:
                units.setdefault(self._split_scope(nodeid), {})[nodeid] = False
            for unit in sorted(units, key=queue_rank):  # stable: collection order otherwise
                self.workqueue[unit] = units[unit]
            for _ in range(len(self.nodes) - len(self.workqueue)):  # more workers than work
                unused, _assigned = self.assigned_work.popitem()
                unused.shutdown()
            for node in self.nodes:
                self._assign_work_unit(node)
            for node in self.nodes:
                self._reschedule(node)
            if not self.workqueue:
                for node in self.nodes:
                    node.shutdown()

    return SharedFixtureScheduling(config, log)
