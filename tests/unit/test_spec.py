"""The run specification: every `train` option lands in it, any valid specification survives
JSON, a remote job's entry, the queue and --resume unchanged, run files, one validation."""

from __future__ import annotations

import json
import sys
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cli
from orchestrator.run import spec as rs
from orchestrator.run.spec import OPTIONS, RunSpec
from tests.conftest import assert_bad_input

OWN = {"preset", "config", "resume", "dry_run", "events", "spec_json", "json_"}


@pytest.fixture
def captured(monkeypatch, home):
    """`train` as the CLI parses it, with the launcher replaced: the RunSpec it would run."""
    seen: list = []

    def train(store, home, spec, **kw):
        seen.append((spec, kw))
        return {"dry_run": True, "launch": {}, "assumptions": {}}

    import orchestrator.run.launcher as launcher

    monkeypatch.setattr(launcher, "train", train)
    return seen


def _values(f):
    """A value other than the default for a spec field, and how a person types it."""
    typ, kind = str(f.type), f.metadata["kind"]
    if typ.startswith("bool"):
        return (not rs.default(f.name)), [f"--no-{rs.flag(f.name)[2:]}" if rs.default(f.name)
                                          else rs.flag(f.name)]
    special = {"device": "cpu", "policy": "threshold", "gpu": "h100", "storage": "s3://b/p",
               "pue": 1.2, "intensity_kg_per_kwh": 0.2, "address": "ray://head:10001",
               "tracker": "tensorboard"}
    if f.name in special:
        v = special[f.name]
    elif kind == "count":
        return 2e9, [rs.flag(f.name), "2B"]
    elif kind == "int_count":
        return 4000, [rs.flag(f.name), "4k"]
    elif typ.startswith("int"):
        v = 7
    elif typ.startswith("float"):
        v = 0.5
    else:
        v = "x-" + f.name
    return v, [rs.flag(f.name), str(v)]


def test_every_train_option_is_a_spec_field():
    command = cli.typer.main.get_command(cli.app).commands["train"]
    names = {p.name for p in command.params}
    fields = {f.name for f in OPTIONS}
    assert names - OWN == fields, (names - OWN) ^ fields
    assert len(fields) >= 35


@pytest.mark.parametrize("f", OPTIONS, ids=[f.name for f in OPTIONS])
def test_each_option_reaches_the_spec(f, captured, run_cli):
    value, argv = _values(f)
    res = run_cli("train", "tiny", *argv, "--dry-run", "--json")
    assert res.code == 0, res.stderr
    spec, _ = captured[-1]
    assert getattr(spec, f.name) == value
    others = {k: v for k, v in spec.to_dict().items() if k not in (f.name, "preset")}
    assert others == {k: v for k, v in RunSpec().to_dict().items() if k in others}


def test_run_file_groups_flat_keys_and_overrides(tmp_path, captured, run_cli):
    toml = tmp_path / "run.toml"
    toml.write_text('preset = "tiny"\n[schedule]\nmax_steps = "2k"\nlr = 1e-3\n'
                    '[placement]\nworkers = 2\n[footprint]\nregion = "FRA"\n')
    assert run_cli("train", "--config", str(toml), "--workers", "3", "--dry-run").code == 0
    spec, _ = captured[-1]
    assert (spec.preset, spec.max_steps, spec.lr, spec.workers, spec.region) == \
        ("tiny", 2000, 1e-3, 3, "FRA")
    yaml = tmp_path / "run.yaml"
    yaml.write_text("preset: small\nkeep_last: 1\nmeter: false\n")
    assert run_cli("train", "--config", str(yaml), "--dry-run").code == 0
    spec, _ = captured[-1]
    assert (spec.preset, spec.keep_last, spec.meter) == ("small", 1, False)


@pytest.mark.parametrize("text,suffix,needles", [
    ('preset = "tiny"\nwrokers = 2\n', ".toml", ["wrokers", "unknown key"]),
    ('[schedule]\nworkers = 2\n', ".toml", ["workers", "[schedule]"]),
    ("workers: two\n", ".yaml", ["--workers", "two"]),
    ("preset = \n", ".toml", ["not valid TOML"]),
    ("- a\n- b\n", ".yaml", ["table of options"]),
    ("x", ".ini", [".toml"]),
])
def test_bad_run_files(tmp_path, home, run_cli, text, suffix, needles):
    p = tmp_path / f"run{suffix}"
    p.write_text(text)
    assert_bad_input(run_cli("train", "tiny", "--config", str(p), "--dry-run"), *needles)


@pytest.mark.parametrize("argv,needles", [
    (["--workers", "0"], ["--workers", ">= 1"]),
    (["--keep-last", "0"], ["--keep-last"]),
    (["--micro-batch", "0"], ["--micro-batch"]),
    (["--meter-interval", "0"], ["--meter-interval"]),
    (["--device", "tpu"], ["--device", "cuda"]),
    (["--policy", "maybe"], ["--policy", "threshold"]),
    (["--storage", "ftp://x/y"], ["--storage", "s3://"]),
    (["--storage", "s3://"], ["--storage", "bucket"]),
    (["--intensity", "0.2", "--region", "FRA"], ["--intensity", "--region"]),
    (["--gpu", "tpu-v5"], ["tpu-v5", "a100-80gb"]),
    (["--max-steps", "lots"], ["--max-steps", "lots"]),
])
def test_bad_options_are_one_line_exit_2(home, run_cli, argv, needles):
    assert_bad_input(run_cli("train", "tiny", *argv), *needles)


# -- round trips --------------------------------------------------------------------------
def _strategy(f):
    typ, kind = str(f.type), f.metadata["kind"]
    none = st.none() if "None" in typ else st.nothing()
    special = {
        "device": st.sampled_from(rs.DEVICES), "policy": st.sampled_from(rs.CARBON_POLICIES),
        "gpu": none | st.sampled_from(["a100-80gb", "h100", "h200"]),
        "storage": none | st.sampled_from(["/mnt/ckpt", "s3://bucket/tally", "file:///mnt/c"]),
        "pue": none | st.floats(1.0, 3.0), "intensity_kg_per_kwh": st.none(),
        "region": none | st.sampled_from(["FRA", "gcp:europe-west9"]),
        "threshold_g_per_kwh": none | st.floats(0, 5000),
        "preset": st.sampled_from(["tiny", "small", "1b", "7b"]),
        "custom_preset": st.none(), "config_extra": st.none() | st.just({"sweep": {"id": "s"}}),
        "address": none | st.sampled_from(["ray://h:10001", "auto"]),
        "tracker": none | st.sampled_from(rs.TRACKERS),
    }
    if f.name in special:
        return special[f.name]
    if typ.startswith("bool"):
        return st.booleans()
    if kind == "count":
        return none | st.floats(1, 1e13)
    if typ.startswith("int"):
        lo = 0 if f.name in ("warmup_steps", "max_failures", "seed") else 1
        return none | st.integers(lo, 10**9)
    if typ.startswith("float"):
        return none | st.floats(1e-6, 1e6)
    return none | st.text("abcxyz-_.", min_size=1, max_size=12)


specs = st.builds(RunSpec, **{f.name: _strategy(f) for f in rs.FIELDS.values()})
SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(spec=specs)
def test_json_round_trip(spec):
    spec = spec.validate()
    assert RunSpec.from_json(spec.to_json()) == spec
    assert RunSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


@SETTINGS
@given(spec=specs)
def test_remote_job_entry_round_trip(spec, captured, run_cli):
    """What a job on the head parses from its entry point is the spec, bound to its cluster."""
    from orchestrator.run.remote import job_argv

    spec = spec.validate()
    res = run_cli(*job_argv(spec))
    assert res.code == 0, res.stderr
    got, kw = captured[-1]
    assert got == spec.for_remote_job()
    assert not kw.get("dry_run") and kw.get("events") is not None


@SETTINGS
@given(spec=specs)
def test_queue_and_resume_round_trip(spec, captured, home, tmp_path_factory):
    from orchestrator.run.launcher import start_job, stored_spec
    import orchestrator.run.launcher as launcher
    from orchestrator.store import Store

    spec = spec.validate()
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('db')}/t.db")
    try:
        launcher.train = lambda store, home, s, **kw: captured.append((s, kw)) or {"id": "r"}
        start_job({"id": "j", "preset": spec.preset, "options": {"spec": spec.to_dict()}}, store)
        assert captured[-1][0] == spec
        run = store.create_run(spec.preset, {"spec": spec.to_dict()}, status="running")
        assert stored_spec(store, run.id) == spec
    finally:
        store.close()


def test_legacy_runs_resume_from_their_request(home, tmp_path):
    from orchestrator.run.launcher import stored_spec
    from orchestrator.store import Store

    store = Store(f"sqlite:///{tmp_path}/t.db")
    run = store.create_run("tiny", {"request": {"preset": "tiny", "workers": 2, "dry_run": False,
                                                "resume": None, "max_steps": 8}})
    assert stored_spec(store, run.id) == RunSpec(preset="tiny", workers=2, max_steps=8)
    store.close()
