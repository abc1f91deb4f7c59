#!/usr/bin/env bash
# The whole suite as `make test` runs it (two pytest-xdist workers), timed, with its 40 slowest
# tests and the machine's load before and after. Run it on a quiet machine; the record goes to
# bench/results/suite.md by hand (what else ran, the figures).
set -euo pipefail
cd "$(dirname "$0")/.."
make setup system-packages >/dev/null
echo "machine: $(uname -srm), $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
start=$(date +%s)
.venv/bin/python -m pytest -n "${TEST_WORKERS:-2}" -q -p no:cacheprovider --durations=40 || rc=$?
echo "wall: $(( $(date +%s) - start )) s; load after: $(cut -d' ' -f1-3 /proc/loadavg)"
exit "${rc:-0}"
