"""Driver SIGKILL mid-run: `cli.py train` in its own process group, with its own TALLY_HOME and
its own private Ray (the embedded default, token auth on), killed with its whole group at a step;
then `train --resume RUN_ID`. Also: nothing of the killed session survives, and the Ray token
appears nowhere but in its own file."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from tests.reliability._record import record
from tests.reliability.conftest import (FAST, LAUNCH, PY, ROOT, STEPS, assert_same_history,
                                        copy_home, events, losses, step_times, val_loss)

KILL_AFTER = 5  # steps stored before the kill


def _max_step(db: Path) -> tuple[str | None, int]:
    """(run id, newest stored step), read-only, without ever creating the database."""
    if not db.exists():
        return None, 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            row = con.execute("SELECT run_id, max(step) FROM steps").fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return None, 0
    return (row[0], row[1] or 0) if row else (None, 0)


def _session_processes(sid: int, marker: str) -> list[str]:
    """Processes still in the killed session, or whose command line names its Ray temp dir."""
    left = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            if os.getsid(p.info["pid"]) == sid or marker in cmd:
                left.append(f"{p.info['pid']} {cmd[:120]}")
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
    return left


@pytest.fixture(scope="module")
def killed(rel_home, tmp_path_factory):
    home = copy_home(rel_home, tmp_path_factory.mktemp("driver-kill") / "home")
    ray_tmp = tempfile.mkdtemp(prefix="tr-", dir="/tmp")  # short: Ray's socket paths live here
    env = {**os.environ, "TALLY_HOME": str(home), "RAY_TMPDIR": ray_tmp}
    for k in ("TALLY_DB", "RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH"):
        env.pop(k, None)
    out, err = home.parent / "stdout.txt", home.parent / "stderr.txt"
    with open(out, "w") as fo, open(err, "w") as fe:
        proc = subprocess.Popen([PY, str(ROOT / "cli.py"), "train", "tiny", *FAST, *LAUNCH,
                                 "--json"], cwd=ROOT, env=env, stdout=fo, stderr=fe,
                                start_new_session=True)
    deadline = time.time() + 480  # generous: a loaded shared machine
    run_id, step = None, 0
    while time.time() < deadline and proc.poll() is None:
        run_id, step = _max_step(home / "tally.db")
        if step >= KILL_AFTER:
            break
        time.sleep(0.1)
    assert proc.poll() is None and step >= KILL_AFTER, err.read_text()[-2000:]
    sid = os.getsid(proc.pid)
    assert sid == proc.pid
    t_kill = time.time()
    os.killpg(sid, signal.SIGKILL)
    proc.wait(timeout=30)
    left = _session_processes(sid, ray_tmp)
    deadline = time.time() + 20
    while left and time.time() < deadline:  # children die a moment after their parent
        time.sleep(0.5)
        left = _session_processes(sid, ray_tmp)
    yield {"home": home, "run_id": run_id, "killed_after_step": step, "t_kill": t_kill,
           "orphans": left, "ray_tmp": Path(ray_tmp), "outputs": [out, err]}
    for line in left:  # never leave them behind, even when the test failed
        try:
            os.kill(int(line.split()[0]), signal.SIGKILL)
        except OSError:
            pass
    shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.mark.slow
def test_killed_driver_leaves_no_process_behind(killed):
    assert killed["orphans"] == [], killed["orphans"]


@pytest.mark.slow
def test_resume_after_driver_kill_equals_an_uninterrupted_run(killed, reference, run_cli,
                                                              ray_local, monkeypatch):
    home, run_id = killed["home"], killed["run_id"]
    monkeypatch.setenv("TALLY_HOME", str(home))
    monkeypatch.delenv("TALLY_DB", raising=False)
    shown = run_cli("runs", "show", run_id, "--json").json()
    assert shown["run"]["status"] == "lost"  # its driver is gone: neither running nor ended
    t_resume = time.time()
    res = run_cli("train", "--resume", run_id, "--json")
    assert res.code == 0, res.stderr
    assert res.json()["status"] == "completed"
    # the killed process ran 1 thread per worker (its Ray has this machine's CPUs), the resumed
    # one 2 (the shared test Ray): float sums differ in the last bits, hence rel 1e-4
    assert_same_history(losses(home, run_id), reference["losses"], rel=1e-4)
    assert val_loss(home, run_id) == pytest.approx(reference["val_loss"], rel=1e-4)
    resumed = events(home, run_id, "resume")[-1].details
    k = killed["killed_after_step"]  # stored when killed; the workers may have been 1-2 ahead
    assert resumed["step"] % 3 == 0 and 3 * (k // 3) <= resumed["step"] <= k + 2, (k, resumed)
    first_new = min(t for _, t in step_times(home, run_id) if t > t_resume)
    record("driver-sigkill", injections=1, killed_after_step=killed["killed_after_step"],
           resumed_from_step=resumed["step"], survived=True, steps=STEPS,
           orphan_processes=len(killed["orphans"]),
           resume_command_to_first_step_s=round(first_new - t_resume, 2),
           discarded_step_rows=resumed.get("discarded_step_rows"))


@pytest.mark.slow
def test_token_is_in_no_log_store_or_report(killed, run_cli, monkeypatch):
    """The embedded default's token (home/ray/auth_token) appears nowhere else: not in the store,
    the run directory, the driver's output, a report, or the killed session's Ray logs."""
    home = killed["home"]
    token_file = home / "ray" / "auth_token"
    token = token_file.read_text().strip()
    assert len(token) >= 32
    monkeypatch.setenv("TALLY_HOME", str(home))
    for argv in (["runs", "--json"], ["report", "carbon", "--json"],
                 ["report", "run", killed["run_id"], "--json"],
                 ["runs", "show", killed["run_id"], "--json"]):
        res = run_cli(*argv)
        assert token not in res.stdout + res.stderr, argv
    hay = [f for f in home.rglob("*") if f.is_file() and f != token_file]
    hay += killed["outputs"]
    assert any(f.name == "tally.db" for f in hay)
    logs = list((killed["ray_tmp"] / "ray").glob("session_*/logs"))
    assert logs, "the killed driver's Ray session logs"
    hay += [f for d in logs for f in d.rglob("*") if f.is_file()]
    found = [str(f) for f in hay if token.encode() in f.read_bytes()]
    assert found == [], found
    record("token-leak", files_searched=len(hay), files_with_token=len(found))
