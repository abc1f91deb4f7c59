"""GPU energy from NVML, for exactly the GPUs a run uses.

The trustworthy figure is the total-energy counter (`nvmlDeviceGetTotalEnergyConsumption`,
millijoules since the driver loaded, Volta and newer), differenced over each sampling window.
The power sensor (`nvmlDeviceGetPowerUsage`, milliwatts, a ~1 s average that on A100/H100 samples
only part of the time) is the fallback for GPUs without the counter: integrated over the window
(trapezoid) and marked "nvml-power" so a report can tell the two apart.

`pynvml` is nvidia-ml-py's module; it is imported by name at use, so tests can put a recorded
stand-in into `sys.modules` (there is no GPU on the build machine).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass

FROM_ENV = object()  # visible_gpu_uuids(): read CUDA_VISIBLE_DEVICES from the environment


def load_nvml():
    """Import and initialise pynvml (raises ImportError or pynvml.NVMLError)."""
    nvml = importlib.import_module("pynvml")
    nvml.nvmlInit()
    return nvml


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _all_uuids(nvml) -> list[str]:
    return [_text(nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(i)))
            for i in range(nvml.nvmlDeviceGetCount())]


def resolve_visible(spec: str | None, all_uuids: list[str]) -> list[str]:
    """CUDA_VISIBLE_DEVICES -> NVML UUIDs, with CUDA's own rules: entries are indices or UUIDs
    (a unique prefix is enough, `GPU-` or `MIG-`), and parsing stops at the first entry that
    names no device. None means every GPU; "" means none.

    Indices are taken in NVML (PCI bus) order. CUDA's default order is "fastest first", which
    is the same on nodes of identical GPUs; set CUDA_DEVICE_ORDER=PCI_BUS_ID on mixed nodes."""
    if spec is None:
        return list(all_uuids)
    out: list[str] = []
    for entry in (e.strip() for e in spec.split(",")):
        if entry.isdigit():
            if int(entry) >= len(all_uuids):
                break
            uuid = all_uuids[int(entry)]
        elif entry.startswith("MIG-"):
            uuid = entry  # MIG instances are not in the index list; NVML finds them by UUID
        else:
            matches = [u for u in all_uuids if entry and u.startswith(entry)]
            if len(matches) != 1:
                break
            uuid = matches[0]
        if uuid not in out:
            out.append(uuid)
    return out


def visible_gpu_uuids(cuda_visible_devices=FROM_ENV) -> list[str]:
    """The NVML UUIDs of the GPUs this process may use (its CUDA_VISIBLE_DEVICES by default;
    pass None for every GPU of the node). Raises ImportError / pynvml.NVMLError without NVML."""
    if cuda_visible_devices is FROM_ENV:
        cuda_visible_devices = os.environ.get("CUDA_VISIBLE_DEVICES")
    nvml = load_nvml()
    try:
        return resolve_visible(cuda_visible_devices, _all_uuids(nvml))
    finally:
        nvml.nvmlShutdown()


def _not_supported(nvml, err: Exception) -> bool:
    return getattr(err, "value", None) == getattr(nvml, "NVML_ERROR_NOT_SUPPORTED", 3)


@dataclass
class _Gpu:
    uuid: str
    handle: object
    mode: str  # "nvml" (energy counter) or "nvml-power" (integrated power)
    last_t: float
    last_mj: int = 0
    last_mw: float = 0.0


@dataclass
class Reading:
    """One GPU's energy over one window, before it becomes a store row."""
    device: str
    window_s: float
    joules: float
    source: str


class NvmlSampler:
    """Differences NVML readings for a fixed set of GPUs. `read(t)` with `t` a monotonic time
    returns one Reading per GPU for the window since the previous read. Errors are appended to
    `errors` (never raised): metering must not stop training."""

    def __init__(self, uuids: list[str], t: float, nvml=None):
        self.errors: list[str] = []
        self.nvml = nvml or load_nvml()
        self.gpus: list[_Gpu] = []
        for uuid in uuids:
            try:
                handle = self.nvml.nvmlDeviceGetHandleByUUID(uuid)
            except Exception as e:  # noqa: BLE001 - a GPU we cannot find is reported, not fatal
                self.errors.append(f"gpu {uuid}: not found by NVML ({e})")
                continue
            gpu = _Gpu(uuid, handle, "nvml", t)
            try:
                gpu.last_mj = self.nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            except self.nvml.NVMLError as e:
                if not _not_supported(self.nvml, e):
                    self.errors.append(f"gpu {uuid}: energy counter failed ({e}); using power")
                gpu.mode = "nvml-power"
                gpu.last_mw = self._power_mw(gpu) or 0.0
            self.gpus.append(gpu)

    @property
    def mode(self) -> str:
        """"nvml" if every GPU has its energy counter, "nvml-power" if any falls back to power,
        "unavailable" if no GPU could be opened."""
        if not self.gpus:
            return "unavailable"
        return "nvml-power" if any(g.mode == "nvml-power" for g in self.gpus) else "nvml"

    def _power_mw(self, gpu: _Gpu) -> float | None:
        try:
            return float(self.nvml.nvmlDeviceGetPowerUsage(gpu.handle))
        except Exception as e:  # noqa: BLE001
            self._error(f"gpu {gpu.uuid}: power reading failed ({e})")
            return None

    def _error(self, msg: str) -> None:
        if msg not in self.errors and len(self.errors) < 100:
            self.errors.append(msg)

    def read(self, t: float) -> list[Reading]:
        out = []
        for gpu in self.gpus:
            window_s = t - gpu.last_t
            if window_s <= 0:
                continue
            r = self._read_counter(gpu, window_s) if gpu.mode == "nvml" else None
            if r is None:
                r = self._read_power(gpu, window_s)
            gpu.last_t = t
            if r is not None:
                out.append(r)
        return out

    def _read_counter(self, gpu: _Gpu, window_s: float) -> Reading | None:
        """Energy from the counter; None to fall back to power for this window."""
        try:
            mj = self.nvml.nvmlDeviceGetTotalEnergyConsumption(gpu.handle)
        except self.nvml.NVMLError as e:
            if _not_supported(self.nvml, e):
                gpu.mode = "nvml-power"  # the counter went away: power from now on
            self._error(f"gpu {gpu.uuid}: energy counter failed ({e}); using power")
            gpu.last_mw = self._power_mw(gpu) or 0.0
            return None
        previous, gpu.last_mj = gpu.last_mj, mj
        if mj < previous:
            # The counter restarted (driver reload, GPU reset): the energy between the last
            # reading and the restart is unknown, and `mj` alone may not cover the window, so
            # this one window is priced from power; the counter resumes from the new base.
            self._error(f"gpu {gpu.uuid}: energy counter went back from {previous} to {mj} mJ; "
                        f"that window was taken from power")
            gpu.last_mw = self._power_mw(gpu) or 0.0
            return None
        return Reading(f"gpu:{gpu.uuid}", window_s, (mj - previous) / 1000.0, "nvml")

    def _read_power(self, gpu: _Gpu, window_s: float) -> Reading | None:
        mw = self._power_mw(gpu)
        if mw is None:
            return None
        joules = (gpu.last_mw + mw) / 2 / 1000.0 * window_s  # trapezoid over the window
        gpu.last_mw = mw
        return Reading(f"gpu:{gpu.uuid}", window_s, joules, "nvml-power")

    def close(self) -> None:
        try:
            self.nvml.nvmlShutdown()
        except Exception as e:  # noqa: BLE001
            self._error(f"nvmlShutdown failed ({e})")


def device_names(nvml=None) -> list[str]:
    """NVML's names of the GPUs this process may use (CUDA_VISIBLE_DEVICES honoured); [] when
    there is no NVML (no driver, no GPU)."""
    try:
        nvml = nvml or load_nvml()
        visible = set(visible_gpu_uuids())
        out = []
        for i in range(nvml.nvmlDeviceGetCount()):
            h = nvml.nvmlDeviceGetHandleByIndex(i)
            if _text(nvml.nvmlDeviceGetUUID(h)) in visible:
                out.append(_text(nvml.nvmlDeviceGetName(h)))
        return out
    except Exception:  # ImportError, NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return []
