"""Ray metrics (`ray.util.metrics`): they reach the cluster's Prometheus endpoint and the Grafana
dashboards Ray generates. Only inside Ray (`ray.is_initialized()`); never raise into training.

Names (Prometheus adds the `ray_` prefix, and `_total` to counters):
  tally_power_watts{node,device,run}      gauge, mean power of the last window
  tally_energy_joules{node,device,run}    counter, IT energy
  tally_co2_kg{node,device,run}           counter, IT energy x PUE x grid intensity
  tally_train_loss / tally_train_tokens_per_s / tally_train_mfu {run}   gauges
"""

from __future__ import annotations

import threading

_lock = threading.Lock()
_metrics: dict | None = None


def _ray_metrics() -> dict | None:
    """The metric objects, created once per process; None outside Ray."""
    global _metrics
    try:
        import ray
        if not ray.is_initialized():
            return None
        with _lock:
            if _metrics is None:
                from ray.util.metrics import Counter, Gauge
                device = ("node", "device", "run")
                _metrics = {
                    "power": Gauge("tally_power_watts", "Power per device, W", device),
                    "energy": Counter("tally_energy_joules", "IT energy per device, J", device),
                    "co2": Counter("tally_co2_kg", "CO2eq per device (PUE x intensity), kg",
                                   device),
                    "loss": Gauge("tally_train_loss", "Training loss", ("run",)),
                    "tokens_per_s": Gauge("tally_train_tokens_per_s", "Training tokens/s",
                                          ("run",)),
                    "mfu": Gauge("tally_train_mfu", "Model FLOPs utilisation (0-1)", ("run",)),
                }
        return _metrics
    except Exception:  # noqa: BLE001 - metrics are a nicety, never a failure
        return None


def report_energy(samples: list[dict], run_id: str, co2_kg_per_joule: float) -> bool:
    """Publish energy samples (store-shaped dicts). False when not inside Ray or on error."""
    m = _ray_metrics()
    if m is None:
        return False
    try:
        for s in samples:
            tags = {"node": s["node"], "device": s["device"], "run": run_id}
            m["power"].set(s["watts"], tags=tags)
            if s["joules"] > 0:
                m["energy"].inc(s["joules"], tags=tags)
                m["co2"].inc(s["joules"] * co2_kg_per_joule, tags=tags)
        return True
    except Exception:  # noqa: BLE001
        return False


def report_training_metrics(loss: float, tokens_per_s: float, mfu: float, run_id: str) -> bool:
    """For the trainer: loss, tokens/s and MFU as Ray gauges tagged with the run.
    Returns False (and does nothing) outside Ray; never raises."""
    m = _ray_metrics()
    if m is None:
        return False
    try:
        tags = {"run": str(run_id)}
        m["loss"].set(float(loss), tags=tags)
        m["tokens_per_s"].set(float(tokens_per_s), tags=tags)
        m["mfu"].set(float(mfu), tags=tags)
        return True
    except Exception:  # noqa: BLE001
        return False
