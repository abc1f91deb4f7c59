"""Energy meters: one per node, never one per rank, so nothing is counted twice.

A `NodeMeter` samples, every `interval_s`, the NVML energy counters of exactly the run's GPUs
(meter_nvml.py) and codecarbon's CPU and RAM energy (meter_cpu.py), and turns them into rows
shaped like the store's `EnergySample` (node, device, time, window_s, joules, watts, source).
The driver drains them with `poll()` and writes them; meters never open the database.
On a Ray cluster `start_node_meters` places one `MeterActor` (a NodeMeter) on each distinct node
the run's workers use. Metering failures never raise into training: they show in `status()`.
"""

from __future__ import annotations

import math
import os
import re
import socket
import threading
import time
from datetime import datetime, timedelta, timezone

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from orchestrator.energy import metrics as meter_metrics
from orchestrator.energy.cpu import CodecarbonSampler
from orchestrator.energy.metrics import report_training_metrics  # noqa: F401 - re-exported
from orchestrator.energy.nvml import NvmlSampler, visible_gpu_uuids  # noqa: F401
from planners.errors import BadInput
from planners.footprint import (LLAMA_INTENSITY_KG_PER_KWH, LLAMA_PUE, J_PER_KWH, check_intensity,
                                check_pue)


def check_interval(interval_s: float) -> float:
    try:
        value = float(interval_s)
    except (TypeError, ValueError):
        value = float("nan")
    if not (value > 0) or not math.isfinite(value):
        raise BadInput(f"sampling interval must be a number of seconds > 0 (default 1), "
                       f"got {interval_s!r}")
    return value


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def sample(node: str, device: str, time_: datetime, window_s: float, joules: float,
           source: str) -> dict:
    """One row with exactly the columns of the store's EnergySample (less run_id)."""
    return {"node": node, "device": device, "time": time_, "window_s": window_s,
            "joules": joules, "watts": joules / window_s if window_s > 0 else 0.0,
            "source": source}


class NodeMeter:
    """The meter of one node. `start()`, `poll()` every so often, `stop()` at the end.

    gpu_uuids: the GPUs to meter (NVML UUIDs); None = this process's CUDA_VISIBLE_DEVICES
    (all GPUs when unset); [] = none. cpu: meter CPU and RAM through codecarbon, whose files go
    to run_dir/codecarbon. pue and intensity only price the Ray CO2 metric (rows are IT joules).
    """

    def __init__(self, run_dir: str, *, interval_s: float = 1.0,
                 gpu_uuids: list[str] | None = None, cpu: bool = True, node: str | None = None,
                 run_id: str | None = None, country_iso_code: str = "USA",
                 pue: float = LLAMA_PUE,
                 intensity_kg_per_kwh: float = LLAMA_INTENSITY_KG_PER_KWH,
                 codecarbon_options: dict | None = None):
        self.interval_s = check_interval(interval_s)
        self.run_dir = str(run_dir)
        self.node = node or socket.gethostname()
        self.run_id = run_id or os.path.basename(os.path.normpath(self.run_dir))
        self.co2_kg_per_joule = check_pue(pue) * check_intensity(intensity_kg_per_kwh) / J_PER_KWH
        self._gpu_uuids = None if gpu_uuids is None else list(gpu_uuids)
        self._want_cpu = cpu
        self._country = country_iso_code
        self._cc_options = codecarbon_options
        self._gpu: NvmlSampler | None = None
        self._gpu_state = "none"
        self._cpu: CodecarbonSampler | None = None
        self._errors: list[str] = []
        self._buffer: list[dict] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._state = "new"  # new -> running -> stopped

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        if self._state != "new":
            return
        self._state = "running"
        self._start_gpu(time.monotonic())
        if self._want_cpu:
            safe_node = re.sub(r"[^A-Za-z0-9_.-]", "_", self.node)
            self._cpu = CodecarbonSampler(
                os.path.join(self.run_dir, "codecarbon"), self.interval_s, self._country,
                {"output_file": f"emissions-{safe_node}.csv", **(self._cc_options or {})})
            self._cpu.start()
        self._thread = threading.Thread(target=self._loop, name="tally-meter", daemon=True)
        self._thread.start()

    def _start_gpu(self, t: float) -> None:
        expected = bool(self._gpu_uuids) or bool(os.environ.get("CUDA_VISIBLE_DEVICES"))
        try:
            uuids = visible_gpu_uuids() if self._gpu_uuids is None else self._gpu_uuids
            if not uuids:
                return  # nothing to meter: "none"
            self._gpu = NvmlSampler(uuids, t)
            self._gpu_state = self._gpu.mode
        except Exception as e:  # noqa: BLE001 - no NVML (no driver, no GPU) is not fatal
            self._gpu_state = "unavailable"
            if expected:
                self._error(f"NVML unavailable, GPU energy not metered: {type(e).__name__}: {e}")

    def _loop(self) -> None:
        next_t = time.monotonic() + self.interval_s
        while not self._stop.wait(max(0.0, next_t - time.monotonic())):
            self._tick()
            next_t += self.interval_s
            if next_t < time.monotonic():  # fell behind (a stalled machine): don't burst
                next_t = time.monotonic() + self.interval_s

    def _tick(self, final: bool = False) -> None:
        t, now = time.monotonic(), _utcnow()
        rows = []
        try:  # each source on its own: one failing must not cost the other its window
            if self._gpu is not None:
                rows += [sample(self.node, r.device, now, r.window_s, r.joules, r.source)
                         for r in self._gpu.read(t)]
        except Exception as e:  # noqa: BLE001 - never into training
            self._error(f"GPU sampling failed: {type(e).__name__}: {e}")
        try:
            if self._cpu is not None:
                readings = self._cpu.stop() if final else self._cpu.read()
                rows += [sample(self.node, r.device, now - timedelta(seconds=r.ago_s),
                                r.window_s, r.joules, r.source) for r in readings]
        except Exception as e:  # noqa: BLE001
            self._error(f"CPU/RAM sampling failed: {type(e).__name__}: {e}")
        with self._lock:
            self._buffer.extend(rows)
        meter_metrics.report_energy(rows, self.run_id, self.co2_kg_per_joule)

    def poll(self) -> list[dict]:
        """The samples gathered since the last poll (drained)."""
        with self._lock:
            rows, self._buffer = self._buffer, []
        return rows

    def stop(self) -> list[dict]:
        """Stops sampling (a last, partial window is taken) and returns the samples not yet
        polled. Idempotent."""
        if self._state == "running":
            self._state = "stopped"
            self._stop.set()
            if self._thread is not None:
                self._thread.join(timeout=10 * self.interval_s + 10)
            self._tick(final=True)
            if self._gpu is not None:
                self._gpu.close()
            if self._cpu is not None:
                self._cpu.close()
        return self.poll()

    # --- reporting -------------------------------------------------------------------------
    def _error(self, msg: str) -> None:
        if msg not in self._errors and len(self._errors) < 100:
            self._errors.append(msg)

    def status(self) -> dict:
        """Which sources work: gpu "nvml" | "nvml-power" (some GPU on integrated power) |
        "unavailable" (no NVML) | "none" (no GPU to meter); cpu "rapl" | "estimate" | "failed" |
        "off"; errors: every metering failure, in words."""
        if self._gpu is not None:
            self._gpu_state = self._gpu.mode
        if self._cpu is None:
            cpu = "off" if not self._want_cpu or self._state == "new" else "failed"
        else:
            cpu = "failed" if self._cpu.state == "failed" else self._cpu.source
        errors = list(self._errors)
        errors += self._gpu.errors if self._gpu is not None else []
        errors += self._cpu.all_errors if self._cpu is not None else []
        return {"node": self.node, "state": self._state, "interval_s": self.interval_s,
                "gpu": self._gpu_state,
                "gpus": {g.uuid: g.mode for g in self._gpu.gpus} if self._gpu else {},
                "cpu": cpu, "errors": errors}


# --- Ray: one meter per node ---------------------------------------------------------------
@ray.remote(num_cpus=0)
class MeterActor:
    """A NodeMeter inside Ray, pinned to one node. With gpu_uuids None it meters every GPU of its
    node (Ray hides GPUs from a zero-GPU actor, so CUDA_VISIBLE_DEVICES is dropped here)."""

    def __init__(self, run_dir: str, meter_options: dict):
        if meter_options.get("gpu_uuids") is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        self.meter = NodeMeter(run_dir, **meter_options)

    def start(self) -> dict:
        self.meter.start()
        return self.meter.status()

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def poll(self) -> list[dict]:
        return self.meter.poll()

    def stop(self) -> list[dict]:
        return self.meter.stop()

    def status(self) -> dict:
        return self.meter.status()


class MeterGroup:
    """The meters of one run, one per node. Calls never raise: a meter that does not answer
    becomes an error in `status()`."""

    def __init__(self, run_id: str, actors: dict, errors: list[str], timeout_s: float = 30.0):
        self.run_id = run_id
        self.actors = actors  # node id -> MeterActor handle
        self.errors = errors
        self.timeout_s = timeout_s
        self._status: dict = {}

    def _call(self, method: str) -> dict:
        refs = {nid: getattr(a, method).remote() for nid, a in self.actors.items()}
        out = {}
        for nid, ref in refs.items():
            try:
                out[nid] = ray.get(ref, timeout=self.timeout_s)
            except Exception as e:  # noqa: BLE001 - a lost meter must not stop training
                msg = f"meter on node {nid}: {method} failed: {type(e).__name__}: {e}"
                if msg not in self.errors:
                    self.errors.append(" ".join(msg.split())[:500])
        return out

    def poll(self) -> list[dict]:
        return [row for rows in self._call("poll").values() for row in rows]

    def stop(self) -> list[dict]:
        rows = [row for rows in self._call("stop").values() for row in rows]
        self._status = self._call("status")
        for actor in self.actors.values():
            try:
                ray.kill(actor)
            except Exception:  # noqa: BLE001
                pass
        self.actors = {}
        return rows

    def status(self) -> dict:
        if self.actors:
            self._status = self._call("status")
        return {"run_id": self.run_id, "nodes": dict(self._status), "errors": list(self.errors)}


def start_node_meters(run_id: str, run_dir: str, node_ids: list[str], *,
                      interval_s: float = 1.0, gpu_uuids_by_node: dict | None = None,
                      cpu: bool = True, country_iso_code: str = "USA",
                      pue: float = LLAMA_PUE,
                      intensity_kg_per_kwh: float = LLAMA_INTENSITY_KG_PER_KWH,
                      timeout_s: float = 120.0) -> MeterGroup:
    """One MeterActor on each DISTINCT node id (the run's workers' nodes; two workers on one
    node share one meter), started before this returns. gpu_uuids_by_node: node id -> the NVML
    UUIDs its workers use (from `visible_gpu_uuids()` in each worker); a node missing from it
    has every GPU metered. run_dir must be a local path on each node (codecarbon's files)."""
    check_interval(interval_s)
    check_pue(pue)
    check_intensity(intensity_kg_per_kwh)
    distinct = list(dict.fromkeys(n for n in node_ids if n))
    if not distinct:
        raise BadInput(f"no node ids to meter, got {node_ids!r}")
    actors, errors = {}, []
    for nid in distinct:
        options = {"interval_s": interval_s, "cpu": cpu, "node": nid, "run_id": run_id,
                   "country_iso_code": country_iso_code, "pue": pue,
                   "intensity_kg_per_kwh": intensity_kg_per_kwh,
                   "gpu_uuids": (gpu_uuids_by_node or {}).get(nid)}
        try:
            actors[nid] = MeterActor.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=nid, soft=False),
            ).remote(run_dir, options)
        except Exception as e:  # noqa: BLE001 - e.g. not a node id: reported, not raised
            errors.append(f"meter on node {nid}: not placed: {type(e).__name__}: {e}")
    group = MeterGroup(run_id, actors, errors, timeout_s)
    group._status = group._call("start")
    group.timeout_s = min(timeout_s, 30.0)  # polls later must not stall the driver for long
    for nid in [n for n in distinct if n not in group._status]:
        try:  # could not start: reported in errors, the other nodes keep metering
            ray.kill(actors.pop(nid))
        except Exception:  # noqa: BLE001
            pass
    return group
