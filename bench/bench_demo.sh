#!/usr/bin/env bash
# The README's main command on a fresh clone, timed phase by phase (issue 5: under 10 minutes,
# set-up included, ending with a trained `tiny` run in the store).
#
#   bash bench/bench_demo.sh [CLONE_DIR]      # default: a new directory under /tmp
#
# Clones the current commit of this checkout (committed work only), runs `make setup` and then
# each command of `make demo` exactly as the Makefile lists them, and writes
# bench/results/demo.md (phase times, the machine, the load, the run `runs --json` shows).
# The pip cache is left as it is: its size before the run is recorded.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
clone="${1:-$(mktemp -d /tmp/tally-demo.XXXXXX)}"
out="$here/bench/results/demo.md"
log="$clone.log"

now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.1f}')"; }

rm -rf "$clone"
git clone -q "$here" "$clone"
commit="$(git -C "$clone" rev-parse --short HEAD)"
pip_cache="$(du -sh "$(python3 -m pip cache dir 2>/dev/null || echo ~/.cache/pip)" 2>/dev/null | cut -f1 || echo none)"
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
cd "$clone"
: >"$log"

declare -a names times
phase() {  # phase NAME COMMAND...
  local t0 t1
  t0="$(now)"
  "${@:2}" >>"$log" 2>&1
  t1="$(now)"
  names+=("$1"); times+=("$(secs "$t0" "$t1")")
  echo "$1: ${times[-1]} s" >&2
}

start="$(now)"
phase "make setup (venv + pip install)" make setup
# the demo's own commands, read from the Makefile so this stays what `make demo` runs
while IFS= read -r cmd; do
  phase "${cmd#\$(BIN)/python }" bash -c "${cmd//\$(BIN)/.venv/bin}"
done < <(sed -n '/^demo:/,/^$/p' Makefile | sed -n 's/^\t//p')
total="$(secs "$start" "$(now)")"
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"
runs_json="$(.venv/bin/python cli.py runs --json)"

{
  echo "# The README's main command on a fresh clone (bench/bench_demo.sh)"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); commit $commit; $(uname -srm)"
  echo "- CPU: $(python3 -c 'import sys; sys.path.insert(0, "'"$here"'/bench"); import machine; print(machine.cpu_model())'); cores: $(nproc); memory: $(free -g | awk '/Mem:/{print $2}') GiB"
  echo "- load (1/5/15-min) before: $load_before; after: $load_after"
  echo "- pip cache before the run: ${pip_cache:-none} (packages come from the registry)"
  echo
  echo "| phase | seconds |"
  echo "|---|---|"
  for i in "${!names[@]}"; do echo "| \`${names[$i]}\` | ${times[$i]} |"; done
  echo "| **total** | **$total** |"
  echo
  RUNS_JSON="$runs_json" python3 - "$total" <<'PY'
import json, os, sys
total = float(sys.argv[1])
runs = json.loads(os.environ["RUNS_JSON"])
tiny = [r for r in runs if r["preset"] == "tiny" and r["status"] == "completed"]
verdict = "met" if total < 600 and tiny else "NOT met"
print(f"**Target (issue 5): under 10 minutes, set-up included, ending with a trained tiny run: "
      f"{total / 60:.1f} min, {len(tiny)} completed tiny run(s) in the store: {verdict}.**")
print()
for r in runs:
    print(f"- run {r['id']}: {r['preset']} {r['status']}, {r['steps']} steps, "
          f"{r['tokens']:,} tokens, final loss {r['final_loss']:.4f}")
PY
} >"$out"
cat "$out"
