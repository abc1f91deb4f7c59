"""Stopping `train` the way people and schedulers do: Ctrl-C typed in a real terminal (tmux,
so the terminal's SIGINT reaches the whole foreground process group, Ray's processes included)
and SIGTERM sent to the `train` process as kill, Slurm, systemd and Kubernetes send it. Either
way the workers checkpoint and stop, the run is `interrupted` (not `running`), the command says
how to resume and exits 128 + the signal, and nothing of its Ray is left behind."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from tests.reliability.conftest import PY, ROOT, copy_home
from tests.reliability.test_driver_kill import _max_step

ARGS = ["train", "tiny", "--workers", "1", "--max-steps", "400", "--batch-tokens", "1024",
        "--micro-batch", "2", "--checkpoint-every", "50", "--no-meter", "--no-dashboard"]
AFTER = 2  # steps stored before the signal


def _ray_processes(marker: str) -> list[str]:
    import psutil

    left = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
        except psutil.Error:
            continue
        if marker in cmd and "pytest" not in cmd:
            left.append(f"{p.info['pid']} {cmd[:100]}")
    return left


def _wait_for_steps(db: Path, alive, timeout: float = 480) -> int:  # noqa: ANN001
    deadline = time.time() + timeout
    while time.time() < deadline and alive():
        _, step = _max_step(db)
        if step >= AFTER:
            return step
        time.sleep(0.2)
    raise AssertionError(f"no step {AFTER} stored in {timeout} s")


def _run(home: Path) -> tuple[str, dict]:
    import sqlite3

    con = sqlite3.connect(f"file:{home / 'tally.db'}?mode=ro", uri=True)
    try:
        run_id, status, message = con.execute("SELECT id, status, message FROM runs").fetchone()
        ckpts = [r[0] for r in con.execute("SELECT step FROM checkpoints WHERE run_id=?",
                                           (run_id,))]
        last = con.execute("SELECT max(step) FROM steps WHERE run_id=?", (run_id,)).fetchone()[0]
    finally:
        con.close()
    return run_id, {"status": status, "message": message, "checkpoints": ckpts, "last": last}


@pytest.fixture
def stop_home(rel_home, tmp_path):
    home = copy_home(rel_home, tmp_path / "home")
    ray_tmp = tempfile.mkdtemp(prefix="ts-", dir="/tmp")  # short: Ray's socket paths live here
    env = {**os.environ, "TALLY_HOME": str(home), "RAY_TMPDIR": ray_tmp}
    for k in ("TALLY_DB", "RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH"):
        env.pop(k, None)
    yield home, ray_tmp, env
    for line in _ray_processes(ray_tmp):  # never leave them behind, even when the test failed
        try:
            os.kill(int(line.split()[0]), signal.SIGKILL)
        except OSError:
            pass
    shutil.rmtree(ray_tmp, ignore_errors=True)


def _no_ray_left(ray_tmp: str) -> list[str]:
    deadline = time.time() + 20
    left = _ray_processes(ray_tmp)
    while left and time.time() < deadline:  # children die a moment after their parent
        time.sleep(0.5)
        left = _ray_processes(ray_tmp)
    return left


@pytest.mark.slow
def test_ctrl_c_in_a_terminal_interrupts_the_run_resumably(stop_home):
    home, ray_tmp, env = stop_home
    if shutil.which("tmux") is None:
        pytest.fail("tmux is not installed (.ci/run installs it)")
    session, done = f"tally-{uuid.uuid4().hex[:8]}", home.parent / "exit-code"
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()
                       if k in ("TALLY_HOME", "RAY_TMPDIR", "PATH", "HOME"))
    cmd = (f"cd {shlex.quote(str(ROOT))} && env {exports} {shlex.quote(PY)} cli.py "
           f"{' '.join(ARGS)}; echo $? > {shlex.quote(str(done))}; sleep 300")
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "200", "-y", "50", cmd],
                   check=True)
    try:
        _wait_for_steps(home / "tally.db", lambda: not done.exists())
        subprocess.run(["tmux", "send-keys", "-t", session, "C-c"], check=True)
        deadline = time.time() + 180
        while not done.exists() and time.time() < deadline:
            time.sleep(0.5)
        screen = subprocess.run(["tmux", "capture-pane", "-p", "-t", session],
                                capture_output=True, text=True).stdout
        assert done.exists(), screen
        code = int(done.read_text().strip())
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    run_id, run = _run(home)
    assert code == 130, screen
    assert f"resume with `tally train --resume {run_id}`" in " ".join(screen.split()), screen
    assert run["status"] == "interrupted", run
    assert run["checkpoints"] and max(run["checkpoints"]) == run["last"], run  # checkpointed
    assert _no_ray_left(ray_tmp) == []


@pytest.mark.slow
def test_sigterm_checkpoints_and_exits_143(stop_home):
    home, ray_tmp, env = stop_home
    with open(home.parent / "stderr.txt", "w") as fe:
        proc = subprocess.Popen([PY, "cli.py", *ARGS], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=fe, start_new_session=True)
    try:
        _wait_for_steps(home / "tally.db", lambda: proc.poll() is None)
        proc.send_signal(signal.SIGTERM)  # the process alone, as a scheduler does
        code = proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = (home.parent / "stderr.txt").read_text()
    run_id, run = _run(home)
    assert code == 143, err[-2000:]
    assert f"--resume {run_id}" in err and "Traceback" not in err, err[-2000:]
    assert run["status"] == "interrupted" and "SIGTERM" in run["message"], run
    assert run["checkpoints"] and max(run["checkpoints"]) == run["last"], run
    assert _no_ray_left(ray_tmp) == []
