"""`cluster check`: the shipped cluster files pass Ray's own validation and tally's rules;
broken variants are rejected with the reason. Offline: no cloud SDK, no Ray process."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from orchestrator.infra.cluster import INSTANCES, check_cluster_config
from tests.conftest import assert_bad_input

ROOT = Path(__file__).resolve().parents[2]
FILES = ["ray_cluster.yaml", "ray_cluster.gcp.yaml"]


def load(name: str = "ray_cluster.yaml") -> dict:
    return yaml.safe_load((ROOT / name).read_text())


@pytest.mark.parametrize("name", FILES)
def test_shipped_cluster_files_pass(run_cli, name):
    r = run_cli("cluster", "check", str(ROOT / name), "--json")
    assert r.code == 0, r.stdout + r.stderr
    doc = r.json()
    assert doc["ok"] and doc["ray_validation"] == "ok" and doc["problems"] == []
    head = [n for n in doc["node_types"] if n["head"]]
    workers = [n for n in doc["node_types"] if not n["head"]]
    assert head[0]["resources"] == {"CPU": 0, "GPU": 0} and head[0]["instance_gpus"] == 0
    assert all(w["instance_gpus"] == 8 and w["gpu_model"] == "A100-80GB" for w in workers)
    assert {w["instance_type"] for w in workers} <= {"p4de.24xlarge", "a2-ultragpu-8g"}


def test_human_output_and_default_file(run_cli, monkeypatch):
    monkeypatch.chdir(ROOT)
    r = run_cli("cluster", "check")
    assert r.code == 0, r.stderr
    assert "p4de.24xlarge, 8x A100-80GB" in r.stdout and "tally rules: ok" in r.stdout


def write(tmp_path, cfg: dict) -> str:
    p = tmp_path / "cluster.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return str(p)


def _typo(c):
    c["max_worker"] = c.pop("max_workers")


def _no_node_config(c):
    del c["available_node_types"]["gpu_a100x8"]["node_config"]


def _dashboard_all_interfaces(c):
    c["head_start_ray_commands"][1] = c["head_start_ray_commands"][1].replace(
        "--dashboard-host=127.0.0.1", "--dashboard-host=0.0.0.0")


def _auth_off(c):
    c["worker_start_ray_commands"][1] = c["worker_start_ray_commands"][1].replace(
        "RAY_AUTH_MODE=token", "")


def _auth_disabled(c):
    c["head_start_ray_commands"][1] = c["head_start_ray_commands"][1].replace(
        "RAY_AUTH_MODE=token", "RAY_AUTH_MODE=disabled")


def _token_in_file(c):
    c["head_start_ray_commands"][1] = "RAY_AUTH_TOKEN=abc123 " + c["head_start_ray_commands"][1]


def _token_not_mounted(c):
    del c["file_mounts"]["~/.tally-auth"]


def _head_with_cpus(c):
    c["available_node_types"]["head"]["resources"] = {"CPU": 8}


def _wrong_gpu_count(c):
    c["available_node_types"]["gpu_a100x8"]["resources"]["GPU"] = 4


def _start_commands_left_to_ray(c):
    del c["head_start_ray_commands"]
    del c["worker_start_ray_commands"]


BROKEN = [
    (_typo, "'max_worker' was unexpected"),
    (_no_node_config, "'node_config' is a required property"),
    (_dashboard_all_interfaces, "binds the dashboard to 0.0.0.0"),
    (_auth_off, "worker_start_ray_commands[1] starts Ray without token authentication"),
    (_auth_disabled, "RAY_AUTH_MODE is set to something other than `token`"),
    (_token_in_file, "literal RAY_AUTH_TOKEN"),
    (_token_not_mounted, "no file_mounts entry puts on the node"),
    (_head_with_cpus, "advertises CPU=8"),
    (_wrong_gpu_count, "declares GPU=4 but p4de.24xlarge has 8"),
    (_start_commands_left_to_ray, "binds the dashboard to 0.0.0.0"),  # Ray's aws default
]


@pytest.mark.parametrize("mutate,reason", BROKEN, ids=[m.__name__.strip("_") for m, _ in BROKEN])
def test_broken_variants_rejected_with_reason(run_cli, tmp_path, mutate, reason):
    cfg = load()
    mutate(cfg)
    r = run_cli("cluster", "check", write(tmp_path, cfg))
    assert r.code == 2, r.stdout
    assert reason in r.stdout, r.stdout
    assert "problem(s) to fix" in r.stderr and "Traceback" not in r.stderr
    j = run_cli("cluster", "check", write(tmp_path, cfg), "--json")
    assert j.code == 2 and not j.json()["ok"]
    assert any(reason in p for p in j.json()["problems"])


def test_gcp_gpu_node_needs_terminate_on_maintenance():
    cfg = load("ray_cluster.gcp.yaml")
    assert check_cluster_config(copy.deepcopy(cfg))["ok"]
    del cfg["available_node_types"]["gpu_a100x8"]["node_config"]["scheduling"]
    r = check_cluster_config(cfg)
    assert not r["ok"] and any("onHostMaintenance" in p for p in r["problems"])


def test_unknown_instance_type_is_a_warning_not_a_failure():
    cfg = load()
    cfg["available_node_types"]["gpu_a100x8"]["node_config"]["InstanceType"] = "x9.huge"
    r = check_cluster_config(cfg)
    assert r["ok"], r["problems"]
    assert any("'x9.huge'" in w for w in r["warnings"])


def test_instance_table_is_consistent():
    for name, inst in INSTANCES.items():
        assert (inst.gpus == 0) == (inst.gpu is None), name
        assert inst.vcpus >= max(inst.gpus, 1), name


def test_not_yaml_and_missing_file_exit_2(run_cli, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("cluster_name: [unclosed\n  max_workers: 2\n")
    assert_bad_input(run_cli("cluster", "check", str(bad)), "not valid YAML")
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    assert_bad_input(run_cli("cluster", "check", str(scalar)), "not a YAML mapping")
    assert_bad_input(run_cli("cluster", "check", str(tmp_path / "nope.yaml")), "does not exist")


def test_yaml_tags_are_not_executed(run_cli, tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("cluster_name: !!python/object/apply:os.system ['touch pwned']\n")
    assert_bad_input(run_cli("cluster", "check", str(evil)), "not valid YAML")
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()
