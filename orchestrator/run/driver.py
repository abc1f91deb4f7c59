"""The driver's side of a running run: the channel the workers write to, the poller that
drains it into the store and the progress display, and one energy meter per node."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Callable

from orchestrator.run.launch import LaunchPlan
from orchestrator.run.spec import RunSpec
from orchestrator.run.events import _time, record_event, utc_iso
from orchestrator.store import Store

log = logging.getLogger(__name__)


def _channel_class():
    import ray

    @ray.remote(num_cpus=0)
    class Channel:
        """Messages from workers to the driver, and one command from the driver to workers."""

        def __init__(self, last_step: int = 0):
            self.items: list[dict] = []
            self.command: str | None = None
            # The newest step whose row the driver holds or will write: a restarted worker
            # group must not resume from a checkpoint past it, or the steps between would
            # never be recorded (a driver killed before writing them, say).
            self.last_step = last_step

        def put(self, items: list[dict]) -> None:
            for item in items:
                if item.get("type") == "step":
                    self.last_step = max(self.last_step, item["step"])
                elif item.get("type") == "resumed":
                    self.last_step = item["step"]
            self.items.extend(items)

        def step_limit(self) -> int:
            return self.last_step

        def drain(self) -> list[dict]:
            out, self.items = self.items, []
            return out

        def set_command(self, command: str | None) -> None:
            self.command = command

        def get_command(self) -> str | None:
            return self.command

    return Channel


class Driver:
    """Drains the channel, writes the store, feeds the meters and the progress display."""

    def __init__(self, store: Store, run_id: str, channel, plan: LaunchPlan, run_dir: Path,
                 progress: Callable[[dict], None] | None, events: Callable[[dict], None] | None,
                 meters=None, policy=None, tracker=None):
        self.store, self.run_id, self.channel, self.plan = store, run_id, channel, plan
        self.tracker = tracker  # orchestrator/infra/trackers.py, fed by the one recorder
        self.run_dir, self.progress, self.events, self.meters = run_dir, progress, events, meters
        self.policy, self.commanded, self.t0 = policy, None, time.monotonic()
        self.commanded_at, self.commanded_kg_per_kwh = None, None
        self.lock = threading.Lock()  # the poller thread and the main thread both poll
        self.stop = threading.Event()
        self.last: dict = {}
        self.done: dict | None = None
        self.energy_joules = 0.0
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._loop, name="tally-driver", daemon=True)

    def start(self) -> "Driver":
        self.thread.start()
        return self

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(timeout=60)
        self.poll_once()  # whatever arrived last
        if self.meters is not None:
            self._energy(self.meters.stop())

    def _loop(self) -> None:
        while not self.stop.wait(0.25):
            try:
                self.poll_once()
            except Exception as e:  # never let the display or the store kill the run
                self.errors.append(f"{type(e).__name__}: {e}")
                log.warning("driver poll: %s: %s", type(e).__name__, e)

    def poll_once(self) -> None:
        with self.lock:
            self._poll()

    def _poll(self) -> None:
        import ray

        msgs = ray.get(self.channel.drain.remote())
        steps: list[dict] = []
        for m in msgs:
            if m.get("type") == "step":
                steps.append(m)
                self.last = m
                continue
            if steps:  # keep order: rows before the message that follows them
                self._record({"type": "step", "steps": steps})
                steps = []
            self._message(m)
        if steps:
            self._record({"type": "step", "steps": steps})
        if self.meters is not None:
            self._energy(self.meters.poll())
        if self.policy is not None and self.policy.active and self.last and not self.commanded:
            cmd = self.policy.command(self.last["step"], self.energy_joules,
                                      time.monotonic() - self.t0)
            if cmd:
                self.commanded, self.commanded_at = cmd, self.policy.clock.now()
                self.commanded_kg_per_kwh = self.policy.intensity_now()
                self.channel.set_command.remote(cmd)
        if self.progress and self.last:
            self.progress({**self.last, "energy_joules": self.energy_joules})

    def _message(self, m: dict) -> None:
        kind = m["type"]
        _log_message(m)
        if kind == "hello" and self.meters is not None:
            self.meters.add_node(m["node_id"], m.get("gpu_uuids") or [])
        elif kind == "resumed" and self.policy is not None and self.policy.guard is not None:
            # time per step is measured from here: worker start-up is not training time
            self.policy.guard.started(self.policy.clock.now(), m["step"])
        elif kind == "done":
            self.done = {k: v for k, v in m.items() if k != "type"}
        self._record(m)

    def _energy(self, samples: list[dict]) -> None:
        if samples:
            self._record({"type": "energy", "samples": samples})
            self.energy_joules += sum(s["joules"] for s in samples)

    def _record(self, event: dict) -> None:
        """The store (through the one recorder), then the `--events` stream."""
        record_event(self.store, self.run_id, event, self.tracker)
        if self.events is None:
            return
        if event["type"] == "step":  # one line per step, times as ISO-8601 with their offset
            for s in event["steps"]:
                self.events({**s, "type": "step", "time": utc_iso(_time(s.get("time")))})
        elif event["type"] == "energy":
            self.events({"type": "energy", "samples": [
                {**s, "time": utc_iso(_time(s["time"]))} for s in event["samples"]]})
        else:
            self.events(event)


def _log_message(m: dict) -> None:
    """What the workers said, in the run log (a worker's `log` message at its own level)."""
    kind = m["type"]
    if kind == "log":
        level = logging.getLevelName(str(m.get("level", "info")).upper())
        log.log(level if isinstance(level, int) else logging.INFO, "%s", m.get("message"))
    elif kind == "hello":
        log.info("rank %s started on %s (node %s, pid %s)", m.get("rank"), m.get("hostname"),
                 m.get("node_id"), m.get("pid"))
    elif kind == "resumed":
        log.info("training from step %s%s", m["step"],
                 f" (checkpoint {m['path']})" if m.get("path") else "")
    elif kind == "checkpoint":
        log.info("checkpoint at step %s: %s", m["step"], m["path"])
    elif kind == "eval":
        log.info("evaluation at step %s: val_loss %s", m["step"], m.get("val_loss"))
    elif kind == "done":
        log.info("workers done at step %s (%s)", m.get("step"), m.get("reason"))
    else:
        log.debug("message %s", m)


class NodeMeters:
    """One energy meter per node, started when the node's first worker says hello (workers on
    the same node share it; a restarted worker group finds its meter already running)."""

    def __init__(self, run_id: str, run_dir: Path, interval_s: float, assumptions: dict):
        from orchestrator.energy.meter import check_interval

        check_interval(interval_s)
        self.run_id, self.run_dir, self.interval_s = run_id, run_dir, interval_s
        self.assumptions = assumptions
        self.groups: dict = {}

    def add_node(self, node_id: str, gpu_uuids: list[str]) -> None:
        from orchestrator.energy.meter import start_node_meters

        if node_id in self.groups:
            return
        self.groups[node_id] = start_node_meters(
            self.run_id, str(self.run_dir), [node_id], interval_s=self.interval_s,
            gpu_uuids_by_node={node_id: gpu_uuids} if gpu_uuids else None,
            pue=self.assumptions["pue"],
            intensity_kg_per_kwh=self.assumptions["intensity_kg_per_kwh"])

    def poll(self) -> list[dict]:
        return [row for g in list(self.groups.values()) for row in g.poll()]

    def stop(self) -> list[dict]:
        return [row for g in list(self.groups.values()) for row in g.stop()]

    def status(self) -> dict:
        nodes, errors = {}, []
        for g in self.groups.values():
            st = g.status()
            nodes.update(st.get("nodes", {}))
            errors += st.get("errors", [])
        return {"nodes": nodes, "errors": errors}


def _meters(run_id: str, run_dir: Path, spec: RunSpec, assumptions: dict) -> NodeMeters:
    return NodeMeters(run_id, run_dir, spec.meter_interval_s, assumptions)
