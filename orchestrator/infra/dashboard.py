"""A local Ray head with its dashboard, started (or found) by `cli.py dashboard`.

Safe by default: the dashboard (and Jobs API) on 127.0.0.1, token authentication on
(RAY_AUTH_MODE=token), the token in `$TALLY_HOME/ray/auth_token` created with mode 0600 in a
0700 directory (Ray's own `ray get-auth-token --generate` writes ~/.ray/auth_token world-readable
and prints the token). The token is never printed or logged: commands print its path.

`ray start --head` runs in a new session, so Ray's daemons (GCS, raylet, dashboard, ...) share
one process group; `$TALLY_HOME/ray-head.json` records it, and `stop_head` ends that group and
its descendants only, never another user's or another tally home's Ray (`ray stop` would).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

from planners.errors import BadInput, RunFailed

HEAD_FILE = "ray-head.json"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
DEFAULT_DASHBOARD_PORT = 8265
START_TIMEOUT_S = 90.0
WORKER_PORTS = (10002, 19999)  # `ray start`'s default --min/max-worker-port


# -- the token -------------------------------------------------------------------------------
def token_path(home) -> Path:  # noqa: ANN001 (orchestrator.home.Home)
    return home.root / "ray" / "auth_token"


def ensure_token(home) -> Path:  # noqa: ANN001
    """Create the token file (0600, in a 0700 directory) if missing; tighten its mode if it is
    readable by others. Returns its path. The format is Ray's (64 hex characters)."""
    from ray._private.authentication.authentication_token_generator import (
        generate_new_authentication_token,
    )

    path = token_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    if path.exists():
        os.chmod(path, 0o600)
        if not path.read_text().strip():
            raise BadInput(f"token file {str(path)!r} is empty; delete it and run "
                           "`cli.py dashboard` again to make a new one")
        return path
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(generate_new_authentication_token())
    return path


def read_token(path: str | os.PathLike) -> str:
    p = Path(path).expanduser()
    try:
        token = p.read_text().strip()
    except OSError as e:
        raise BadInput(f"token file {str(p)!r} cannot be read ({e.strerror}); give the token "
                       "file of the Ray head (`cli.py dashboard` prints where it is)") from None
    if not token:
        raise BadInput(f"token file {str(p)!r} is empty; give the token file of the Ray head")
    return token


# -- HTTP probes ---------------------------------------------------------------------------------
def http_status(url: str, token: str | None = None, timeout_s: float = 5.0) -> int:
    """The HTTP status of GET url (with `Authorization: Bearer token` when given); 0 when
    nothing answers."""
    req = urllib.request.Request(url)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return 0


# -- the head --------------------------------------------------------------------------------
def head_file(home) -> Path:  # noqa: ANN001
    return home.root / HEAD_FILE


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1" if host in LOOPBACK else host, port))
        except OSError:
            return True
    return False


def _ray_exe() -> str:
    here = Path(sys.executable).with_name("ray")
    exe = str(here) if here.exists() else shutil.which("ray")
    if not exe:
        raise RunFailed("the `ray` command is not installed beside this Python; install "
                        "requirements.txt")
    return exe


def _group(pgid: int) -> list:
    """Live processes in process group pgid and all their descendants."""
    import psutil

    procs: dict[int, psutil.Process] = {}
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(p.pid) == pgid:
                procs[p.pid] = p
                for c in p.children(recursive=True):
                    procs[c.pid] = c
        except (ProcessLookupError, psutil.Error, OSError):
            continue
    return list(procs.values())


def _is_ray(procs: list) -> bool:
    import psutil

    for p in procs:
        try:
            if p.name() in ("gcs_server", "raylet"):
                return True
        except psutil.Error:
            continue
    return False


def _session_dir(procs: list) -> str | None:
    import psutil

    for p in procs:
        try:
            if p.name() == "gcs_server":
                for arg in p.cmdline():
                    if arg.startswith("--log_dir="):
                        return str(Path(arg.split("=", 1)[1]).parent)
        except psutil.Error:
            continue
    return None


def load_head(home) -> dict | None:  # noqa: ANN001
    """The head recorded under this home, if its processes still run; else None."""
    f = head_file(home)
    if not f.exists():
        return None
    try:
        info = json.loads(f.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if not _is_ray(_group(int(info.get("pgid", -1)))):
        return None
    return info


def start_head(home, *, host: str = "127.0.0.1", port: int = DEFAULT_DASHBOARD_PORT,  # noqa: ANN001
               allow_remote: bool = False, auth: bool = True, num_cpus: int | None = None,
               python: str | None = None) -> dict:
    """Start a local Ray head (dashboard at host:port, token auth), or return the one this home
    already started. Returns the recorded info (no token in it) plus {"started": bool}."""
    if host not in LOOPBACK:
        if not (allow_remote and auth):
            raise BadInput(f"--host {host} would expose the dashboard and Jobs API (anyone who "
                           "reaches it can run code: CVE-2023-48022); use 127.0.0.1, or pass "
                           "both --allow-remote and token authentication (drop --no-auth)")
    if not 1 <= port <= 65535:
        raise BadInput(f"--port {port} is not a TCP port; give 1-65535 (default 8265)")
    if WORKER_PORTS[0] <= port <= WORKER_PORTS[1]:
        raise BadInput(f"--port {port} is inside Ray's worker port range "
                       f"{WORKER_PORTS[0]}-{WORKER_PORTS[1]}; give a port outside it "
                       "(default 8265)")
    home.ensure()
    running = load_head(home)
    if running is not None:
        return {**running, "started": False}
    if _port_in_use(host, port):
        raise BadInput(f"port {port} on {host} is already in use (another Ray dashboard?); "
                       "give --port another port")
    tok = ensure_token(home) if auth else None
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_TOKEN", "RAY_ADDRESS")}
    env["RAY_AUTH_MODE"] = "token" if auth else "disabled"
    if tok is not None:
        env["RAY_AUTH_TOKEN_PATH"] = str(tok)
    ports = {name: _free_port() for name in ("gcs", "client", "agent", "metrics")}
    cmd = [_ray_exe(), "start", "--head", f"--port={ports['gcs']}",
           f"--dashboard-host={host}", f"--dashboard-port={port}", "--include-dashboard=true",
           f"--ray-client-server-port={ports['client']}",
           f"--dashboard-agent-listen-port={ports['agent']}",
           f"--metrics-export-port={ports['metrics']}", "--disable-usage-stats",
           "--log-style=record", "--log-color=false"]
    if host in LOOPBACK:
        cmd.append("--node-ip-address=127.0.0.1")
    if num_cpus is not None:
        cmd.append(f"--num-cpus={num_cpus}")
    log = home.root / "ray" / "head.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        rc = proc.wait(timeout=START_TIMEOUT_S)
    url_host = {"localhost": "127.0.0.1", "::1": "[::1]"}.get(host, host)
    url_host = f"[{url_host}]" if ":" in url_host and not url_host.startswith("[") else url_host
    url = f"http://{url_host}:{port}"
    info = {
        "dashboard_url": url,
        "address": url,  # for the Jobs API (`train --address`)
        "gcs_address": f"127.0.0.1:{ports['gcs']}" if host in LOOPBACK else f"{host}:{ports['gcs']}",
        "host": host,
        "port": port,
        "metrics_port": ports["metrics"],
        "client_port": ports["client"],
        "auth": "token" if auth else "disabled",
        "token_path": str(tok) if tok else None,
        "pgid": proc.pid,
        "python": python or sys.executable,
        "log": str(log),
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if rc != 0:
        _kill_group(proc.pid)
        raise RunFailed(f"`ray start --head` exited with {rc}; see {log}")
    token = read_token(tok) if tok else None
    deadline = time.monotonic() + START_TIMEOUT_S
    while http_status(f"{url}/api/version", token) != 200:
        if time.monotonic() > deadline:
            _kill_group(proc.pid)
            raise RunFailed(f"the Ray dashboard did not answer at {url} within "
                            f"{START_TIMEOUT_S:.0f} s; see {log}")
        time.sleep(0.5)
    info["session_dir"] = _session_dir(_group(proc.pid))
    if info["session_dir"]:  # tally's panels beside Ray's own (orchestrator/infra/grafana.py)
        from orchestrator.infra.grafana import provision

        grafana = provision(info["session_dir"], timeout_s=30)
        info["grafana_dashboard"] = str(grafana) if grafana else None
    f = head_file(home)
    f.write_text(json.dumps(info, indent=2) + "\n")
    return {**info, "started": True}


def _kill_group(pgid: int, grace_s: float = 5.0) -> int:
    import psutil

    procs = _group(pgid)
    for p in procs:
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)
    return len(procs)


def stop_head(home) -> dict:  # noqa: ANN001
    """Stop the head this home started (its process group and their children) and forget it.
    Never touches a Ray this home did not start."""
    f = head_file(home)
    if not f.exists():
        return {"stopped": False, "reason": f"no head recorded in {f}; nothing to stop"}
    try:
        info = json.loads(f.read_text())
        pgid = int(info["pgid"])
    except (OSError, ValueError, KeyError, json.JSONDecodeError):
        raise BadInput(f"{f} is not a head record written by `cli.py dashboard`; "
                       "delete it and stop that Ray yourself") from None
    procs = _group(pgid)
    if not _is_ray(procs):
        f.unlink()
        return {"stopped": False, "reason": f"the head recorded in {f} was no longer running",
                "dashboard_url": info.get("dashboard_url")}
    n = _kill_group(pgid)
    f.unlink()
    forget_current_cluster(info.get("gcs_address"))
    return {"stopped": True, "processes": n, "dashboard_url": info.get("dashboard_url")}


def _current_cluster_file() -> Path:
    from ray._common.utils import get_ray_address_file

    return Path(get_ray_address_file(None))


def forget_current_cluster(gcs_address: str | None = None) -> bool:
    """Remove Ray's "current cluster" record (`<ray temp>/ray_current_cluster`, written by
    `ray start`) when it names `gcs_address` (the head we stopped; compared by port, since Ray
    writes the node's IP there) or, with no address, a GCS nobody listens on any more.

    Why it matters: killing a head's process group (not `ray stop`) leaves the record behind,
    and every later Ray process that looks up "the current cluster" waits for a GCS that is
    gone. Ray Train's placement-group cleaner does that on every run: each later training run
    then spent 12 s at shutdown waiting for it (measured). Removing a record of a dead cluster
    is what `ray stop` does. Returns whether the record was removed."""
    f = _current_cluster_file()
    try:
        recorded = f.read_text().strip()
    except OSError:
        return False
    host, _, port = recorded.rpartition(":")
    if not port.isdigit():
        return False
    if gcs_address is not None:
        stale = gcs_address.rpartition(":")[2] == port
    else:
        stale = not _port_in_use(host or "127.0.0.1", int(port))
    if stale:
        try:
            f.unlink()
        except OSError:
            return False
    return stale
