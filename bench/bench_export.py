#!/usr/bin/env python3
"""Export time and peak memory: `cli.py export` of a `small` and a `1b` checkpoint.

Each checkpoint is written from random initialisation by our own checkpoint writer
(orchestrator/run/checkpoint.py: DCP, one process, marker and checksums), in a run recorded in a
scratch store. The optimiser is a stateless SGD, so the shards hold the model alone; a training
checkpoint also holds AdamW's two moments (three times the bytes), which the export does not
read but does verify. Each export
runs as its own `cli.py export ... --json` process; its wall time and peak resident memory
(ru_maxrss from wait4) are recorded, with the phases the command reports itself (find and
verify the checkpoint's checksums, DCP read, convert and write).

Usage: python bench/bench_export.py [--presets small,1b] [--out bench/results/export.md]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import cpu_model  # noqa: E402

CASES = [("hf", "bf16"), ("hf", "fp32"), ("meta", "bf16")]


def make_run(home: Path, preset_name: str, tokenizer: Path) -> tuple[str, float, int]:
    import torch

    from model.llama import Transformer
    from model.presets import get_preset
    from orchestrator.run import checkpoint as ckpt
    from orchestrator.store.home import Home
    from orchestrator.store import Store

    preset = get_preset(preset_name)
    store = Store(Home(home).ensure().db_url)
    run = store.create_run(preset.name, {"request": {"data": "none"}}, status="completed")
    run_dir = home / "runs" / run.id
    store.update_run(run.id, storage_path=str(run_dir))
    t0 = time.perf_counter()
    model = Transformer(preset.args)  # random init (normal 0.02), fp32
    # plain SGD keeps no state: the shards hold the model alone (AdamW's two moments would
    # triple the files, 15 GB for 1b, more memory than this shared machine can spare to build)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    ckpt.save(run_dir / "checkpoints", 1, model, opt, {"step": 1})
    shutil.copyfile(tokenizer, run_dir / "tokenizer.model")
    seconds = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in (run_dir / "checkpoints" / "step-00000001").iterdir())
    del model, opt
    return run.id, seconds, size


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", default="small,1b")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "export.md"))
    ap.add_argument("--scratch", default=None, help="Scratch directory (default a temp dir).")
    ap.add_argument("--make-run", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--tokenizer", default=None, help=argparse.SUPPRESS)
    opts = ap.parse_args()
    if opts.make_run:
        print(json.dumps(make_run(Path(opts.scratch) / "home", opts.make_run, Path(opts.tokenizer))))
        return
    from model import tokenizer as tk
    from model.presets import get_preset

    scratch = Path(opts.scratch or tempfile.mkdtemp(prefix="bench-export-"))
    home = scratch / "home"
    text = scratch / "text.txt"
    stdlib = Path(os.__file__).parent
    text.write_text("\n".join(p.read_text(errors="replace")
                              for p in sorted(stdlib.glob("*.py"))[:120]))
    tok = tk.train(text, scratch, "bench", vocab_size=8192)
    load = os.getloadavg()
    rows = []
    for name in opts.presets.split(","):
        # in a child process, so the model and AdamW state it built are gone before the exports
        made = subprocess.run([sys.executable, __file__, "--make-run", name, "--scratch",
                               str(scratch), "--tokenizer", tok.path],
                              capture_output=True, text=True, cwd=ROOT)
        if made.returncode != 0:
            raise SystemExit(made.stderr[-2000:])
        run_id, save_s, ckpt_bytes = json.loads(made.stdout.strip().splitlines()[-1])
        for fmt, dtype in CASES:
            out = scratch / f"out-{name}-{fmt}-{dtype}"
            # ru_maxrss of RUSAGE_CHILDREN is the largest child so far: each export runs under
            # a fresh wrapper process, so each figure is that export's own
            wrapper = [sys.executable, "-c",
                       "import json, resource, subprocess, sys; p = subprocess.run(sys.argv[1:]); "
                       "print(json.dumps({'rc': p.returncode, 'maxrss_kb': "
                       "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}), file=sys.stderr)",
                       sys.executable, str(ROOT / "cli.py"), "export", run_id, "--format", fmt,
                       "--dtype", dtype, "--out", str(out), "--json"]
            env = {**os.environ, "TALLY_HOME": str(home), "HF_HUB_OFFLINE": "1"}
            t0 = time.perf_counter()
            p = subprocess.run(wrapper, env=env, capture_output=True, cwd=ROOT, text=True)
            wall = time.perf_counter() - t0
            meta = json.loads(p.stderr.strip().splitlines()[-1])
            if meta["rc"] != 0:
                raise SystemExit(f"export failed: {p.stderr[-2000:]}")
            info = json.loads(p.stdout)
            rows.append({"preset": name, "params": get_preset(name).params,
                         "checkpoint_bytes": ckpt_bytes, "checkpoint_write_s": save_s,
                         "format": fmt, "dtype": dtype, "wall_s": wall,
                         "peak_rss_bytes": meta["maxrss_kb"] * 1024,
                         "out_bytes": sum(info["files"].values()),
                         "files": len(info["files"]), "phases_s": info["seconds"]})
            print(json.dumps(rows[-1]), flush=True)
            shutil.rmtree(out)
        shutil.rmtree(home / "runs", ignore_errors=True)
    write(opts.out, rows, load)
    shutil.rmtree(scratch, ignore_errors=True)


def write(path: str, rows: list[dict], load) -> None:
    import psutil
    import torch

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Export: time and peak memory",
        "",
        f"Measured {now} by `python bench/bench_export.py` on {cpu_model()}, "
        f"{os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, "
        f"Python {platform.python_version()}, torch {torch.__version__}. Load average at the "
        f"start {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1/5/15 min): the machine is shared "
        "with other sessions' tests, so the times are upper bounds.",
        "",
        "Each export is one `cli.py export RUN --format F --dtype D --out DIR --json` process "
        "(its start-up, imports included) on a checkpoint written by `orchestrator/run/checkpoint.py` "
        "from random initialisation, holding the fp32 model alone (a training checkpoint also "
        "holds AdamW's moments, three times the bytes, which the export verifies but does not "
        "read: the verify column would triple). Peak memory "
        "is the process's maximum resident set (ru_maxrss). Phases are the command's own: "
        "verify = list checkpoints and check every file's sha256 against the marker, read = DCP "
        "load of the model into whole tensors (no process group), write = convert, cast and "
        "write (hf: safetensors in shards of at most 5 GB, config, tokenizer.json).",
        "",
        "| preset | params | checkpoint | format | dtype | files | written | wall s | verify s "
        "| read s | write s | peak RSS |",
        "|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ph = r["phases_s"]
        lines.append(
            f"| {r['preset']} | {r['params'] / 1e6:,.1f} M | {r['checkpoint_bytes'] / 1e9:.2f} GB "
            f"| {r['format']} | {r['dtype']} | {r['files']} | {r['out_bytes'] / 1e9:.2f} GB "
            f"| {r['wall_s']:.1f} | {ph['find_and_verify']:.1f} | {ph['read']:.1f} "
            f"| {ph['write']:.1f} | {r['peak_rss_bytes'] / 2**30:.2f} GiB |")
    lines += ["", "Raw rows:", "", "```json", *[json.dumps(r) for r in rows], "```", ""]
    Path(path).write_text("\n".join(lines))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
