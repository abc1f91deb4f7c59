"""A node lost from a multi-node Ray cluster (ray.cluster_utils.Cluster on this machine): the run
waits for capacity, restarts its workers and resumes from the newest complete checkpoint, with an
unbroken history equal to the uninterrupted run's. The cluster lives in a subprocess
(node_loss_run.py) so the session's shared Ray is untouched."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile

import pytest

from tests.reliability._record import record_attempt
from tests.reliability.conftest import PY, ROOT, STEPS, assert_same_history, copy_home


@pytest.mark.slow
# CI runs one attempt (about 85 s); TALLY_NODE_LOSS_REPEAT=N runs N, each recorded
@pytest.mark.parametrize("attempt", range(int(os.environ.get("TALLY_NODE_LOSS_REPEAT", "1"))))
def test_node_lost_mid_run_is_survived(attempt, rel_home, reference, tmp_path):
    home = copy_home(rel_home, tmp_path / "home")
    out = tmp_path / "result.json"
    ray_tmp = tempfile.mkdtemp(prefix="tn-", dir="/tmp")
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "TALLY_HOME": str(home),
           "TALLY_NODE_LOSS_TIMEOUT_S": "540"}
    for k in ("TALLY_DB", "RAY_ADDRESS"):
        env.pop(k, None)
    proc = subprocess.Popen([PY, "-m", "tests.reliability.node_loss_run", str(home), str(out)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # anything of that cluster still alive
        except OSError:
            pass
        shutil.rmtree(ray_tmp, ignore_errors=True)
    res = json.loads(out.read_text()) if out.exists() else {"error": "no result written"}
    got = [tuple(x) for x in res.get("losses", [])]
    survived = ("error" not in res and res.get("status") == "completed"
                and [s for s, _ in got] == list(range(1, STEPS + 1)))
    record_attempt("node-lost", survived, nodes="head (0 CPU) + 2 workers (1 CPU each)",
                   status=res.get("status"), error=res.get("error"),
                   removed_after_step=res.get("removed_after_step"),
                   resumed_from_step=(res.get("resumes") or [{}])[-1].get("step"),
                   replacement_joined_s=res.get("replacement_joined_s"),
                   recovery_s_loss_to_next_step=res.get("recovery_s_loss_to_next_step"))
    assert out.exists(), log[-3000:]
    assert "error" not in res, res.get("error")
    assert res["nodes_before"] == 3
    assert res["status"] == "completed", (res, log[-3000:])
    assert_same_history(got, reference["losses"], rel=1e-4)  # 1 thread per worker here
    assert res["val_loss"] == pytest.approx(reference["val_loss"], rel=1e-4)
    assert res["resumes"] and res["resumes"][-1]["step"] % 3 == 0
    assert res["resumes"][-1]["step"] <= res["removed_after_step"] + 1
