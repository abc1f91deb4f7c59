# The two commands (README): `make demo` and `make test`. Both set up .venv first.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export TALLY_HOME ?= $(CURDIR)/.tally

.PHONY: setup demo test test-fast clean

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
# workers (each test file in one worker; each worker its own private Ray instance).
TEST_WORKERS ?= 2
test: setup
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

# Only the fast tests (tests/unit: no Ray, no training), for the edit-test loop.
test-fast: setup
	$(BIN)/python -m pytest -n $(TEST_WORKERS) tests/unit -m "not slow"

clean:
	rm -rf $(VENV) .pytest_cache
