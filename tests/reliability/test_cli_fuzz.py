"""CLI input fuzzing (hypothesis) over every command's options, in-process: whatever the input,
never a traceback or an "internal error"; exit 0, or 2 with a message on stderr. Commands that
would train or fetch data run only in their dry or offline form (`train --dry-run`,
`sweep --dry-run`, `data prepare` without --demo and with sources that do not exist)."""

from __future__ import annotations

import pytest
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cli
from tests.reliability._record import record

# command path -> argv always added (keeps it offline and short)
TARGETS: dict[tuple[str, ...], list[str]] = {
    ("plan",): [], ("models",): [], ("data", "prepare"): [], ("data", "import"): [],
    ("data", "list"): [],
    ("data", "show"): [], ("train",): ["--dry-run"], ("runs",): [], ("runs", "show"): [],
    ("report", "carbon"): [], ("report", "cost"): [], ("report", "run"): [],
    ("schedule", "simulate"): [], ("schedule", "add"): [], ("schedule", "list"): [],
    ("cluster", "check"): [], ("fit",): [], ("fits",): [], ("sweep",): ["--dry-run"],
}
NEVER = {"--demo", "--dry-run", "--address", "--help", "--version", "--plot", "--resume"}
VALUES = ["", "0", "-1", "1", "3", "2T", "500B", "1e13", "1e999", "-1e-9", "nan", "inf", "-inf",
          "tiny", "7b", "65b", "huge", "a100-80gb", "h100", "DEU", "gcp:europe-west9", "nowhere",
          "48h", "-5h", "2026-01-01T00:00:00", "yesterday", "1,2,x", "1e13,3e13", ",", "x=y",
          "x=/nonexistent/*.txt:2", "no-such-run", "llama", "delay", "suspend", "threshold",
          "0.5", "1.5", "200", "99999999999999999999", "ü☃", "--", "'; DROP TABLE runs; --",
          "/nonexistent/file.yaml", "/dev/null", "."]
stats = {"calls": 0, "exit0": 0, "exit2": 0}
EXAMPLES = 6  # per command: 19 commands, about 115 calls (the CI budget)


def _command(path: tuple[str, ...]):
    cmd = typer.main.get_command(cli.app)
    for name in path:
        cmd = cmd.commands[name]
    return cmd


def _argv_strategy(path: tuple[str, ...]):
    cmd = _command(path)
    options, arguments = [], []
    for p in cmd.params:
        if p.param_type_name == "argument":
            arguments.append(p)
        elif not set(p.opts) & NEVER:
            options.append(p)
    value = st.one_of(st.sampled_from(VALUES),
                      st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
                              max_size=12))

    def opt(p):
        name = p.opts[0]
        if p.is_flag:
            return st.just([name])
        return value.map(lambda v: [name, v])

    opt_lists = [st.lists(st.one_of(*[opt(p) for p in options]), max_size=4)] if options else \
        [st.just([])]
    args = st.lists(value, min_size=0, max_size=2)
    return st.tuples(opt_lists[0], args, st.booleans()).map(
        lambda t: [*path, *TARGETS[path], *[x for pair in t[0] for x in pair], *t[1],
                   *(["--json"] if t[2] else [])])


@pytest.mark.slow
@pytest.mark.parametrize("path", list(TARGETS), ids=" ".join)
def test_cli_never_tracebacks(path, run_cli, home):
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                     HealthCheck.too_slow])
    @given(_argv_strategy(path))
    def check(argv):
        res = run_cli(*argv)
        stats["calls"] += 1
        assert "Traceback" not in res.stderr + res.stdout, (argv, res.stderr)
        assert "internal error" not in res.stderr, (argv, res.stderr)
        assert res.code in (0, 2), (argv, res.code, res.stderr)
        if res.code == 2:
            stats["exit2"] += 1
            assert res.stderr.strip(), argv
        else:
            stats["exit0"] += 1
    check()
    record("cli-fuzz", commands=len(TARGETS), examples_per_command=EXAMPLES, **stats)
