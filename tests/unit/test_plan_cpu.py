"""`plan --gpu cpu`: this machine's CPU priced from a matmul probe and codecarbon's power model,
so a demo-sized run has a plan on the hardware it runs on."""

from __future__ import annotations

import pytest


def test_plan_on_this_cpu(home, run_cli):
    from orchestrator.energy.local_device import cpu_power_w

    r = run_cli("plan", "--model", "tiny", "--train-tokens", "40960", "--gpu", "cpu",
                "--no-presets", "--json")
    assert r.code == 0, r.stderr
    plan = r.json()
    a = plan["assumptions"]
    assert a["gpu"]["value"] == "cpu" and "this machine" in a["gpu"]["source"]
    assert a["gpus"]["value"] == 1 and a["train_dtype"]["value"] == "fp32"
    cpu_w, ram_w, _ = cpu_power_w()
    assert a["gpu_power_w"]["value"] == pytest.approx(cpu_w + ram_w)
    peak = a["peak_flops"]["value"]
    assert 1e8 < peak < 1e13 and "probe" in a["peak_flops"]["source"]
    given = plan["options"][0]
    assert given["label"] == "given"
    hours = 6 * given["params"] * 40960 / (peak * a["train_mfu"]["value"]) / 3600
    assert given["train_gpu_hours"] == pytest.approx(hours)
    assert given["train_energy_mwh"] == pytest.approx(hours * (cpu_w + ram_w) * 1.1 / 1e6)
    # no hourly price on this machine: no dollars to minimise, so no cost-optimal row
    assert [o["label"] for o in plan["options"]] == ["given", "chinchilla", "inference-optimal"]
    assert plan["memory"]["mixed_precision"] == "none (fp32)"
    assert plan["id"] and run_cli("plan", "--model", "tiny", "--gpu", "cpu",
                                  "--inference-dtype", "fp8").code == 2
