# The two commands (README): `make demo` and `make test`. Both set up .venv first.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export TALLY_HOME ?= $(CURDIR)/.tally

.PHONY: setup system-packages demo test test-fast clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements.txt -c constraints.txt
	touch $@

# The main job on the embedded default (a private local Ray instance, SQLite under .tally).
demo: setup
	$(BIN)/python cli.py data prepare --demo
	$(BIN)/python cli.py plan --target-perf 13b --inference-budget 2T
	# the loop on this machine: plan the demo run on its CPU, train it from that plan, compare
	$(BIN)/python cli.py plan --model tiny --train-tokens 409600 --gpu cpu --no-presets --json \
		| $(BIN)/python -c "import json, sys; print(json.load(sys.stdin)['id'])" > $(TALLY_HOME)/demo-plan
	$(BIN)/python cli.py train tiny --workers 2 --max-steps 200 --plan $$(cat $(TALLY_HOME)/demo-plan)
	$(BIN)/python cli.py runs
	$(BIN)/python cli.py report carbon

# Everything, slow end-to-end tests included (they run in CI too), in two pytest-xdist
# workers, each with its own private Ray instance; which worker runs what: tests/conftest.py
# (a file per unit, the files sharing a reference run in one unit, the longest first).
TEST_WORKERS ?= 2
test: setup system-packages
	$(BIN)/python -m pytest -n $(TEST_WORKERS)

# The system packages the tests drive for real (Debian's): a Prometheus server that scrapes a
# run (tests/e2e/test_observability.py) and tmux, the terminal Ctrl-C is typed into
# (tests/reliability/test_stop_signals.py). Installed with apt-get where they are missing.
SYSTEM_PACKAGES := prometheus tmux
system-packages:
	@missing=""; for p in $(SYSTEM_PACKAGES); do command -v $$p >/dev/null || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if ! command -v apt-get >/dev/null; then echo "install:$$missing (the tests need them)"; exit 1; fi; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $$missing; \
	fi

# Only the fast tests (tests/unit: no Ray, no training), for the edit-test loop.
test-fast: setup
	$(BIN)/python -m pytest -n $(TEST_WORKERS) tests/unit -m "not slow"

clean:
	rm -rf $(VENV) .pytest_cache
