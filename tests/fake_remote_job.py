"""A stand-in for `cli.py train ... --events` in tests of the Jobs-API path (tests/test_dashboard.py):
prints the @tally event lines train prints, plus what it sees of the shipped working directory."""

import json
import os
import sys
import time


def event(obj: dict) -> None:
    print("@tally " + json.dumps(obj), flush=True)


print("plain log line: starting", flush=True)
event({"type": "run", "run_id": "remote-side", "preset": "tiny", "argv": sys.argv[1:],
       "python": sys.executable, "files": sorted(os.listdir("."))})
STEPS = 12 if "--slow" in sys.argv else 3  # --slow: one step a second, to drop the follower
for step in range(1, STEPS + 1):
    if "--slow" in sys.argv:
        time.sleep(1.0)
    event({"type": "step", "step": step, "tokens": 512 * step, "loss": 10.0 / step, "lr": 1e-3,
           "tokens_per_s": 1000.0, "time": "2026-11-23T05:00:%02dZ" % step})
print("@tally {not json", flush=True)
event({"type": "checkpoint", "step": STEPS, "path": "/shared/ckpt/step-3", "complete": True})
event({"type": "energy", "node": "head", "device": "cpu", "time": "2026-11-23T05:00:04Z",
       "window_s": 3.0, "joules": 30.0, "watts": 10.0, "source": "estimate"})
event({"type": "status", "status": "completed" if "--fail" not in sys.argv else "failed"})
sys.exit(3 if "--fail" in sys.argv else 0)
