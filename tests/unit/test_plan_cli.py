"""`plan` and `models` through the CLI: LLaMA's published figures, the JSON shape, stored plans,
and bad input as one line with exit 2."""

from __future__ import annotations

import math

import pytest

from orchestrator.store.home import Home
from orchestrator.store import Fit, open_store
from planners.scaling import CHINCHILLA, EPOCH
from tests.conftest import assert_bad_input

LLAMA_65B = ["plan", "--model", "65b", "--train-tokens", "1.4T", "--gpu", "a100-80gb",
             "--gpus", "2048", "--throughput", "380", "--json"]


def test_llama_65b_time_and_footprint(home, run_cli):
    """LLaMA §2.4 and Table 15: about 21 days, 1,022,362 GPU-hours, 449 MWh, 173 tCO2eq."""
    res = run_cli(*LLAMA_65B)
    assert res.code == 0, res.stderr
    plan = res.json()
    given = plan["options"][0]
    assert given["label"] == "given" and given["params"] == 65_285_660_672
    assert given["days"] == pytest.approx(20.8, abs=0.05)  # "about 21 days"
    assert given["gpu_hours"] == pytest.approx(1_022_362, rel=2e-3)
    assert given["energy_mwh"] == pytest.approx(449, rel=5e-3)
    assert given["tco2eq"] == pytest.approx(173, rel=5e-3)
    assert given["train_mfu"] == pytest.approx(0.48, abs=0.005)
    a = plan["assumptions"]
    assert a["pue"]["value"] == 1.1 and "LLaMA" in a["pue"]["source"]
    assert a["intensity_kg_per_kwh"]["value"] == 0.385 and a["gpu_power_w"]["value"] == 400
    assert a["throughput_tokens_per_s_per_gpu"]["source"] == "given (--throughput)"
    # the plan is stored with its id
    stored = open_store(None, Home.resolve()).get_plan(plan["id"])
    assert stored.outputs["options"][0]["gpu_hours"] == pytest.approx(given["gpu_hours"])
    assert stored.inputs["model"] == "65b"


def test_models_json_exact_params(home, run_cli):
    res = run_cli("models", "--json")
    assert res.code == 0
    rows = {r["name"]: r for r in res.json()}
    assert {k: rows[k]["params"] for k in ("7b", "13b", "33b", "65b")} == {
        "7b": 6_738_415_616, "13b": 13_015_864_320, "33b": 32_528_943_616,
        "65b": 65_285_660_672}
    r = rows["65b"]
    assert (r["dim"], r["n_layers"], r["n_heads"], r["ffn_hidden"], r["vocab_size"]) == \
        (8192, 80, 64, 22016, 32000)
    assert (r["lr"], r["train_tokens"]) == (1.5e-4, 1_400_000_000_000)
    assert "batch_tokens" in r
    human = run_cli("models")
    assert human.code == 0 and "6,738,415,616" in human.stdout


def test_optimise_json_shape_and_ordering(home, run_cli):
    res = run_cli("plan", "--target-perf", "1.947", "--inference-budget", "2T", "--json")
    assert res.code == 0, res.stderr
    plan = res.json()
    assert plan["target_loss"] == 1.947 and plan["fit"]["name"] == "chinchilla"
    opts = {o["label"]: o for o in plan["options"]}
    assert list(opts) == ["chinchilla", "inference-optimal", "cost-optimal", "7b", "13b", "33b",
                          "65b"]
    for o in plan["options"]:
        for key in ("params", "tokens", "loss", "train_flops", "inference_flops", "total_flops",
                    "gpu_hours", "days", "cost_usd", "energy_mwh", "tco2eq"):
            assert isinstance(o[key], (int, float)) and math.isfinite(o[key]), (o["label"], key)
        assert o["total_flops"] == pytest.approx(o["train_flops"] + o["inference_flops"])
    chin, inf, cost = opts["chinchilla"], opts["inference-optimal"], opts["cost-optimal"]
    assert chin["params"] == pytest.approx(3.408e10, rel=1e-3)
    assert inf["params"] == pytest.approx(2.418e10, rel=5e-3)
    assert inf["total_flops"] < chin["total_flops"]
    assert cost["cost_usd"] <= inf["cost_usd"] <= chin["cost_usd"]
    assert inf["savings_vs_chinchilla"]["flops_pct"] == pytest.approx(4.8, abs=0.1)
    for o in (chin, inf, cost):
        assert o["loss"] == pytest.approx(1.947, abs=1e-9)
    assert opts["7b"]["loss"] == pytest.approx(CHINCHILLA.loss(6_738_415_616, 1e12))
    mem = plan["memory"]
    assert mem["for"] == "cost-optimal"
    for key in ("with_checkpointing", "without_checkpointing"):
        m = mem[key]
        assert m["min_gpus"] >= 1 and m["min_nodes"] == -(-m["min_gpus"] // 8)
        for k in ("params_bytes", "grads_bytes", "optimizer_bytes", "activations_bytes",
                  "total_bytes_per_device"):
            assert m[k] > 0
    assert plan["id"].startswith("plan-")


def test_target_forms(home, run_cli):
    loss = lambda *args: run_cli("plan", "--no-presets", "--json", *args).json()["target_loss"]  # noqa: E731
    assert loss("--target-perf", "ppl=7.8") == pytest.approx(math.log(7.8))
    seven = loss("--target-perf", "7b")
    assert seven == loss("--target-perf", "llama-7b") == pytest.approx(
        CHINCHILLA.loss(6_738_415_616, 1e12))
    assert loss("--target-perf", "7b", "--fit", "epoch") == pytest.approx(
        EPOCH.loss(6_738_415_616, 1e12))
    custom = loss("--target-perf", "13b", "--fit", "E=1.69,A=406.4,B=410.7,alpha=0.336,beta=0.283")
    assert custom == pytest.approx(CHINCHILLA.loss(13_015_864_320, 1e12))


def test_overrides_change_the_figures(home, run_cli):
    base = run_cli("plan", "--target-perf", "2.1", "--no-presets", "--json").json()
    fr = run_cli("plan", "--target-perf", "2.1", "--no-presets", "--region", "FRA",
                 "--pue", "1.2", "--price", "3", "--json").json()
    b, f = base["options"][0], fr["options"][0]
    ci = fr["assumptions"]["intensity_kg_per_kwh"]
    assert "FRA" in ci["source"] and ci["value"] < 0.385
    assert f["energy_mwh"] == pytest.approx(b["energy_mwh"] * 1.2 / 1.1)
    assert f["tco2eq"] == pytest.approx(b["tco2eq"] * 1.2 / 1.1 * ci["value"] / 0.385)
    assert f["cost_usd"] == pytest.approx(b["cost_usd"] * 2)
    assert base["assumptions"]["gpu"]["source"].startswith("assumed: LLaMA")


def test_requests_demand_and_cost_view(home, run_cli):
    res = run_cli("plan", "--target-perf", "2.0", "--requests", "1e9", "--prompt-tokens", "1500",
                  "--output-tokens", "500", "--inference-gpu", "h100", "--decode-mfu", "0.02",
                  "--no-presets", "--json")
    assert res.code == 0, res.stderr
    plan = res.json()
    assert plan["demand"] == {"prompt_tokens": 1.5e12, "output_tokens": 5e11,
                              "inference_tokens": 2e12}
    opts = {o["label"]: o for o in plan["options"]}
    assert opts["cost-optimal"]["params"] < opts["inference-optimal"]["params"]
    assert opts["cost-optimal"]["cost_usd"] < opts["inference-optimal"]["cost_usd"]


def test_stored_fit_by_name(home, run_cli):
    store = open_store(None, Home.resolve())
    with store.write() as s:
        s.add(Fit(name="mine", constants={"E": 1.8, "A": 400.0, "B": 1000.0, "alpha": 0.33,
                                          "beta": 0.3}, details={}))
    plan = run_cli("plan", "--target-perf", "2.2", "--fit", "mine", "--json").json()
    assert plan["fit"]["name"] == "mine" and plan["fit"]["E"] == 1.8
    assert_bad_input(run_cli("plan", "--target-perf", "2.2", "--fit", "yours"),
                     "yours", "chinchilla", "epoch", "mine")


def test_human_output(home, run_cli):
    res = run_cli("plan", "--target-perf", "13b", "--inference-budget", "2T")
    assert res.code == 0, res.stderr
    for needle in ("inference-optimal", "cost-optimal", "assumed: LLaMA convention",
                   "with activation checkpointing", "Stored as plan plan-"):
        assert needle in res.stdout


@pytest.mark.parametrize("args,needles", [
    (["--target-perf", "1.69"], ["unreachable", "E = 1.69"]),
    (["--target-perf", "1.5"], ["unreachable"]),
    (["--target-perf", "1.8", "--fit", "epoch"], ["unreachable", "1.8172"]),
    (["--target-perf", "ppl=0.5"], ["perplexity"]),
    (["--target-perf", "99b"], ["99b", "7b", "ppl=7.8"]),
    (["--target-perf", "2", "--inference-budget", "-2T"], ["--inference-budget"]),
    (["--target-perf", "2", "--gpus", "0"], ["--gpus"]),
    (["--target-perf", "2", "--gpus", "-8"], ["--gpus"]),
    (["--target-perf", "2", "--fit", "nope"], ["nope", "chinchilla", "epoch"]),
    (["--target-perf", "2", "--fit", "E=1,A=2"], ["E=1,A=2", "alpha"]),
    (["--model", "llama-99b"], ["llama-99b", "65b"]),
    (["--model", "99b"], ["99b", "65b", "--train-tokens"]),
    (["--target-perf", "2", "--gpu", "tpu-v5"], ["tpu-v5", "a100-80gb"]),
    (["--target-perf", "2", "--region", "atlantis"], ["atlantis", "FRA"]),
    (["--target-perf", "2", "--pue", "-1"], ["PUE", "1.1"]),
    (["--target-perf", "2", "--intensity", "-0.1"], ["intensity"]),
    (["--target-perf", "2", "--mfu", "0"], ["--mfu"]),
    (["--target-perf", "2", "--price", "-1"], ["--price"]),
    (["--target-perf", "2", "--throughput", "380"], ["--throughput", "--model"]),
    (["--model", "65b", "--throughput", "1e9"], ["MFU"]),
    (["--model", "7e9"], ["--train-tokens"]),
    (["--target-perf", "2", "--model", "7b"], ["not both"]),
    (["--target-perf", "2", "--requests", "1e9"], ["--prompt-tokens"]),
    (["--target-perf", "2", "--seq-len", "0"], ["--seq-len"]),
    ([], ["--target-perf"]),
])
def test_bad_input_is_one_line(home, run_cli, args, needles):
    assert_bad_input(run_cli("plan", *args), *needles)


def test_inference_budget_zero_is_the_chinchilla_question(home, run_cli):
    """Nothing served: the inference-optimal model is the training-compute-optimal one."""
    zero = run_cli("plan", "--target-perf", "2.0", "--inference-budget", "0", "--json")
    none = run_cli("plan", "--target-perf", "2.0", "--json")
    assert zero.code == 0, zero.stderr
    opt = {o["label"]: o for o in zero.json()["options"]}
    ref = {o["label"]: o for o in none.json()["options"]}
    assert opt["inference-optimal"]["params"] == pytest.approx(ref["inference-optimal"]["params"])
    assert zero.json()["assumptions"]["inference_tokens"]["value"] == 0
