"""One event protocol for a run, and the one recorder that writes it to the store.

The local driver (orchestrator/run/driver.py) records what its workers send, and prints the
same events as `@tally {json}` lines under `train --events`; a remote job's follower
(orchestrator/run/remote.py) parses those lines from the job's log and records them with the
same `record_event`, so a run on a cluster lands in the submitting store exactly as a local one.

Events (times are ISO-8601 UTC, epoch seconds or datetimes):
  {"type": "submitted", "job_id", "address"}            (local, from submit_and_follow)
      -> run.job_id, run.ray_address
  {"type": "run", "run_id"?, "preset"?, "config"?, "storage_path"?, ...}
      -> run.status = "running", run.started_at; kept as a `remote-run` event
  {"type": "step", "step", "tokens", "loss"?, "lr"?, "grad_norm"?, "tokens_per_s"?, "mfu"?,
   "memory_bytes"?, "time"?}   or {"type": "step", "steps": [ {...}, ... ]}
      -> steps (a step already stored is skipped)
  {"type": "resumed", "step", "path"?, "skipped"?: [[path, reason], ...]}
      -> steps after `step` discarded (they are trained again); `resume` and
         `checkpoint-skipped` events
  {"type": "checkpoint", "step", "path", "complete"? (default true)}   -> checkpoints
  {"type": "energy", "node", "device", "time"?, "window_s", "joules", "watts", "source"}
      or {"type": "energy", "samples": [ {...}, ... ]}                 -> energy samples
  {"type": "eval", "step", "tokens", "val_loss", ...}                  -> an `eval` event
  {"type": "eval-tasks", "step", "tokens", "tasks": [{"task", "n", "acc", "acc_norm"}, ...]}
      -> eval_scores rows (train --eval-every; a step stored again replaces its rows)
  {"type": "log", "level", "message"}                                   -> a `<level>` event
  {"type": "status", "status": "completed"|"failed"|..., "message"?}
      -> run.status, run.message, run.ended_at (for a terminal status)
  {"type": "done", "step", "reason"}                                   -> nothing (control)
  any other type (hello, wait, pause, ...) -> an event of that kind with the other fields
BadInput when a required field is missing or a status is unknown.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from planners.errors import BadInput

STEP_FIELDS = ("step", "tokens", "loss", "lr", "grad_norm", "tokens_per_s", "mfu", "memory_bytes")
ENERGY_FIELDS = ("node", "device", "window_s", "joules", "watts", "source")
TERMINAL_STATUSES = ("completed", "failed", "interrupted", "budget-stopped")


def _time(value: Any) -> datetime:
    """ISO-8601, epoch seconds or a datetime -> naive UTC, the store's convention; now when
    absent."""
    if value is None:
        return datetime.now(timezone.utc).replace(tzinfo=None)
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).replace(tzinfo=None) if value.tzinfo else value
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, timezone.utc).replace(tzinfo=None)
    t = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return t.astimezone(timezone.utc).replace(tzinfo=None) if t.tzinfo else t


def utc_iso(t: datetime) -> str:
    """The store's naive-UTC time as ISO-8601 with +00:00 (for event lines)."""
    return t.replace(tzinfo=timezone.utc).isoformat() if t.tzinfo is None else t.isoformat()


def _need(event: dict, *keys: str) -> None:
    missing = [k for k in keys if event.get(k) is None]
    if missing:
        raise BadInput(f"{event.get('type')} event lacks {', '.join(missing)}: "
                       f"{json.dumps(event, default=str)[:160]}")


def step_rows(event: dict) -> list[dict]:
    rows = event.get("steps") or [event]
    out = []
    for r in rows:
        _need({"type": "step", **r}, "step", "tokens")
        row = {k: r[k] for k in STEP_FIELDS if r.get(k) is not None}
        row["step"], row["tokens"] = int(r["step"]), int(r["tokens"])
        row["time"] = _time(r.get("time"))
        out.append(row)
    return out


def energy_rows(event: dict) -> list[dict]:
    out = []
    for s in event.get("samples") or [event]:
        _need({"type": "energy", **s}, *ENERGY_FIELDS)
        row = {k: s[k] for k in ENERGY_FIELDS}
        row["time"] = _time(s.get("time"))
        out.append(row)
    return out


def record_event(store, run_id: str, event: dict, tracker=None) -> str:  # noqa: ANN001
    """Write one event of a run into the store (the contract above), then to the run's
    experiment tracker when it has one (orchestrator/infra/trackers.py); returns what it did."""
    done = _store_event(store, run_id, event)
    if tracker is not None:
        tracker.feed(event)
    return done


def _store_event(store, run_id: str, event: dict) -> str:  # noqa: ANN001 (orchestrator.store.Store)
    from orchestrator.store import RUN_STATUSES

    kind = event.get("type")
    details = {k: v for k, v in event.items() if k != "type"}
    if kind == "submitted":
        store.update_run(run_id, job_id=event.get("job_id"), ray_address=event.get("address"))
        return "job"
    if kind == "run":
        fields: dict[str, Any] = {"status": "running", "started_at": _time(event.get("time"))}
        if event.get("storage_path"):
            fields["storage_path"] = str(event["storage_path"])
        store.update_run(run_id, **fields)
        store.add_event(run_id, "remote-run", event=details)
        return "run"
    if kind == "step":
        store.add_steps(run_id, step_rows(event))
        return "steps"
    if kind == "resumed":
        _need(event, "step")
        removed = store.delete_steps_after(run_id, int(event["step"]))
        from orchestrator.eval.records import delete_after

        delete_after(store, run_id, int(event["step"]))
        if event["step"] > 0 or removed:
            store.add_event(run_id, "resume", step=event["step"], path=event.get("path"),
                            discarded_step_rows=removed)
        for path, reason in event.get("skipped") or []:
            store.add_event(run_id, "checkpoint-skipped", path=path, reason=reason)
        return "resume"
    if kind == "checkpoint":
        _need(event, "step", "path")
        store.add_checkpoint(run_id, int(event["step"]), str(event["path"]),
                             complete=bool(event.get("complete", True)))
        return "checkpoint"
    if kind == "eval-tasks":
        _need(event, "step", "tokens", "tasks")
        from orchestrator.eval.records import FIELDS, add_scores

        for t in event["tasks"]:
            _need({"type": "eval-tasks", **t}, *FIELDS)
        add_scores(store, run_id, int(event["step"]), int(event["tokens"]), event["tasks"],
                   _time(event.get("time")))
        return "eval-tasks"
    if kind == "energy":
        store.add_energy(run_id, energy_rows(event))
        return "energy"
    if kind == "log":
        store.add_event(run_id, str(event.get("level", "info")), message=event.get("message"))
        return "log"
    if kind == "status":
        _need(event, "status")
        status = event["status"]
        if status not in RUN_STATUSES:
            raise BadInput(f"status event has status {status!r}; known: {', '.join(RUN_STATUSES)}")
        fields = {"status": status}
        if event.get("message") is not None:
            fields["message"] = str(event["message"])
        if status in TERMINAL_STATUSES:
            fields["ended_at"] = _time(event.get("time"))
        store.update_run(run_id, **fields)
        return "status"
    if kind == "done":
        return "done"
    store.add_event(run_id, str(kind), **details)
    return "event"
