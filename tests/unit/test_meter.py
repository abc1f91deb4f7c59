"""Energy meters: NVML against recorded counter sequences (a stand-in pynvml: no GPU here),
codecarbon for real on this machine, one Ray meter per node, bad input."""

from __future__ import annotations

import csv
import math
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from orchestrator.energy.meter import NodeMeter, start_node_meters
from orchestrator.energy.nvml import NvmlSampler, visible_gpu_uuids
from orchestrator.store import Store
from planners.errors import BadInput
from planners.footprint import Energy, project_total
from tests.fake_pynvml import FakeGpu, make_module

UUIDS = ["GPU-aaaa1111-0000", "GPU-bbbb2222-0000", "GPU-cccc3333-0000", "GPU-dddd4444-0000"]


def fake_nvml(monkeypatch, gpus):
    module = make_module(gpus)
    monkeypatch.setitem(sys.modules, "pynvml", module)
    return module


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        sum(i * i for i in range(20_000))


# --- NVML, recorded sequences ---------------------------------------------------------------
def test_counter_differenced_per_window():
    gpu = FakeGpu(UUIDS[0], energy_mj=[1_000_000, 1_300_000, 1_600_000, 2_200_000])
    s = NvmlSampler([UUIDS[0]], t=0.0, nvml=make_module([gpu]))
    readings = s.read(1.0) + s.read(2.0) + s.read(2.5)
    assert [r.joules for r in readings] == [300.0, 300.0, 600.0]
    assert [r.joules / r.window_s for r in readings] == [300.0, 300.0, 1200.0]
    assert {r.source for r in readings} == {"nvml"} and s.mode == "nvml"
    assert {r.device for r in readings} == {f"gpu:{UUIDS[0]}"} and s.errors == []


def test_missing_counter_falls_back_to_power():
    gpu = FakeGpu(UUIDS[0], energy_mj=None, power_mw=[200_000, 300_000, 300_000, 100_000])
    s = NvmlSampler([UUIDS[0]], t=0.0, nvml=make_module([gpu]))
    readings = s.read(1.0) + s.read(3.0) + s.read(4.0)
    assert s.mode == "nvml-power" and {r.source for r in readings} == {"nvml-power"}
    # trapezoids: (200+300)/2 W x 1 s, 300 W x 2 s, (300+100)/2 W x 1 s
    assert [r.joules for r in readings] == [250.0, 600.0, 200.0]
    assert s.errors == []  # NotSupported is expected on old GPUs, not an error


def test_counter_reset_is_neither_negative_nor_double_counted():
    # 300 J, then the counter restarts (driver reload) at 1 J, then 300 J again.
    gpu = FakeGpu(UUIDS[0], energy_mj=[5_000_000, 5_300_000, 1_000, 301_000],
                  power_mw=[250_000])
    s = NvmlSampler([UUIDS[0]], t=0.0, nvml=make_module([gpu]))
    readings = [s.read(float(t))[0] for t in (1, 2, 3)]
    assert [r.joules for r in readings] == [300.0, 250.0, 300.0]
    assert [r.source for r in readings] == ["nvml", "nvml-power", "nvml"]
    assert all(r.joules >= 0 for r in readings)
    assert any("went back" in e for e in s.errors)
    assert s.mode == "nvml"  # the counter is used again after the restart


@pytest.mark.parametrize("spec, expected", [
    ("2,0", [UUIDS[2], UUIDS[0]]),
    ("GPU-cccc3333-0000,GPU-aaaa", [UUIDS[2], UUIDS[0]]),  # full UUID and a unique prefix
    ("1,7,2", [UUIDS[1]]),  # CUDA stops at the first entry naming no device
    ("", []),
    (None, UUIDS),
])
def test_visible_gpu_uuids(monkeypatch, spec, expected):
    nvml = fake_nvml(monkeypatch, [FakeGpu(u, energy_mj=[0]) for u in UUIDS])
    if spec is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", spec)
    assert visible_gpu_uuids() == expected
    assert nvml.init_count == 0  # initialised and shut down again


@pytest.mark.parametrize("visible", ["1", UUIDS[1]])
def test_node_meter_meters_only_the_visible_gpus(monkeypatch, tmp_path, visible):
    gpus = [FakeGpu(u, energy_mj=[i * 50_000 for i in range(100_000)]) for u in UUIDS[:2]]
    nvml = fake_nvml(monkeypatch, gpus)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    meter = NodeMeter(str(tmp_path), interval_s=0.05, cpu=False, node="n1")
    meter.start()
    time.sleep(0.4)
    rows = meter.poll() + meter.stop()
    assert meter.status()["gpu"] == "nvml" and meter.status()["errors"] == []
    assert len(rows) >= 3
    assert {r["device"] for r in rows} == {f"gpu:{UUIDS[1]}"}
    assert all(r["joules"] == 50.0 and r["source"] == "nvml" and r["node"] == "n1" for r in rows)
    assert sum(r["joules"] for r in rows) == (gpus[1].energy_calls - 1) * 50.0
    assert gpus[0].energy_calls == 0 and nvml.init_count == 0


def test_node_meter_reports_power_fallback(monkeypatch, tmp_path):
    fake_nvml(monkeypatch, [FakeGpu(UUIDS[0], energy_mj=None, power_mw=[400_000])])
    meter = NodeMeter(str(tmp_path), interval_s=0.05, gpu_uuids=[UUIDS[0]], cpu=False)
    meter.start()
    time.sleep(0.25)
    rows = meter.stop()
    st = meter.status()
    assert st["gpu"] == "nvml-power" and st["gpus"] == {UUIDS[0]: "nvml-power"}
    assert rows and all(r["source"] == "nvml-power" for r in rows)
    assert all(math.isclose(r["watts"], 400.0) for r in rows)


def test_an_unexpected_failure_is_recorded_and_sampling_goes_on(monkeypatch, tmp_path):
    energy = [0, 50_000, RuntimeError("driver gone"), *range(100_000, 10_000_000, 50_000)]
    gpu = FakeGpu(UUIDS[0], energy_mj=energy)
    fake_nvml(monkeypatch, [gpu])
    meter = NodeMeter(str(tmp_path), interval_s=0.05, gpu_uuids=[UUIDS[0]], cpu=False)
    meter.start()
    time.sleep(0.4)
    rows = meter.stop()
    assert any("driver gone" in e for e in meter.status()["errors"])
    assert len(rows) >= 3 and all(r["joules"] >= 0 for r in rows)
    # nothing lost: the failed window is covered by the next one
    assert math.isclose(sum(r["joules"] for r in rows), (gpu.energy_calls - 2) * 50.0)


def test_requested_gpus_without_nvml_are_an_error_not_a_crash(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails, as with no driver
    meter = NodeMeter(str(tmp_path), interval_s=0.05, gpu_uuids=[UUIDS[0]], cpu=False)
    meter.start()
    assert meter.stop() == []
    st = meter.status()
    assert st["gpu"] == "unavailable" and any("NVML unavailable" in e for e in st["errors"])


# --- codecarbon, for real -------------------------------------------------------------------
def rapl_readable() -> bool:
    return any(p.is_file() and os.access(p, os.R_OK)
               for p in Path("/sys/class/powercap").glob("intel-rapl*/**/energy_uj"))


def test_codecarbon_samples_sum_to_its_own_total(tmp_path):
    meter = NodeMeter(str(tmp_path), interval_s=0.5, gpu_uuids=[], node="here")
    meter.start()
    busy(2.5)
    polled = meter.poll()
    rows = polled + meter.stop()
    st = meter.status()
    assert st["cpu"] == ("rapl" if rapl_readable() else "estimate"), st
    assert st["gpu"] == "none" and st["errors"] == []
    assert polled, "samples arrive while running"
    assert {r["device"] for r in rows} == {"cpu", "ram"}
    cpu = [r for r in rows if r["device"] == "cpu"]
    assert all(r["source"] == st["cpu"] for r in cpu)
    assert {r["source"] for r in rows if r["device"] == "ram"} == {"estimate"}
    assert sum(r["joules"] for r in cpu) > 0
    assert all(r["joules"] >= 0 and r["window_s"] > 0 for r in rows)
    # codecarbon's own record: the CSV row it wrote at stop, in kWh
    (csv_path,) = (tmp_path / "codecarbon").glob("emissions*.csv")
    last = list(csv.DictReader(csv_path.open()))[-1]
    for device, column in (("cpu", "cpu_energy"), ("ram", "ram_energy")):
        ours = sum(r["joules"] for r in rows if r["device"] == device)
        assert math.isclose(ours, Energy.from_kwh(float(last[column])).joules, rel_tol=1e-6)
    # the windows tile codecarbon's duration
    assert math.isclose(sum(r["window_s"] for r in cpu), float(last["duration"]), rel_tol=0.05)
    # rows are exactly the store's EnergySample columns; the run's total is their sum
    store = Store(f"sqlite:///{tmp_path / 'tally.db'}")
    store.create_run("tiny", {}, run_id="run-cc")
    store.add_energy("run-cc", rows)
    (summary,) = store.run_summaries(["run-cc"])
    assert math.isclose(summary["energy_joules"], sum(r["joules"] for r in rows), rel_tol=1e-9)


def test_codecarbon_that_fails_to_start_is_reported(tmp_path):
    # An output_dir that does not exist: codecarbon's __init__ raises, its @suppress swallows.
    meter = NodeMeter(str(tmp_path), interval_s=0.5, gpu_uuids=[],
                      codecarbon_options={"output_dir": str(tmp_path / "missing")})
    meter.start()
    rows = meter.poll() + meter.stop()
    st = meter.status()
    assert st["cpu"] == "failed" and rows == []
    assert any("failed to start" in e and "doesn't exist" in e for e in st["errors"]), st


def test_codecarbon_lock_held_is_reported(tmp_path, monkeypatch):
    import codecarbon.lock

    lockfile = tmp_path / ".codecarbon.lock"
    lockfile.touch()  # a stale lock left by a killed tracker
    monkeypatch.setattr(codecarbon.lock, "LOCKFILE", str(lockfile))
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        meter = NodeMeter(str(tmp_path), interval_s=0.5, gpu_uuids=[],
                          codecarbon_options={"allow_multiple_runs": False})
        meter.start()
        assert meter.stop() == []
    finally:
        for s, h in handlers.items():  # codecarbon's Lock installs its own handlers
            signal.signal(s, h)
    st = meter.status()
    assert st["cpu"] == "failed" and any("lock" in e for e in st["errors"]), st
    assert lockfile.exists()  # not ours to delete


# --- bad input and the projection -----------------------------------------------------------
@pytest.mark.parametrize("interval", [0, -1, float("nan"), "soon"])
def test_bad_sampling_interval(tmp_path, interval):
    with pytest.raises(BadInput, match="sampling interval"):
        NodeMeter(str(tmp_path), interval_s=interval)
    with pytest.raises(BadInput, match="sampling interval"):
        start_node_meters("r", str(tmp_path), ["n"], interval_s=interval)


def test_project_total():
    projected = project_total(Energy.from_kwh(10.0), 1e9, 1e12)
    assert math.isclose(projected.kwh, 10_000.0)
    with pytest.raises(BadInput, match="tokens so far"):
        project_total(Energy.from_kwh(1.0), 0, 1e12)
