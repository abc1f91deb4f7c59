#!/usr/bin/env bash
# `eval` against lm-evaluation-harness on the same items and the same weights (issue 17).
#
#   bash bench/bench_eval.sh          # env: PY (tally's python), LMEVAL_VENV, STEPS, BATCH
#
# Trains `tiny` for STEPS steps on Python's own json/email/asyncio sources (1 worker, CPU),
# exports it with `export --format hf --dtype fp32`, then scores the project's task files
# (orchestrator/eval/tasks) with lm-eval's `hf` model (add_bos_token=True; local JSON tasks
# in bench/lm_eval_tasks) and with `eval` on the exported directory and on the run itself.
# lm-eval lives in its own venv (LMEVAL_VENV, default /tmp/lmeval-venv: lm-eval from PyPI;
# torch and transformers are taken from tally's venv through a .pth file, so both sides run
# the same kernels). Writes bench/results/eval.md. Nothing reaches the network but PyPI.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
py="${PY:-$here/.venv/bin/python}"
lmeval="${LMEVAL_VENV:-/tmp/lmeval-venv}"
steps="${STEPS:-60}"
batch="${BATCH:-16}"
work="$(mktemp -d /tmp/tally-bench-eval.XXXXXX)"
out="$here/bench/results/eval.md"
export TALLY_HOME="$work/home" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export HF_DATASETS_CACHE="$work/hf-datasets"

if [ ! -x "$lmeval/bin/lm_eval" ]; then
  "$py" -m venv "$lmeval"
  "$py" -c "import site; print(site.getsitepackages()[0])" \
    >"$("$lmeval/bin/python" -c "import site; print(site.getsitepackages()[0])")/tally_base.pth"
  "$lmeval/bin/pip" install -q lm-eval==0.4.13 accelerate==1.15.0  # the hf model needs accelerate
fi
cd "$here"
stdlib="$("$py" -c "import os; print(os.path.dirname(os.__file__))")"
"$py" cli.py data prepare "json=$stdlib/json/*.py" "email=$stdlib/email/*.py" \
  "asyncio=$stdlib/asyncio/*.py" --name bench --vocab-size 2048 --json >"$work/data.json"
"$py" cli.py train tiny --data bench --max-steps "$steps" --workers 1 --no-meter \
  --no-dashboard --json >"$work/train.json"
run="$("$py" -c "import json, sys; print(json.load(open(sys.argv[1]))['id'])" "$work/train.json")"
"$py" cli.py export "$run" --format hf --dtype fp32 --out "$work/hf" --json >"$work/export.json"

tasks="$here/orchestrator/eval/tasks"
mkdir -p "$work/lm_tasks"
for f in bench/lm_eval_tasks/*; do
  sed "s#TASKS_DIR#$tasks#" "$f" >"$work/lm_tasks/$(basename "$f")"
done
names="science_qa completion yes_no blanks"
files="$(for t in $names; do printf '%s,' "$tasks/$t.jsonl"; done)"
lm_tasks="$(for t in $names; do printf 'tally_%s,' "$t"; done)"

t0="$(date +%s.%N)"
"$lmeval/bin/lm_eval" run --model hf \
  --model_args "pretrained=$work/hf,add_bos_token=True,dtype=float32" \
  --tasks "${lm_tasks%,}" --include_path "$work/lm_tasks" --device cpu --batch_size "$batch" \
  --output_path "$work/lm" --log_samples >"$work/lm.log" 2>&1
t1="$(date +%s.%N)"
"$py" cli.py eval "$work/hf" --tasks "${files%,}" --batch-size "$batch" --json >"$work/ours_dir.json"
t2="$(date +%s.%N)"
"$py" cli.py eval "$run" --tasks "${files%,}" --batch-size "$batch" --json >"$work/ours_run.json"

"$py" - "$work" "$out" "$t0" "$t1" "$t2" "$run" "$steps" "$batch" <<'PY'
import glob, json, sys, platform, os
sys.path.insert(0, "bench")
from machine import cpu_model
work, out, t0, t1, t2, run, steps, batch = sys.argv[1:]
lm = json.load(open(sorted(glob.glob(f"{work}/lm/**/results_*.json", recursive=True))[-1]))
ours_dir, ours_run = (json.load(open(f"{work}/ours_{k}.json")) for k in ("dir", "run"))
lm_s = float(lm.get("total_evaluation_time_seconds") or (float(t1) - float(t0)))
rows, same = [], True
for t in ours_dir["tasks"]:
    r = lm["results"][f"tally_{t['task']}"]
    run_t = next(x for x in ours_run["tasks"] if x["task"] == t["task"])
    lm_norm = r.get("acc_norm,none")
    ours_norm = t["acc_norm"] if t["task"] != "blanks" else None
    # yes_no: ours is LLaMA's "Answer:" rule, lm-eval's acc_norm divides by characters
    comparable_norm = t["task"] not in ("yes_no", "blanks")
    ok = abs(r["acc,none"] - t["acc"]) < 1e-12 and (not comparable_norm or
                                                     abs(lm_norm - ours_norm) < 1e-12)
    ok = ok and run_t["acc"] == t["acc"] and run_t["acc_norm"] == t["acc_norm"]
    same &= ok
    f = lambda x: "-" if x is None else f"{100 * x:.2f}"
    rows.append(f"| {t['task']} | {t['n']} | {f(r['acc,none'])} | {f(t['acc'])} | {f(lm_norm)} | "
                f"{f(ours_norm)}{'' if comparable_norm or ours_norm is None else ' (Answer: rule)'} | "
                f"{'yes' if ok else 'NO'} |")
# per choice: lm-eval's log-likelihoods (--log_samples) against tally's scorer on the same dir
sys.path.insert(0, ".")
from orchestrator.eval import scoring
from orchestrator.eval.evaluate import load_dir
from orchestrator.eval.readers import read_file
loaded = load_dir(f"{work}/hf", None)
worst, n_ll = 0.0, 0
for t in ours_dir["tasks"]:
    items = read_file(f"orchestrator/eval/tasks/{t['task']}.jsonl")
    groups = scoring.requests_of(loaded.tok, items)
    lls = scoring.run_plan(loaded.model, scoring.plan_rows(groups, loaded.model.args.max_seq_len), 16)
    path = sorted(glob.glob(f"{work}/lm/**/samples_tally_{t['task']}_*.jsonl", recursive=True))[-1]
    theirs = {d["doc_id"]: [r[0] for r in d["filtered_resps"]] for d in map(json.loads, open(path))}
    pos = 0
    for i, (it, g) in enumerate(zip(items, groups)):
        k = len(it.choices)
        for a, b in zip(lls[pos:pos + k], theirs[i]):
            worst, n_ll = max(worst, abs(a - float(b))), n_ll + 1
        pos += len(g)
n = ours_dir["items"]
text = f"""# eval against lm-evaluation-harness (bench/bench_eval.sh)

Machine: {cpu_model()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}; load
average at the end {open('/proc/loadavg').read().split()[0]} (the machine is shared).
Model: `tiny` trained {steps} steps (run {run}) on Python's json/email/asyncio sources, exported
with `export --format hf --dtype fp32`. lm-eval {lm.get('lm_eval_version', '0.4.13')}, `hf` model,
`add_bos_token=True`, float32, CPU, batch size {batch}; tally `eval` with `--batch-size {batch}`.
Items: orchestrator/eval/tasks (bench/lm_eval_tasks holds the same files as lm-eval tasks;
blanks as lm-eval's winogrande scores it, per-choice contexts, acc only).

| task | n | lm-eval acc % | tally acc % | lm-eval acc_norm % | tally acc_norm % | same (and = eval RUN) |
|---|---|---|---|---|---|---|
""" + "\n".join(rows) + f"""

All the same: {'yes' if same else 'NO'}. Per choice, the {n_ll} log-likelihoods lm-eval logged
(`--log_samples`) and tally's scorer's on the same directory differ by at most {worst:.2e} nats.

yes_no's acc_norm is not comparable: tally scores it with LLaMA's rule (log P(choice|context)
- log P(choice|"Answer:")), lm-eval's acc_norm divides by the choice's characters.

Speed on the same {n} items ({ours_dir['requests']} log-likelihoods; tally ran them in
{ours_dir['rows']} rows, {ours_dir['forwards']} forwards):

| | seconds | items/s |
|---|---|---|
| lm-eval (its total_evaluation_time_seconds: model load + scoring) | {lm_s:.2f} | {n / lm_s:.1f} |
| lm-eval, whole command (Python start-up and imports included) | {float(t1) - float(t0):.2f} | {n / (float(t1) - float(t0)):.1f} |
| tally `eval DIR`, load + scoring | {ours_dir['seconds']['load'] + ours_dir['seconds']['score']:.2f} | {n / (ours_dir['seconds']['load'] + ours_dir['seconds']['score']):.1f} |
| tally `eval DIR`, scoring only | {ours_dir['seconds']['score']:.2f} | {ours_dir['items_per_s']:.1f} |
| tally `eval DIR`, whole command | {float(t2) - float(t1):.2f} | {n / (float(t2) - float(t1)):.1f} |
"""
open(out, "w").write(text)
print(text)
PY
