"""Shared pieces of the fault-injection suite: one small real dataset, one uninterrupted
reference run on the shared `ray_local`, and helpers to read a run's history from the store.

Every faulted run uses the same launch as the reference (tiny preset, 2 workers, 12 steps of
1024 tokens, a checkpoint every 3 steps), so "the final model equals an uninterrupted run's" is
checked step by step: every loss and the final validation loss.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from orchestrator.store.home import Home
from orchestrator.store import RunEvent, Step, Store
from tests.e2e.test_train import FAST
from tests.e2e.test_train import _losses as losses  # (step, loss) rows of a run, in step order

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
STEPS, EVERY = 12, 3
LAUNCH = ["--workers", "2", "--max-steps", str(STEPS), "--tokens", str(STEPS * 1024),
          "--checkpoint-every", str(EVERY), "--warmup-steps", "2", "--lr", "3e-3", "--seed", "5"]


def request(**kw):
    """The reference launch as a RunSpec (what `train tiny *FAST *LAUNCH` builds)."""
    from orchestrator.run.spec import RunSpec

    base = dict(preset="tiny", workers=2, max_steps=STEPS, tokens=STEPS * 1024,
                batch_tokens=1024, micro_batch=2, checkpoint_every=EVERY, warmup_steps=2,
                lr=3e-3, seed=5, meter=False, dashboard=False, max_failures=2)
    base.update(kw)
    return RunSpec(**base)


def step_times(home: Path, run_id: str) -> list[tuple[int, float]]:
    """(step, wall-clock time the worker reported it) for every stored step row."""
    with Store(Home(home).db_url).read() as s:
        return [(r.step, r.time.timestamp()) for r in s.scalars(
            select(Step).where(Step.run_id == run_id).order_by(Step.step))]


def events(home: Path, run_id: str, kind: str | None = None) -> list[RunEvent]:
    with Store(Home(home).db_url).read() as s:
        q = select(RunEvent).where(RunEvent.run_id == run_id).order_by(RunEvent.id)
        rows = list(s.scalars(q))
        for r in rows:
            s.expunge(r)
    return [r for r in rows if kind is None or r.kind == kind]


def val_loss(home: Path, run_id: str) -> float | None:
    evals = events(home, run_id, "eval")
    return evals[-1].details["val_loss"] if evals else None


def copy_home(src: Path, dst: Path) -> Path:
    """A new TALLY_HOME holding the same prepared dataset (byte for byte), no store."""
    Home(dst).ensure()
    for sub in ("data", "tokenizers"):
        if (src / sub).exists():
            shutil.copytree(src / sub, dst / sub)
    return dst


def assert_same_history(got: list[tuple[int, float]], want: list[tuple[int, float]],
                        rel: float = 1e-6) -> None:
    assert [s for s, _ in got] == [s for s, _ in want] == list(range(1, STEPS + 1)), got
    for (step, a), (_, b) in zip(got, want):
        assert a == pytest.approx(b, rel=rel, abs=rel / 10), (step, a, b)


@pytest.fixture(scope="session")
def rel_home(tmp_path_factory):
    """A TALLY_HOME with a small real dataset (Python's own json/email sources, vocab 2048)."""
    from orchestrator.data import prepare

    stdlib = Path(os.__file__).parent
    root = tmp_path_factory.mktemp("rel-home")
    prepare([f"json={stdlib}/json/*.py", f"email={stdlib}/email/*.py"], name="demo",
            home=Home(root).ensure(), vocab_size=2048)
    return root


@pytest.fixture
def rel_cli(run_cli, rel_home, ray_local, monkeypatch):
    monkeypatch.setenv("TALLY_HOME", str(rel_home))
    monkeypatch.delenv("TALLY_DB", raising=False)
    return run_cli


def _reader(home: Path, argv: list[str], stop: threading.Event, out: list) -> None:
    """Run `cli.py *argv --json` in a loop in another process until `stop`; keep each result."""
    env = {**os.environ, "TALLY_HOME": str(home)}
    env.pop("TALLY_DB", None)
    while not stop.is_set():
        p = subprocess.run([PY, str(ROOT / "cli.py"), *argv], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
        out.append((time.time(), p.returncode, p.stdout, p.stderr))
        stop.wait(5.0)  # a reader, not a load generator (each read is a new process)


@pytest.fixture(scope="session")
def reference(rel_home, ray_local):
    """The uninterrupted run, trained while two other processes read the store in a loop
    (`runs --json`, `report carbon --json`): their results come back for the readers' test."""
    from orchestrator.run.launcher import train

    home = Home(rel_home)
    stop = threading.Event()
    reads: dict[str, list] = {"runs": [], "report": []}
    readers = [threading.Thread(target=_reader, args=(rel_home, ["runs", "--json"], stop,
                                                      reads["runs"])),
               threading.Thread(target=_reader, args=(rel_home, ["report", "carbon", "--json"],
                                                      stop, reads["report"]))]
    for t in readers:
        t.start()
    t0 = time.time()
    try:
        summary = train(Store(home.db_url), home, request(max_failures=0))
    finally:
        stop.set()
        for t in readers:
            t.join(timeout=180)
    return {"run_id": summary["id"], "summary": summary, "seconds": time.time() - t0,
            "losses": losses(rel_home, summary["id"]), "val_loss": val_loss(rel_home, summary["id"]),
            "reads": reads}
