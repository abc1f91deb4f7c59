"""Launch planning without Ray: the GPU as NVML names it, the assumptions resolved once, the
pre-flight, and the dry run of a launch this machine cannot hold."""

from __future__ import annotations

import pytest

from model.presets import get_preset
from orchestrator.run.launch import local_capacity, peak_flops
from orchestrator.run.launcher import dry_run_launch, plan_for
from orchestrator.run.spec import RunSpec
from planners.assumptions import resolve_gpu
from planners.hardware import gpu_for_device_name
from tests.fake_pynvml import FakeGpu, make_module

CPU_BOX = {"cpus": 2, "gpus": 0, "gpu_name": None, "memory_bytes": 16e9, "nodes": 1}


@pytest.mark.parametrize("name,want", [
    ("NVIDIA A100-SXM4-80GB", "a100-80gb"), ("NVIDIA A100-SXM4-40GB", "a100-40gb"),
    ("NVIDIA A100 80GB PCIe", "a100-pcie-80gb"), ("NVIDIA A100-PCIE-40GB", "a100-pcie-40gb"), ("NVIDIA H100 80GB HBM3", "h100"),
    ("NVIDIA H100 PCIe", "h100-pcie"), ("NVIDIA H200", "h200"),
])
def test_nvml_names_map_to_the_catalogue(name, want):
    gpu, known = gpu_for_device_name(name)
    assert (gpu.name, known) == (want, True)


def test_an_unknown_gpu_is_a_warning_naming_the_figures():
    r = resolve_gpu(None, "NVIDIA L40S", "cuda")
    assert r["gpu"] == "a100-80gb" and "L40S" in r["gpu_warning"] and "312 TFLOP/s" in r["gpu_warning"]
    assert resolve_gpu("h100", "NVIDIA A100-SXM4-80GB", "cuda")["gpu"] == "h100"  # given wins
    assert resolve_gpu(None, None, "cpu")["gpu"] is None


def test_a_detected_h100_sets_mfu_peak_memory_and_price():
    """The failure reported: without --gpu an H100 run used A100 figures (MFU ~3x too high)."""
    cap = {"cpus": 16, "gpus": 8, "gpu_name": "NVIDIA H100 80GB HBM3", "memory_bytes": 1e12,
           "nodes": 1}
    launch = plan_for(get_preset("1b"), RunSpec(preset="1b", workers=8), cap)
    a = launch["assumptions"]
    assert launch["device"] == "cuda" and a["gpu"] == "h100" and "NVML" in a["gpu_source"]
    assert peak_flops(a, "cuda") == 989e12
    assert a["price_usd_per_gpu_hour"] == 2.0


def test_local_capacity_reads_nvml(monkeypatch):
    import sys

    fake = make_module([FakeGpu("GPU-1", name="NVIDIA H200"), FakeGpu("GPU-2", name="NVIDIA H200")])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    cap = local_capacity()
    assert cap["gpus"] == 2 and cap["gpu_name"] == "NVIDIA H200"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert local_capacity()["gpus"] == 1


def test_dry_run_of_33b_without_gpus_shows_the_cluster_it_needs():
    """The failure reported: one A100, 21,120 days, gpu None, price None."""
    out = dry_run_launch(get_preset("33b"), RunSpec(preset="33b"), CPU_BOX)
    launch, a, pred = out["launch"], out["assumptions"], out["prediction"]
    assert launch["device"] == "cuda" and launch["workers"] >= 8, launch
    assert a["gpu"] == "a100-80gb" and a["price_usd_per_gpu_hour"] == 1.5
    assert pred["days"] < 21_120 / 4 and pred["cost_usd"] > 0
    assert "shown on the" in out["preflight"]


def test_dry_run_keeps_the_workers_and_gpu_given():
    out = dry_run_launch(get_preset("7b"), RunSpec(preset="7b", workers=64, gpu="h100"),
                         {**CPU_BOX, "gpus": 64, "gpu_name": None})
    assert out["launch"]["workers"] == 64 and out["assumptions"]["gpu"] == "h100"
    assert out["preflight"] == "fits"


def test_tiny_on_this_machine_fits_on_cpu():
    out = dry_run_launch(get_preset("tiny"), RunSpec(preset="tiny", workers=2), CPU_BOX)
    assert out["preflight"] == "fits" and out["launch"]["device"] == "cpu"
    assert out["launch"]["cpus_per_worker"] == 1 and out["prediction"] == {}


def test_33b_on_the_cluster_it_needs_fits_by_syncing_every_micro_batch():
    """With gradient accumulation FSDP2 keeps the unsharded fp32 gradients between micro-batches
    (132 GB for 33b: more than any GPU): the launch reduce-scatters after every micro-batch
    instead, and the memory plan, the pre-flight and the worker all follow it."""
    from orchestrator.run.launch import launch_memory

    out = dry_run_launch(get_preset("33b"), RunSpec(preset="33b"), CPU_BOX)
    launch = out["launch"]
    assert launch["accumulation"] > 1 and launch["sync_each_micro_batch"] is True, launch
    assert "shown on the" in out["preflight"] and "there:" not in out["preflight"], out["preflight"]
    assert out["memory"]["grad_accumulation"] is False
    assert any("after every micro-batch" in n for n in launch["notes"])
    # the same launch holding the unsharded gradients would not fit an A100-80GB
    from dataclasses import replace

    from orchestrator.run.launch import plan_launch
    plan = plan_launch(get_preset("33b"), workers=launch["workers"], device="cuda",
                       cpus_per_worker=1, max_steps=None, tokens=None, batch_tokens=None,
                       micro_batch=1, lr=None, warmup_steps=None, checkpoint_every=None,
                       activation_checkpointing=True)
    held = launch_memory(get_preset("33b"), replace(plan, sync_each_micro_batch=False))
    assert held["total_bytes_per_device"] > 80e9


def test_small_models_keep_gradients_unsharded_between_micro_batches():
    cap = {"cpus": 16, "gpus": 8, "gpu_name": "NVIDIA H100 80GB HBM3", "memory_bytes": 1e12,
           "nodes": 1}
    plan = plan_for(get_preset("1b"), RunSpec(preset="1b", workers=8, micro_batch=1), cap)["plan"]
    assert plan.accumulation > 1 and plan.sync_each_micro_batch is False
