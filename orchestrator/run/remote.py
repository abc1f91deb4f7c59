"""Remote runs through Ray's Jobs API, and the `@tally` event lines that carry their results home.

The driver on this machine owns the store (DESIGN.md); the remote job owns nothing. It is
`<python> cli.py <argv...>` run on the head, with this checkout shipped as its working directory
(without .tally, .venv, data, checkpoints, .git). Everything the store needs comes back in the
job's log as lines

    @tally {"type": "...", ...}          one JSON object per line, after the 7-character prefix

which `submit_and_follow` parses and hands to `on_event`; `record_event` maps them to the store.
The event contract (what `train --events` prints) is in `record_event`'s docstring and the README.

Authentication: the token (read from a file, never from the command line) goes in an
`Authorization: Bearer` header, which Ray's SubmissionClient keeps and sends on every request,
the log websocket included. 401 (no token) and 403 (wrong token) become one-line BadInput.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from planners.errors import BadInput

if TYPE_CHECKING:
    from orchestrator.run.spec import RunSpec
    from orchestrator.store import Store
    from orchestrator.store.home import Home

EVENT_PREFIX = "@tally "
# gitignore-style, anchored at the working directory (Ray's runtime_env "excludes")
EXCLUDES = ["/.tally", "/.venv", "/data", "/checkpoints", "/.git", "__pycache__", "*.pyc",
            ".pytest_cache"]
DEFAULT_REMOTE_PYTHON = "~/tally-venv/bin/python"  # the venv ray_cluster.yaml makes
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def defaults_for(address: str, home, token_path: str | None = None,  # noqa: ANN001 (Home)
                 python: str | None = None) -> tuple[str | None, str]:
    """(token_path, python) for a remote run at `address`: the explicit ones when given; else,
    for the head this home's `dashboard` started, its token file and its Python; else the
    home's token file if one exists, and the venv the cluster files make."""
    from orchestrator.infra.dashboard import load_head, token_path as home_token

    head = load_head(home)
    mine = head is not None and head.get("address") == check_address(address)
    if token_path is None:
        if mine:
            token_path = head.get("token_path")
        elif home_token(home).exists():
            token_path = str(home_token(home))
    if python is None:
        python = head["python"] if mine else DEFAULT_REMOTE_PYTHON
    return token_path, python


# -- submitting and following ------------------------------------------------------------------
def parse_event(line: str) -> dict | None:
    """The JSON object of an `@tally {...}` line; None for any other line. BadInput when the
    line has the prefix but no JSON object with a string "type" after it."""
    if not line.startswith(EVENT_PREFIX):
        return None
    try:
        obj = json.loads(line[len(EVENT_PREFIX):])
    except json.JSONDecodeError:
        raise BadInput(f"event line is not JSON: {line[:120]!r}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise BadInput(f"event line is not a JSON object with a \"type\": {line[:120]!r}")
    return obj


def check_address(address: str) -> str:
    if not re.match(r"^https?://[^/\s]+/?$", address or ""):
        raise BadInput(f"--address {address!r} is not a Ray dashboard URL; give "
                       "http://HOST:8265 (the head's dashboard and Jobs API)")
    return address.rstrip("/")


def _client(address: str, token_path: str | None):
    """A JobSubmissionClient that has already checked the address and the token."""
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    from orchestrator.infra.dashboard import read_token

    headers = {}
    if token_path:
        headers["Authorization"] = f"Bearer {read_token(token_path)}"
    try:
        return JobSubmissionClient(address, headers=headers)
    except AuthenticationError as e:
        if str(e).startswith("Authentication required"):  # 401
            raise BadInput(f"the Ray head at {address} requires a token (401); pass its token "
                           "file with --token-path") from None
        raise BadInput(f"the Ray head at {address} refused the token in {token_path} (403); "
                       "give the token file of that head") from None
    except ConnectionError:
        raise BadInput(f"no Ray dashboard answers at {address}; start one with `cli.py "
                       "dashboard` or `ray dashboard ray_cluster.yaml`, or fix --address") from None
    except RuntimeError as e:  # e.g. 404 on the version check: not a Ray dashboard
        raise BadInput(f"{address} is not a usable Ray dashboard ({str(e).splitlines()[0]}); "
                       "give http://HOST:8265") from None


def entrypoint(python: str, script: str, argv: list[str]) -> str:
    """`python script argv...` for the remote shell. A python path under ~ stays unquoted so the
    remote shell expands it; everything else is quoted."""
    py = python if re.fullmatch(r"~?[\w/.\-+]+", python) else shlex.quote(python)
    return " ".join([py, shlex.quote(script), *map(shlex.quote, argv)])


def submit_and_follow(address: str, argv: list[str], *, token_path: str | None,
                      working_dir: str | Path, on_event: Callable[[dict], None],
                      python: str = DEFAULT_REMOTE_PYTHON, script: str = "cli.py",
                      submission_id: str | None = None, excludes: list[str] | None = None,
                      on_log: Callable[[str], None] | None = None,
                      entrypoint_num_cpus: float | None = None) -> dict:
    """Submit `python script argv...` as a Ray job at `address` and follow it to the end.

    Calls on_event({"type": "submitted", "job_id", "address", "entrypoint"}) once the job is
    accepted, then on_event(obj) for every `@tally {...}` log line, in order. Other log lines go
    to on_log. A line with the prefix that is not a JSON object is counted, not fatal.
    Ctrl-C stops the remote job. Returns {"job_id", "status" (SUCCEEDED|FAILED|STOPPED),
    "message", "events", "bad_event_lines"}."""
    address = check_address(address)
    wd = Path(working_dir)
    if not (wd / script).is_file():
        raise BadInput(f"{script} is not in the working directory {str(wd)!r}; run from the "
                       "tally checkout or give its path")
    client = _client(address, token_path)
    _quiet_ray_logs()  # after the import: Ray's SDK modules set their loggers to INFO on import
    cmd = entrypoint(python, script, argv)
    runtime_env = {"working_dir": str(wd), "excludes": EXCLUDES + list(excludes or []),
                   "env_vars": {"PYTHONUNBUFFERED": "1"}}
    job_id = client.submit_job(entrypoint=cmd, runtime_env=runtime_env,
                               submission_id=submission_id,
                               entrypoint_num_cpus=entrypoint_num_cpus,
                               metadata={"submitted_by": "tally"})
    on_event({"type": "submitted", "job_id": job_id, "address": address, "entrypoint": cmd})
    counts = {"events": 0, "bad": 0}

    def handle(line: str) -> None:
        try:
            obj = parse_event(line)
        except BadInput:
            counts["bad"] += 1
            return
        if obj is None:
            if on_log is not None:
                on_log(line)
            return
        counts["events"] += 1
        on_event(obj)

    try:
        asyncio.run(_follow(client, job_id, handle))
        status = _wait_terminal(client, job_id)
    except KeyboardInterrupt:
        client.stop_job(job_id)
        raise
    info = client.get_job_info(job_id)
    return {"job_id": job_id, "status": status, "message": info.message,
            "events": counts["events"], "bad_event_lines": counts["bad"]}


def _quiet_ray_logs() -> None:
    """Ray's SDK logs each upload step at INFO on stderr; keep stderr for what matters."""
    import logging

    for name in ("ray.dashboard", "ray.dashboard.modules.dashboard_sdk",
                 "ray.dashboard.modules.job.sdk"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("ray._private.runtime_env").setLevel(logging.ERROR)


async def _follow(client, job_id: str, handle: Callable[[str], None]) -> None:  # noqa: ANN001
    """Feed complete lines of the job's log to handle (chunks may split lines)."""
    buf = ""
    async for chunk in client.tail_job_logs(job_id):
        buf += chunk
        *lines, buf = buf.split("\n")
        for line in lines:
            handle(line.rstrip("\r"))
    if buf:
        handle(buf.rstrip("\r"))


def _wait_terminal(client, job_id: str, timeout_s: float = 60.0) -> str:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while True:
        status = str(client.get_job_status(job_id).value)
        if status in TERMINAL or time.monotonic() > deadline:
            return status
        time.sleep(0.5)


# -- events -> store -------------------------------------------------------------------------
STEP_FIELDS = ("step", "tokens", "loss", "lr", "grad_norm", "tokens_per_s", "mfu", "memory_bytes")
ENERGY_FIELDS = ("node", "device", "window_s", "joules", "watts", "source")


def _time(value: Any) -> datetime:
    """ISO-8601 (or epoch seconds) -> naive UTC, the store's convention; now when absent."""
    if value is None:
        return datetime.now(timezone.utc).replace(tzinfo=None)
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, timezone.utc).replace(tzinfo=None)
    t = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return t.astimezone(timezone.utc).replace(tzinfo=None) if t.tzinfo else t


def _need(event: dict, *keys: str) -> None:
    missing = [k for k in keys if event.get(k) is None]
    if missing:
        raise BadInput(f"{event.get('type')} event lacks {', '.join(missing)}: "
                       f"{json.dumps(event)[:160]}")


def record_event(store, run_id: str, event: dict) -> str:  # noqa: ANN001 (orchestrator.store.Store)
    """Write one event of a remote run into the local store; returns what it did.

    The contract (`train --events` prints these; times are ISO-8601 UTC or epoch seconds):
      {"type": "submitted", "job_id", "address"}            (local, from submit_and_follow)
          -> run.job_id, run.ray_address
      {"type": "run", "run_id"?, "preset"?, "config"?, "storage_path"?, ...}
          -> run.status = "running", run.started_at; the event kept as a run event
      {"type": "step", "step", "tokens", "loss"?, "lr"?, "grad_norm"?, "tokens_per_s"?, "mfu"?,
       "memory_bytes"?, "time"?}   or {"type": "step", "steps": [ {...}, ... ]}
          -> store.add_steps (a step already stored is skipped)
      {"type": "checkpoint", "step", "path", "complete"? (default true)}
          -> store.add_checkpoint
      {"type": "energy", "node", "device", "time"?, "window_s", "joules", "watts", "source"}
          or {"type": "energy", "samples": [ {...}, ... ]}          -> store.add_energy
      {"type": "status", "status": "completed"|"failed"|..., "message"?}
          -> run.status, run.message, run.ended_at (for a terminal status)
      any other type -> store.add_event(run_id, type, event={...rest}) (restart, pause, ...)
    BadInput when a required field is missing or a status is unknown."""
    from orchestrator.store import RUN_STATUSES

    kind = event.get("type")
    if kind == "submitted":
        store.update_run(run_id, job_id=event.get("job_id"), ray_address=event.get("address"))
        return "job"
    if kind == "run":
        fields: dict[str, Any] = {"status": "running", "started_at": _time(event.get("time"))}
        if event.get("storage_path"):
            fields["storage_path"] = str(event["storage_path"])
        store.update_run(run_id, **fields)
        store.add_event(run_id, "remote-run", event=_details(event))
        return "run"
    if kind == "step":
        rows = event.get("steps") or [event]
        out = []
        for r in rows:
            _need({"type": "step", **r}, "step", "tokens")
            row = {k: r[k] for k in STEP_FIELDS if r.get(k) is not None}
            row["step"], row["tokens"] = int(r["step"]), int(r["tokens"])
            row["time"] = _time(r.get("time"))
            out.append(row)
        store.add_steps(run_id, out)
        return "steps"
    if kind == "checkpoint":
        _need(event, "step", "path")
        store.add_checkpoint(run_id, int(event["step"]), str(event["path"]),
                             complete=bool(event.get("complete", True)))
        return "checkpoint"
    if kind == "energy":
        samples = event.get("samples") or [event]
        out = []
        for s in samples:
            _need({"type": "energy", **s}, *ENERGY_FIELDS)
            row = {k: s[k] for k in ENERGY_FIELDS}
            row["time"] = _time(s.get("time"))
            out.append(row)
        store.add_energy(run_id, out)
        return "energy"
    if kind == "status":
        _need(event, "status")
        status = event["status"]
        if status not in RUN_STATUSES:
            raise BadInput(f"status event has status {status!r}; known: {', '.join(RUN_STATUSES)}")
        fields = {"status": status}
        if event.get("message") is not None:
            fields["message"] = str(event["message"])
        if status in ("completed", "failed", "interrupted", "budget-stopped"):
            fields["ended_at"] = _time(event.get("time"))
        store.update_run(run_id, **fields)
        return "status"
    store.add_event(run_id, str(kind), event=_details(event))
    return "event"


def _details(event: dict) -> dict:
    return {k: v for k, v in event.items() if k != "type"}


def run_remote(store, run_id: str, address: str, argv: list[str], *,  # noqa: ANN001
               token_path: str | None, working_dir: str | Path,
               python: str = DEFAULT_REMOTE_PYTHON, on_event: Callable[[dict], None] | None = None,
               **kwargs: Any) -> dict:
    """submit_and_follow with every event recorded for `run_id` (which must exist), then the
    run closed: a job that ended without a terminal status event is marked failed (or
    interrupted when stopped) with the job's message. `on_event` sees each event after it is
    stored (for a progress bar). The job id is the run id unless submission_id is given."""
    def record(ev: dict) -> None:
        try:
            record_event(store, run_id, ev)
        except BadInput as e:
            store.add_event(run_id, "bad-event", error=str(e))
        if on_event is not None:
            on_event(ev)

    kwargs.setdefault("submission_id", run_id)
    result = submit_and_follow(address, argv, token_path=token_path, working_dir=working_dir,
                               on_event=record, python=python, **kwargs)
    run = store.get_run(run_id)
    if run.status not in ("completed", "failed", "interrupted", "budget-stopped"):
        status = {"SUCCEEDED": "failed", "STOPPED": "interrupted"}.get(result["status"], "failed")
        msg = result.get("message") or f"job {result['job_id']} ended {result['status']}"
        if result["status"] == "SUCCEEDED":
            msg = f"job {result['job_id']} succeeded but sent no final status event"
        store.update_run(run_id, status=status, message=msg, ended_at=_time(None))
    return result

def job_argv(spec) -> list[str]:  # noqa: ANN001 (RunSpec)
    """`cli.py` arguments of the job that runs `spec` on the head it is submitted to: the
    whole specification, as JSON (`train --spec`), attached to the head's own cluster."""
    return ["train", "--spec", spec.for_remote_job().to_json(), "--events"]


def paths_for_head(spec: RunSpec, home: Home) -> RunSpec:
    """The request with --data and --storage as absolute paths the head can open: the job runs
    in a temporary copy of this checkout with a TALLY_HOME of its own, so a dataset name or a
    relative path would not resolve there. For the head this home's `dashboard` started (same
    machine), a dataset name resolves here and checkpoints default to this home's runs/; for
    any other head both must be given as paths (or a storage URI) valid on its nodes."""
    from dataclasses import replace

    from orchestrator.infra.dashboard import load_head
    from orchestrator.data import open_dataset

    head = load_head(home)
    local = head is not None and head.get("address") == check_address(spec.address)
    data, storage = spec.data, spec.storage
    if local:
        data = str(Path(open_dataset(data, home=home).root).resolve())  # BadInput if missing
        storage = str(Path(storage or home.runs).resolve()) if "://" not in (storage or "") \
            else storage
    else:
        if not Path(data).is_absolute():
            raise BadInput(f"--data {data!r} is not an absolute path; a job on the head at "
                           f"{spec.address} has a TALLY_HOME of its own: give the dataset's "
                           "absolute path on the cluster's nodes")
        if not storage or not (Path(storage).is_absolute() or "://" in storage):
            raise BadInput(f"--storage {storage!r} must be given as an absolute path or URI "
                           "shared by the cluster's nodes (s3://BUCKET/tally, /mnt/shared) "
                           "for a job on a remote head: its own TALLY_HOME is temporary")
    return replace(spec, data=data, storage=storage)


def train_remote(store: Store, home: Home, spec: RunSpec, *,
                 progress: Callable[[dict], None] | None = None,
                 on_start: Callable[[dict], None] | None = None,
                 python: str | None = None) -> dict:
    """Submit the run through Ray's Jobs API at `spec.address` and record what it reports."""
    from orchestrator.run.remote import _client, defaults_for, run_remote

    from orchestrator.run.launch import resolve_preset
    from orchestrator.store import utcnow
    from planners.errors import RunFailed

    preset = resolve_preset(spec.preset, spec.custom_preset)
    token_path, python = defaults_for(spec.address, home, spec.token_path, python)
    _client(spec.address, token_path)  # unreachable, 401, 403: BadInput before any run exists
    spec = paths_for_head(spec, home)
    run = store.create_run(preset.name, {"preset": preset.name, "workers": spec.workers,
                                         "remote": True, "spec": spec.to_dict()},
                           name=spec.name, status="created", ray_address=spec.address,
                           plan_id=spec.plan_id)
    if on_start:
        on_start({"run_id": run.id, "dashboard_url": spec.address, "token_path": token_path,
                  "launch": None, "run_dir": None})
    last = {"energy_joules": 0.0}

    def seen(ev: dict) -> None:
        if ev.get("type") == "energy":
            last["energy_joules"] += sum(s["joules"] for s in ev.get("samples", [ev]))
        if ev.get("type") == "step" and progress:
            progress({**ev, "energy_joules": last["energy_joules"]})

    root = Path(__file__).resolve().parents[2]
    try:
        with store.driving(run.id):
            result = run_remote(store, run.id, spec.address, job_argv(spec),
                                token_path=token_path, working_dir=root, python=python,
                                on_event=seen)
    except BaseException as e:  # refused submission, Ctrl-C (run_remote stopped the job), ...
        interrupted = isinstance(e, KeyboardInterrupt)
        store.update_run(run.id, status="interrupted" if interrupted else "failed",
                         ended_at=utcnow(), message=f"{type(e).__name__}: {e}"[:500])
        raise
    summary = store.run_summaries([run.id])[0]
    if summary["status"] == "failed":
        raise RunFailed(f"remote run {run.id} (job {result['job_id']}) failed: "
                        f"{summary['message']}; `ray job logs {result['job_id']}` shows its log")
    return summary
