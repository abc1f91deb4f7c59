"""A recorded stand-in for nvidia-ml-py's `pynvml` (no GPU on the build machine).

Each fake GPU replays a recorded sequence of readings: `energy_mj` (what successive
nvmlDeviceGetTotalEnergyConsumption calls return; None = the counter is not supported) and
`power_mw` (successive nvmlDeviceGetPowerUsage calls); an exception in `energy_mj` is raised. The last value repeats when a sequence
runs out. Error classes mirror pynvml's: NVMLError(value) builds the matching subclass.
"""

from __future__ import annotations

import types

NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_LIBRARY_NOT_FOUND = 12


class NVMLError(Exception):
    _classes: dict = {}

    def __new__(cls, value=None):
        sub = cls._classes.get(value, cls) if cls is NVMLError else cls
        obj = Exception.__new__(sub)
        obj.value = value
        return obj

    def __init__(self, value=None):
        super().__init__(f"NVML error {self.value}")


class NVMLError_NotSupported(NVMLError):
    def __new__(cls, value=NVML_ERROR_NOT_SUPPORTED):
        return NVMLError.__new__(cls, NVML_ERROR_NOT_SUPPORTED)


class NVMLError_NotFound(NVMLError):
    pass


NVMLError._classes = {NVML_ERROR_NOT_SUPPORTED: NVMLError_NotSupported,
                      NVML_ERROR_NOT_FOUND: NVMLError_NotFound}


class FakeGpu:
    def __init__(self, uuid: str, energy_mj=None, power_mw=(300_000,),
                 name: str = "NVIDIA A100-SXM4-80GB"):
        self.uuid, self.name = uuid, name
        self.energy_mj = list(energy_mj) if energy_mj is not None else None
        self.power_mw = list(power_mw)
        self.energy_calls = self.power_calls = 0

    @staticmethod
    def _next(seq, i):
        return seq[min(i, len(seq) - 1)]


def make_module(gpus: list[FakeGpu]) -> types.ModuleType:
    """A module object that quacks like pynvml for these GPUs (index order = list order)."""
    m = types.ModuleType("pynvml")
    m.NVML_ERROR_NOT_SUPPORTED = NVML_ERROR_NOT_SUPPORTED
    m.NVMLError = NVMLError
    m.NVMLError_NotSupported = NVMLError_NotSupported
    m.NVMLError_NotFound = NVMLError_NotFound
    m.gpus = gpus
    m.init_count = 0

    def nvmlInit():
        m.init_count += 1

    def nvmlShutdown():
        m.init_count -= 1

    def by_index(i):
        if not 0 <= i < len(gpus):
            raise NVMLError(NVML_ERROR_NOT_FOUND)
        return gpus[i]

    def by_uuid(uuid):
        uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
        for g in gpus:
            if g.uuid == uuid:
                return g
        raise NVMLError(NVML_ERROR_NOT_FOUND)

    def energy(g):
        if g.energy_mj is None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        v = g._next(g.energy_mj, g.energy_calls)
        g.energy_calls += 1
        if isinstance(v, Exception):  # a recorded failure (not an NVML error)
            raise v
        return v

    def power(g):
        v = g._next(g.power_mw, g.power_calls)
        g.power_calls += 1
        return v

    m.nvmlInit, m.nvmlShutdown = nvmlInit, nvmlShutdown
    m.nvmlDeviceGetCount = lambda: len(gpus)
    m.nvmlDeviceGetHandleByIndex = by_index
    m.nvmlDeviceGetHandleByUUID = by_uuid
    m.nvmlDeviceGetUUID = lambda g: g.uuid.encode()  # older bindings return bytes
    m.nvmlDeviceGetTotalEnergyConsumption = energy
    m.nvmlDeviceGetPowerUsage = power
    m.nvmlDeviceGetName = lambda g: g.name
    return m
