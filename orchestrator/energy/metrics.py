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
DEVICE_TAGS = ("node", "device", "run")
# key -> (name, kind, description, tags): the metrics tally exports, created from this table
METRICS = {
    "power": ("tally_power_watts", "gauge", "Power per device, W", DEVICE_TAGS),
    "energy": ("tally_energy_joules", "counter", "IT energy per device, J", DEVICE_TAGS),
    "co2": ("tally_co2_kg", "counter", "CO2eq per device (PUE x intensity), kg", DEVICE_TAGS),
    "loss": ("tally_train_loss", "gauge", "Training loss", ("run",)),
    "tokens_per_s": ("tally_train_tokens_per_s", "gauge", "Training tokens/s", ("run",)),
    "mfu": ("tally_train_mfu", "gauge", "Model FLOPs utilisation (0-1)", ("run",)),
}


def prometheus_names() -> dict[str, tuple[str, ...]]:
    """The names Prometheus scrapes from Ray (`ray_` prefix, `_total` on counters) -> their
    labels (Ray and Prometheus add more: SessionName, instance, ...)."""
    return {f"ray_{name}{'_total' if kind == 'counter' else ''}": tags
            for name, kind, _, tags in METRICS.values()}


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

                kinds = {"gauge": Gauge, "counter": Counter}
                _metrics = {key: kinds[kind](name, description, tags)
                            for key, (name, kind, description, tags) in METRICS.items()}
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
