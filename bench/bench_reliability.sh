#!/usr/bin/env bash
# The fault-injection suite (tests/reliability) with its figures merged into the tracked
# bench/results/reliability.json (a plain `make test` writes them outside the checkout).
# Run from the repository root on a quiet machine: bash bench/bench_reliability.sh
set -euo pipefail
cd "$(dirname "$0")/.."
TALLY_RECORD_RELIABILITY=1 .venv/bin/python -m pytest tests/reliability -q "$@"
