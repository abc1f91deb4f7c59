"""Remote runs through Ray's Jobs API, and the `@tally` event lines that carry their results home.

The driver on this machine owns the store (DESIGN.md); the remote job owns nothing. It is
`<python> cli.py <argv...>` run on the head, with this checkout shipped as its working directory
(without .tally, .venv, data, checkpoints, .git). Everything the store needs comes back in the
job's log as lines

    @tally {"type": "...", ...}          one JSON object per line, after the 7-character prefix

which `submit_and_follow` parses and hands to `on_event`; orchestrator/run/events.py's
`record_event`, the recorder the local driver uses too, writes them to the store (its docstring
is the event contract).

Authentication: the token (read from a file, never from the command line) goes in an
`Authorization: Bearer` header, which Ray's SubmissionClient keeps and sends on every request,
the log websocket included. 401 (no token) and 403 (wrong token) become one-line BadInput.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from orchestrator.run.events import _time, record_event
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
                      entrypoint_num_cpus: float | None = None,
                      env: dict[str, str] | None = None) -> dict:
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
                   "env_vars": {"PYTHONUNBUFFERED": "1", **(env or {})}}
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
        status = _follow_to_the_end(address, token_path, client, job_id, handle)
    except KeyboardInterrupt:
        _client(address, token_path).stop_job(job_id)
        raise
    info = _retrying(address, token_path, lambda c: c.get_job_info(job_id))
    return {"job_id": job_id, "status": status, "message": info.message,
            "events": counts["events"], "bad_event_lines": counts["bad"]}


def _follow_to_the_end(address: str, token_path: str | None, client, job_id: str,  # noqa: ANN001
                       handle: Callable[[str], None]) -> str:
    """Follow the job's log until it ends, reconnecting when the connection to the head drops:
    the log is replayed from its start, and the lines already handled are skipped, so no step
    is recorded twice. Returns the job's terminal status."""
    done = {"lines": 0}

    def counted(line: str) -> None:
        handle(line)
        done["lines"] += 1

    while True:
        skip = {"n": done["lines"]}

        def replayed(line: str) -> None:
            if skip["n"] > 0:
                skip["n"] -= 1
                return
            counted(line)

        try:
            asyncio.run(_follow(client, job_id, replayed))
        except _DROPPED as e:
            why = type(e).__name__
        except RuntimeError as e:  # Ray's SDK: "WebSocket connection closed unexpectedly ..."
            if not str(e).startswith("WebSocket"):
                raise
            why = str(e).splitlines()[0]
        else:
            status = _retrying(address, token_path, lambda c: _wait_terminal(c, job_id))
            if status in TERMINAL:
                return status
            why = f"the log stream ended while the job is {status}"
        print(f"warning: lost the connection to {address} ({why}); reconnecting",
              file=sys.stderr, flush=True)
        client = _retrying(address, token_path, lambda c: c)


def _dropped_errors() -> tuple:
    import aiohttp

    return (ConnectionError, OSError, asyncio.TimeoutError, aiohttp.ClientError)


_DROPPED = _dropped_errors()
RETRY_S = float(os.environ.get("TALLY_FOLLOW_RETRY_S", "600"))


def _retrying(address: str, token_path: str | None, call: Callable):
    """call(client) with a fresh client until it answers; after RETRY_S seconds without the
    head, RunFailed saying the job may still be running (the run is not marked failed)."""
    from planners.errors import RunFailed

    deadline, wait = time.monotonic() + RETRY_S, 0.5
    while True:
        try:
            return call(_client(address, token_path))
        except (BadInput, *_DROPPED) as e:
            if time.monotonic() > deadline:
                raise RunFailed(f"lost the connection to {address} for {RETRY_S:.0f} s "
                                f"({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                                "the job may still be running on the cluster (`ray job "
                                "status`)") from None
            time.sleep(wait)
            wait = min(wait * 2, 10.0)


def _quiet_ray_logs() -> None:
    """Ray's SDK logs each upload step at INFO on stderr; keep stderr for what matters."""
    import logging

    for name in ("ray.dashboard", "ray.dashboard.modules.dashboard_sdk",
                 "ray.dashboard.modules.job.sdk"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("ray._private.runtime_env").setLevel(logging.ERROR)


async def _follow(client, job_id: str, handle: Callable[[str], None]) -> None:  # noqa: ANN001
    """Feed complete lines of the job's log to handle (chunks may split lines). A quiet log is
    checked every IDLE_S seconds: when the head does not answer a status request either, the
    connection is taken as lost (a half-open socket never closes by itself)."""
    async def consume() -> None:
        buf = ""
        async for chunk in client.tail_job_logs(job_id):
            buf += chunk
            *lines, buf = buf.split("\n")
            for line in lines:
                handle(line.rstrip("\r"))
        if buf:
            handle(buf.rstrip("\r"))

    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(consume())
    while True:
        done, _ = await asyncio.wait({task}, timeout=IDLE_S)
        if done:
            return task.result()
        try:
            await asyncio.wait_for(loop.run_in_executor(None, client.get_job_status, job_id),
                                   timeout=IDLE_S)
        except Exception as e:  # unreachable: drop this stream, reconnect
            task.cancel()
            raise ConnectionError(f"the head stopped answering ({type(e).__name__})") from None


IDLE_S = 15.0


def _wait_terminal(client, job_id: str, timeout_s: float = 60.0) -> str:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while True:
        status = str(client.get_job_status(job_id).value)
        if status in TERMINAL or time.monotonic() > deadline:
            return status
        time.sleep(0.5)


def run_remote(store, run_id: str, address: str, argv: list[str], *,  # noqa: ANN001
               token_path: str | None, working_dir: str | Path,
               python: str = DEFAULT_REMOTE_PYTHON, on_event: Callable[[dict], None] | None = None,
               tracker=None, **kwargs: Any) -> dict:  # noqa: ANN001 (trackers.Tracker)
    """submit_and_follow with every event recorded for `run_id` (which must exist), then the
    run closed: a job that ended without a terminal status event is marked failed (or
    interrupted when stopped) with the job's message. `on_event` sees each event after it is
    stored (for a progress bar); `tracker` (orchestrator/infra/trackers.py) too. The job id is
    the run id unless submission_id is given."""
    def record(ev: dict) -> None:
        try:
            record_event(store, run_id, ev, tracker)
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
    from orchestrator.run.storage import location_env
    from orchestrator.run.storage import resolve as resolve_storage
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

    from orchestrator.infra.trackers import open_tracker

    root = Path(__file__).resolve().parents[2]
    # the tracker is this machine's: the job's `run` event brings its PUE and grid intensity
    tracker = open_tracker(spec.tracker, run.id, run_dir=home.run_dir(run.id), home=home,
                           run_name=spec.name)
    try:
        with store.driving(run.id):
            result = run_remote(store, run.id, spec.address, job_argv(spec),
                                token_path=token_path, working_dir=root, python=python,
                                on_event=seen, tracker=tracker,
                                env=location_env(resolve_storage(spec.storage, home)))
    except BaseException as e:  # refused submission, Ctrl-C (run_remote stopped the job), ...
        interrupted = isinstance(e, KeyboardInterrupt)
        store.update_run(run.id, status="interrupted" if interrupted else "failed",
                         ended_at=utcnow(), message=f"{type(e).__name__}: {e}"[:500])
        if tracker is not None:
            tracker.close("interrupted" if interrupted else "failed")
        raise
    summary = store.run_summaries([run.id])[0]
    if tracker is not None:
        tracker.close(summary["status"])
    if summary["status"] == "failed":
        raise RunFailed(f"remote run {run.id} (job {result['job_id']}) failed: "
                        f"{summary['message']}; `ray job logs {result['job_id']}` shows its log")
    return summary
