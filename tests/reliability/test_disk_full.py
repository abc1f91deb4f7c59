"""Disk full while checkpointing or while writing the store, made with RLIMIT_FSIZE in a child
process (no root, no mount: works in CI's sandbox). What must hold: a clear failure, and
everything written before the disk filled is still there and still opens."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess

from sqlalchemy import func, select

from orchestrator.run import checkpoint as ckpt
from orchestrator.store.home import Home
from orchestrator.store import Job, Step, Store
from tests.reliability._record import record
from tests.reliability.conftest import PY, ROOT


# Never write bytecode under a size limit: a .pyc cut short is written without an error and
# breaks every later import of that module (here and in the shared virtual environment).
_ENV = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}


def _child(what: str, path, tmp_path) -> dict:
    out = tmp_path / f"{what}.json"
    p = subprocess.run([PY, "-m", "tests.reliability.disk_full_child", what, str(path), str(out)],
                       cwd=ROOT, env=_ENV, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0 and out.exists(), p.stderr[-3000:]
    return json.loads(out.read_text())


def test_store_full_keeps_every_committed_row(tmp_path, run_cli, home):
    db = tmp_path / "tally.db"
    res = _child("store", db, tmp_path)
    assert res["error"] and "disk full" in res["error"], res  # RunFailed: exit 1 in the CLI
    store = Store(f"sqlite:///{db}")  # opens (and recovers its WAL) after the failed write
    with store.read() as s:
        rows = s.scalar(select(func.count()).select_from(Step).where(Step.run_id == res["run_id"]))
        steps = list(s.scalars(select(Step.step).where(Step.run_id == res["run_id"])
                               .order_by(Step.step)))
    assert rows == res["written"] > 1 and steps == list(range(1, rows + 1))  # the failed batch: all or nothing
    out = run_cli("--db", f"sqlite:///{db}", "runs", "--json")
    assert out.code == 0 and out.json()[0]["steps"] == rows
    record("disk-full/store", injections=1, survived=True, rows_kept=rows, rows_lost=0,
           error=res["error"], file_size_limit_bytes=res["limit_bytes"])


def _limited(cap: int):
    def pre():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (cap, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    return pre


def test_cli_on_a_full_disk_fails_clearly(tmp_path, run_cli, home):
    assert run_cli("schedule", "add", "tiny", "--json").code == 0
    before = run_cli("schedule", "list", "--json").json()
    env = {**_ENV, "TALLY_HOME": str(home)}
    env.pop("TALLY_DB", None)
    p = subprocess.run([PY, str(ROOT / "cli.py"), "schedule", "add", "tiny", "--priority", "3",
                        "--json"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=120, preexec_fn=_limited(4096))
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert "database" in lines[0] and "disk full" in lines[0], lines
    assert p.stdout == ""
    after = run_cli("schedule", "list", "--json")
    assert after.code == 0 and after.json() == before  # nothing half-written, nothing lost
    with Store(Home(home).db_url).read() as s:
        assert s.scalar(select(func.count()).select_from(Job)) == 1
    record("disk-full/cli", injections=1, survived=True, exit_code=p.returncode, message=lines[0])


def test_checkpoint_on_a_full_disk_leaves_the_previous_one(tmp_path):
    root = tmp_path / "ck"
    res = _child("checkpoint", root, tmp_path)
    assert res["error"], res  # the save raised (in a run: the worker fails, Ray retries it)
    assert [s for s, _ in ckpt.complete_steps(root)] == [1]
    found = ckpt.find_latest(root)
    assert found.step == 1 and not found.skipped  # the half-written step 2 never counts
    assert (root / "step-00000002.tmp").is_dir()
    record("disk-full/checkpoint", injections=1, survived=True, error=res["error"][:200],
           file_size_limit_bytes=res["limit_bytes"], newest_complete_after=found.step)
