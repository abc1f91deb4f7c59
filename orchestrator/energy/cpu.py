"""CPU and RAM energy from codecarbon's OfflineEmissionsTracker (3.3.2), kept honest.

What codecarbon 3.3.2 does, read from its source, and what we do about it:
- Offline: `OfflineEmissionsTracker` takes the country; nothing is fetched. The network paths are
  the API / HTTP outputs and Electricity Maps (when a token is configured, possibly from
  ~/.codecarbon.config or CODECARBON_* variables). We pass `output_methods=[CSV]`, no endpoint,
  no token, `api_call_interval=-1`, so a user's config file cannot switch them on.
- CPU: RAPL (`/sys/class/powercap/intel-rapl`) where readable, else a load-based estimate from
  the CPU's TDP ("cpu_load"); RAM is always a per-module estimate. We mark CPU samples "rapl"
  only when codecarbon's CPU object is in RAPL mode, everything else "estimate".
- Lock: with `allow_multiple_runs=False` codecarbon creates /tmp/.codecarbon.lock (one per
  machine, not per run), refuses a second tracker, and installs SIGINT/SIGTERM handlers in the
  main thread that raise SystemExit; a killed process leaves the file behind and blocks every
  later run. Its 3.x default is `allow_multiple_runs=True` (no lock); we pass True explicitly so
  a config file cannot turn the lock on. One meter per node is guaranteed by
  `start_node_meters`, not by that lock. A tracker refused by the lock is reported as failed.
- Swallowed exceptions: `__init__`, `start`, `stop` and `flush` are wrapped in
  `@suppress(Exception)` (a warning log, then None). So we check its state after each call
  (`_start_time` set after start, cleared after stop, `final_emissions_data` present) and keep
  its warnings: a failure becomes an error in `status()`, never a silent zero.
- Reading: codecarbon's own scheduler measures every `measure_power_secs` and adds to
  `_total_cpu_energy` / `_total_ram_energy` (kWh, cumulative), stamping `_last_measured_time`.
  We difference those totals between its measurements, so the sum of our samples is its total.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

from planners.footprint import Energy

LOG = logging.getLogger("codecarbon")


@dataclass
class Reading:
    device: str  # "cpu" or "ram"
    window_s: float
    joules: float
    source: str  # "rapl" or "estimate"
    ago_s: float  # how long before the read the window ended


class _Capture(logging.Filter):
    """On codecarbon's logger: prints nothing (quiet), keeps its warnings and errors, where its
    swallowed exceptions show up (`@suppress` logs them as warnings)."""

    def __init__(self):
        super().__init__()
        self.warnings: list[str] = []
        self.errors: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            msg = "" if isinstance(record.msg, (type, tuple)) else record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:  # a swallowed exception
                msg = f"{msg} {type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
            kept = self.errors if record.levelno >= logging.ERROR else self.warnings
            if len(kept) < 50 and msg.strip() not in kept:
                kept.append(msg.strip())
        return False


class CodecarbonSampler:
    """`start()`, then `read()` each tick, then `stop()`. `state`: "not started" | "running" |
    "stopped" | "failed" (`errors` says why); `source`: "rapl" | "estimate" once started."""

    def __init__(self, output_dir: str, interval_s: float, country_iso_code: str = "USA",
                 tracker_options: dict | None = None):
        self.output_dir = output_dir
        self.interval_s = interval_s
        self.country_iso_code = country_iso_code
        self.tracker_options = tracker_options or {}
        self.tracker = None
        self.state = "not started"
        self.source = "estimate"
        self.errors: list[str] = []
        self._capture = _Capture()
        self._last = (0.0, 0.0, 0.0)  # cpu kWh, ram kWh, codecarbon perf_counter time

    def _fail(self, what: str) -> None:
        noise = ("stopping.", "graceful shutdown. Exceptions:", "Multiple instances")
        said = self._capture.errors + self._capture.warnings
        detail = "; ".join(m for m in said if not m.startswith(noise))
        self.errors.append(f"codecarbon {what}" + (f": {detail}" if detail else ""))
        self._capture.errors.clear()
        self._capture.warnings.clear()

    @property
    def all_errors(self) -> list[str]:
        """Our findings, plus what codecarbon logged as an error (e.g. an unknown country)."""
        return self.errors + [f"codecarbon: {m}" for m in self._capture.errors]

    def start(self) -> None:
        try:
            from codecarbon import OfflineEmissionsTracker, OutputMethod

            if self._capture not in LOG.filters:
                LOG.addFilter(self._capture)
            os.makedirs(self.output_dir, exist_ok=True)

            options = dict(
                country_iso_code=self.country_iso_code, measure_power_secs=self.interval_s,
                output_dir=self.output_dir, output_methods=[OutputMethod.CSV],
                api_call_interval=-1, emissions_endpoint=None, electricitymaps_api_token=None,
                allow_multiple_runs=True, log_level="warning", pue=1.0, project_name="tally",
                tracking_mode="machine")
            options.update(self.tracker_options)
            self.tracker = OfflineEmissionsTracker(**options)
            self.tracker.start()
        except Exception as e:  # noqa: BLE001 - metering never raises into training
            self.state = "failed"
            self.errors.append(f"codecarbon failed to start: {type(e).__name__}: {e}")
            return
        t = self.tracker
        if getattr(t, "_another_instance_already_running", False):
            self.state = "failed"
            self._fail("refused to start: its lock file /tmp/.codecarbon.lock is held "
                       "by another tracker")
            return
        cpu = next((h for h in getattr(t, "_hardware", []) if type(h).__name__ == "CPU"), None)
        if getattr(t, "_start_time", None) is None or cpu is None:
            self.state = "failed"
            self._fail("failed to start")
            return
        self.source = "rapl" if getattr(cpu, "_mode", "") == "intel_rapl" else "estimate"
        self.state = "running"
        self._last = (0.0, 0.0, t._start_time)  # its totals start at zero at _start_time

    def _readings(self, cpu_kwh: float, ram_kwh: float, at: float) -> list[Reading]:
        last_cpu, last_ram, last_at = self._last
        if at <= last_at:
            return []
        self._last = (cpu_kwh, ram_kwh, at)
        ago_s = max(0.0, time.perf_counter() - at)
        window_s = at - last_at
        return [Reading("cpu", window_s, Energy.from_kwh(cpu_kwh - last_cpu).joules,
                        self.source, ago_s),
                Reading("ram", window_s, Energy.from_kwh(ram_kwh - last_ram).joules,
                        "estimate", ago_s)]

    def read(self) -> list[Reading]:
        """Energy since the previous read, up to codecarbon's latest measurement."""
        if self.state != "running":
            return []
        t = self.tracker
        at = t._last_measured_time
        return self._readings(t._total_cpu_energy.kWh, t._total_ram_energy.kWh, at)

    def stop(self) -> list[Reading]:
        """Stops codecarbon (its final measurement and CSV row) and returns the last window."""
        if self.state != "running":
            return []
        t = self.tracker
        try:
            t.stop()
        except Exception as e:  # noqa: BLE001
            self.errors.append(f"codecarbon failed to stop: {type(e).__name__}: {e}")
        data = getattr(t, "final_emissions_data", None)
        if getattr(t, "_start_time", None) is not None or data is None:
            self._fail("failed to stop (its totals so far are kept, its CSV may be missing)")
            self.state = "failed"
            return self._readings(t._total_cpu_energy.kWh, t._total_ram_energy.kWh,
                                  t._last_measured_time)
        self.state = "stopped"
        return self._readings(data.cpu_energy, data.ram_energy, t._last_measured_time)

    def close(self) -> None:
        LOG.removeFilter(self._capture)
