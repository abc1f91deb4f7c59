"""A node lost mid-run, on a Ray cluster simulated on this machine (run in its own process by
test_node_loss.py, so its Ray is separate from the test session's):

    python -m tests.reliability.node_loss_run TALLY_HOME RESULT_JSON

Head (no CPUs: it schedules no training) + 2 worker nodes with 1 CPU each, so the 2 training
workers sit on different nodes. After step KILL_AFTER one worker node is removed (its raylet and
workers die, as when a machine is lost); a replacement node joins a second later. With
max_failures > 0 the run restarts its worker group once the capacity is back and resumes from
the newest complete checkpoint. Writes what happened as JSON.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path

KILL_AFTER = 4


def main(home_dir: str, out: str) -> None:
    import ray
    from ray.cluster_utils import Cluster

    from orchestrator.store.home import Home
    from orchestrator.run.launcher import train
    from orchestrator.store import Store
    from tests.reliability.conftest import events, losses, request, step_times, val_loss

    result: dict = {"phase": "cluster"}
    stuck = False
    cluster = Cluster(initialize_head=True, connect=False,
                      head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        # anything that would auto-connect (a late ray.get after shutdown) finds this cluster,
        # never another instance on the machine
        os.environ["RAY_ADDRESS"] = cluster.address
        workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        result["nodes_before"] = len([n for n in ray.nodes() if n["Alive"]])
        home = Home(Path(home_dir))
        outcome: dict = {}
        started: dict = {}

        def run():
            try:
                outcome["summary"] = train(Store(home.db_url), home, request(max_failures=3),
                                           on_start=started.update)
            except Exception as e:  # RunFailed: recorded, not raised
                outcome["error"] = f"{type(e).__name__}: {e}"

        result["phase"] = "training"
        thread = threading.Thread(target=run)
        thread.start()
        deadline = time.time() + float(os.environ.get("TALLY_NODE_LOSS_TIMEOUT_S", 240))
        while time.time() < deadline and thread.is_alive():
            if "run_id" in started and losses(home.root, started["run_id"]) and \
                    losses(home.root, started["run_id"])[-1][0] >= KILL_AFTER:
                break
            time.sleep(0.1)
        run_id = started["run_id"]
        result["run_id"] = run_id
        result["removed_after_step"] = losses(home.root, run_id)[-1][0]
        t_lost = time.time()
        cluster.remove_node(workers[1], allow_graceful=False)
        result["phase"] = "node removed"
        time.sleep(1.0)
        cluster.add_node(num_cpus=1)
        result["replacement_joined_s"] = round(time.time() - t_lost, 2)
        thread.join(timeout=max(1.0, deadline - time.time()))
        result["phase"] = "joined" if not thread.is_alive() else "timed out"
        stuck = thread.is_alive()
        result["outcome"] = {k: (v if k == "error" else v.get("status"))
                             for k, v in outcome.items()}
        result["status"] = Store(home.db_url).get_run(run_id).status
        result["losses"] = losses(home.root, run_id)
        result["val_loss"] = val_loss(home.root, run_id)
        result["resumes"] = [e.details for e in events(home.root, run_id, "resume")]
        later = [t for _, t in step_times(home.root, run_id) if t > t_lost]
        result["recovery_s_loss_to_next_step"] = round(min(later) - t_lost, 2) if later else None
    except Exception:
        result["error"] = traceback.format_exc()
    finally:
        Path(out).write_text(json.dumps(result))
        if stuck:  # the training thread still holds Ray: leave at once; the test kills the group
            os._exit(3)
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
