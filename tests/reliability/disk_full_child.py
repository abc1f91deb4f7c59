"""Writes under a file-size limit (RLIMIT_FSIZE, no root or mount needed) until the write fails;
run by test_disk_full.py in its own process:

    python -m tests.reliability.disk_full_child store DB_PATH RESULT_JSON
    python -m tests.reliability.disk_full_child checkpoint DIR RESULT_JSON

SIGXFSZ is ignored so an over-limit write fails with EFBIG (as ENOSPC would on a full disk)
instead of killing the process.
"""

from __future__ import annotations

import json
import resource
import signal
import sys
from datetime import datetime
from pathlib import Path


def limit(extra_bytes: int, base: Path) -> int:
    size = base.stat().st_size if base.exists() else 0
    cap = size + extra_bytes
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (cap, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    return cap


def store(db: Path) -> dict:
    from orchestrator.store import Store

    s = Store(f"sqlite:///{db}")
    run = s.create_run("tiny", {"workers": 2}, status="running")
    s.add_steps(run.id, [{"step": 1, "tokens": 1024, "loss": 9.0, "time": datetime.utcnow()}])
    cap = limit(512 * 1024, db)
    written, error, step = 1, None, 1
    try:
        while step < 100_000:
            rows = [{"step": step + i, "tokens": (step + i) * 1024, "loss": 1.0 / (step + i),
                     "time": datetime.utcnow()} for i in range(1, 51)]
            s.add_steps(run.id, rows)
            step += 50
            written = step
    except Exception as e:
        error = f"{type(e).__name__}: {str(e).splitlines()[0]}"
    return {"run_id": run.id, "written": written, "error": error, "limit_bytes": cap}


def checkpoint(root: Path) -> dict:
    import torch

    from orchestrator.run import checkpoint as ckpt

    torch.manual_seed(0)
    model = torch.nn.Linear(256, 256)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 256)).sum().backward()
    opt.step()
    ckpt.save(root, 1, model, opt, {"step": 1})
    cap = limit(16 * 1024, root / "none")
    error = None
    try:
        ckpt.save(root, 2, model, opt, {"step": 2})
    except BaseException as e:  # DCP's CheckpointException is a BaseException
        error = f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:300]}"
    return {"error": error, "limit_bytes": cap}


if __name__ == "__main__":
    what, path, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    result = store(path) if what == "store" else checkpoint(path)
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
    out.write_text(json.dumps(result))
