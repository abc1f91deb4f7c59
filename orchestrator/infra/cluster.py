"""Check a Ray cluster-launcher YAML offline: Ray's own schema and config validation, then
tally's rules (token auth on every node, dashboard on loopback, a head that schedules no
training, GPU counts that match the instance type).

Ray's `prepare_config` merges the provider's defaults.yaml into the file (so a missing
`head_start_ray_commands` becomes Ray's default, which binds the dashboard to 0.0.0.0) and
`validate_config` checks the result against `ray/autoscaler/ray-schema.json`. Neither needs a
cloud SDK or credentials (`ray up` does: it has no dry run).
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from planners.errors import BadInput


@dataclass(frozen=True)
class Instance:
    gpus: int
    gpu: str | None  # model, e.g. "A100-80GB"
    vcpus: int


# Instance types tally knows (GPU count fixed by the type). From the AWS EC2 and GCP Compute
# Engine machine-type pages. Types not listed are accepted with a warning.
INSTANCES: dict[str, Instance] = {
    # AWS
    "p4d.24xlarge": Instance(8, "A100-40GB", 96),
    "p4de.24xlarge": Instance(8, "A100-80GB", 96),
    "p5.48xlarge": Instance(8, "H100-80GB", 192),
    "p5e.48xlarge": Instance(8, "H200-141GB", 192),
    "g5.xlarge": Instance(1, "A10G-24GB", 4),
    "g5.12xlarge": Instance(4, "A10G-24GB", 48),
    "g5.48xlarge": Instance(8, "A10G-24GB", 192),
    "m5.large": Instance(0, None, 2),
    "m5.xlarge": Instance(0, None, 4),
    "m5.2xlarge": Instance(0, None, 8),
    "m6i.xlarge": Instance(0, None, 4),
    "m6i.2xlarge": Instance(0, None, 8),
    "m6i.4xlarge": Instance(0, None, 16),
    "c6i.2xlarge": Instance(0, None, 8),
    # GCP (A2 and A3 machine types carry their GPUs; no guestAccelerators)
    "a2-highgpu-1g": Instance(1, "A100-40GB", 12),
    "a2-highgpu-2g": Instance(2, "A100-40GB", 24),
    "a2-highgpu-4g": Instance(4, "A100-40GB", 48),
    "a2-highgpu-8g": Instance(8, "A100-40GB", 96),
    "a2-megagpu-16g": Instance(16, "A100-40GB", 96),
    "a2-ultragpu-1g": Instance(1, "A100-80GB", 12),
    "a2-ultragpu-2g": Instance(2, "A100-80GB", 24),
    "a2-ultragpu-4g": Instance(4, "A100-80GB", 48),
    "a2-ultragpu-8g": Instance(8, "A100-80GB", 96),
    "a3-highgpu-8g": Instance(8, "H100-80GB", 208),
    "n2-standard-4": Instance(0, None, 4),
    "n2-standard-8": Instance(0, None, 8),
    "n2-standard-16": Instance(0, None, 16),
    "n1-standard-8": Instance(0, None, 8),  # plus guestAccelerators, counted below
    "e2-standard-8": Instance(0, None, 8),
}

LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
DEFAULT_TOKEN_PATH = "~/.ray/auth_token"  # where Ray looks when RAY_AUTH_TOKEN_PATH is unset


def check_cluster_file(path: str | Path) -> dict:
    """Validate a cluster YAML. Returns {"file", "ok", "provider", "node_types", "problems",
    "warnings", "ray_validation"}; `ok` is False when there is any problem. BadInput when the file
    is missing or is not a YAML mapping."""
    p = Path(path)
    if not p.is_file():
        raise BadInput(f"cluster file {str(p)!r} does not exist; give the path of a Ray "
                       "cluster YAML such as ray_cluster.yaml")
    try:
        raw = yaml.safe_load(p.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        where = getattr(e, "problem_mark", None)
        at = f" (line {where.line + 1})" if where is not None else ""
        raise BadInput(f"cluster file {str(p)!r} is not valid YAML{at}; give a Ray cluster-"
                       "launcher YAML such as ray_cluster.yaml") from None
    if not isinstance(raw, dict):
        raise BadInput(f"cluster file {str(p)!r} is not a YAML mapping of cluster settings; "
                       "give a Ray cluster-launcher YAML such as ray_cluster.yaml")
    return check_cluster_config(raw, name=str(p))


def check_cluster_config(raw: dict, name: str = "<config>") -> dict:
    problems: list[str] = []
    warnings: list[str] = []
    config, ray_error, ray_notes = ray_validate(raw)
    if ray_error:
        problems.append(f"Ray's validation: {ray_error}")
    warnings += [f"Ray: {n}" for n in ray_notes]
    cfg = config if config is not None else raw
    if config is not None:
        for key in ("head_start_ray_commands", "worker_start_ray_commands"):
            if key not in raw:
                warnings.append(f"{key} is not in the file, so Ray's {cfg['provider']['type']} "
                                "default is used (no token auth; the head's dashboard on 0.0.0.0)")
    for rule in (rule_token_auth, rule_dashboard_loopback, rule_head_no_training,
                 rule_gpu_counts):
        try:
            rule(cfg, problems, warnings)
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            if not ray_error:  # a malformed config Ray accepted: say which rule could not run
                problems.append(f"{rule.__name__}: cannot read the config ({e})")
    return {
        "file": name,
        "ok": not problems,
        "provider": (cfg.get("provider") or {}).get("type") if isinstance(cfg.get("provider"), dict) else None,
        "cluster_name": cfg.get("cluster_name"),
        "head_node_type": cfg.get("head_node_type"),
        "max_workers": cfg.get("max_workers"),
        "node_types": node_summary(cfg),
        "ray_validation": "ok" if not ray_error else "failed",
        "problems": problems,
        "warnings": warnings,
    }


def ray_validate(raw: dict) -> tuple[dict | None, str | None, list[str]]:
    """Ray's prepare_config (merge the provider defaults) + validate_config (the JSON schema
    and a few cross-field checks). Returns (prepared config or None, error or None, notes).
    Ray logs what it fills in; those lines are collected as notes rather than printed."""
    import copy

    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    notes: list[str] = []
    handler = _Collect(notes)
    loggers = [logging.getLogger(n) for n in ("ray", "ray.autoscaler")]
    saved = [(lg, lg.level, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.WARNING)
        lg.propagate = False
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            if not isinstance(raw.get("provider"), dict) or "type" not in raw["provider"]:
                return None, "`provider` with a `type` (aws, gcp, ...) is required", notes
            try:
                config = prepare_config(copy.deepcopy(raw))
            except NotImplementedError as e:
                return None, f"{e}", notes
            validate_config(config)
            return config, None, notes
    except jsonschema.ValidationError as e:
        where = "/".join(str(x) for x in e.absolute_path) or "top level"
        return None, f"at {where}: {e.message}", notes
    except (ValueError, KeyError, TypeError, AssertionError, RuntimeError) as e:
        return None, f"{type(e).__name__}: {e}", notes
    finally:
        for lg, level, propagate in saved:
            lg.removeHandler(handler)
            lg.setLevel(level)
            lg.propagate = propagate
        notes += [" ".join(line.split()) for line in sink.getvalue().splitlines() if line.strip()]


class _Collect(logging.Handler):
    def __init__(self, notes: list[str]):
        super().__init__(logging.WARNING)
        self.notes = notes

    def emit(self, record: logging.LogRecord) -> None:
        msg = re.sub(r"\x1b\[[0-9;]*m", "", record.getMessage())
        self.notes.append(" ".join(msg.split()))


# -- tally's rules ---------------------------------------------------------------------------
def _ray_start_commands(cfg: dict) -> list[tuple[str, str]]:
    """(where, command) for every command that runs `ray start`."""
    found = []
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        for i, cmd in enumerate(cfg.get(key) or []):
            if re.search(r"\bray start\b", str(cmd)):
                found.append((f"{key}[{i}]", " ".join(str(cmd).split())))
    return found


def _mount_dests(cfg: dict) -> list[str]:
    return [str(k).rstrip("/") for k in (cfg.get("file_mounts") or {})]


def rule_token_auth(cfg: dict, problems: list[str], warnings: list[str]) -> None:
    """Every `ray start` runs with RAY_AUTH_MODE=token and a token file that reaches the node
    through file_mounts; the token itself is never written in the YAML."""
    text = yaml.safe_dump(cfg)
    if re.search(r"\bRAY_AUTH_TOKEN=\S", text):
        problems.append("auth: a literal RAY_AUTH_TOKEN=... is written in the cluster file; "
                        "copy a token file with file_mounts and set RAY_AUTH_TOKEN_PATH instead")
    if re.search(r"\bRAY_AUTH_MODE=(?!token\b)\S+", text):
        problems.append("auth: RAY_AUTH_MODE is set to something other than `token`; token "
                        "authentication must be on on every node (RAY_AUTH_MODE=token)")
    starts = _ray_start_commands(cfg)
    if not starts:
        problems.append("auth: no `ray start` command found in head_start_ray_commands or "
                        "worker_start_ray_commands")
    dests = _mount_dests(cfg)
    for where, cmd in starts:
        if not re.search(r"\bRAY_AUTH_MODE=token\b", cmd):
            problems.append(f"auth: {where} starts Ray without token authentication; put "
                            "RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=<token file> in the same "
                            "command (each command runs in a fresh shell)")
            continue
        m = re.search(r"\bRAY_AUTH_TOKEN_PATH=(\S+)", cmd)
        token_path = m.group(1).strip("'\"") if m else DEFAULT_TOKEN_PATH
        if not any(token_path == d or token_path.startswith(d + "/") for d in dests):
            problems.append(f"auth: {where} reads the token from {token_path}, which no "
                            "file_mounts entry puts on the node; mount the token file (or its "
                            "directory) there")


def _flag(cmd: str, name: str) -> str | None:
    try:
        words = shlex.split(cmd)
    except ValueError:
        words = cmd.split()
    for i, w in enumerate(words):
        if w == name and i + 1 < len(words):
            return words[i + 1].rstrip(";")
        if w.startswith(name + "="):
            return w.split("=", 1)[1].rstrip(";")
    return None


def rule_dashboard_loopback(cfg: dict, problems: list[str], warnings: list[str]) -> None:
    """The head's dashboard (and Jobs API) binds to loopback; users reach it by `ray dashboard`."""
    for where, cmd in _ray_start_commands(cfg):
        if not where.startswith("head") or "--head" not in cmd:
            continue
        host = _flag(cmd, "--dashboard-host")
        if host is not None and host not in LOOPBACK:
            problems.append(f"dashboard: {where} binds the dashboard to {host}; use "
                            "--dashboard-host=127.0.0.1 and reach it with `ray dashboard "
                            "CLUSTER.yaml` (anyone reaching port 8265 can run code: "
                            "CVE-2023-48022)")


def rule_head_no_training(cfg: dict, problems: list[str], warnings: list[str]) -> None:
    """The head advertises 0 CPUs and 0 GPUs so no training worker or task lands on it."""
    head = cfg.get("head_node_type")
    node = (cfg.get("available_node_types") or {}).get(head)
    if not isinstance(node, dict):
        return  # Ray's validation already says so
    res = node.get("resources") or {}
    bad = [f"{k}={res[k]}" if k in res else f"no {k} (Ray then detects the machine's)"
           for k in ("CPU", "GPU") if res.get(k) != 0]
    if bad:
        problems.append(f"head: node type {head!r} advertises {', '.join(bad)}; set resources "
                        '{"CPU": 0, "GPU": 0} so the head schedules no training')
    for where, cmd in _ray_start_commands(cfg):
        if where.startswith("head"):
            for flag in ("--num-cpus", "--num-gpus"):
                v = _flag(cmd, flag)
                if v is not None and v not in ("0", "0.0"):
                    problems.append(f"head: {where} passes {flag}={v}; use {flag}=0 on the head")


def _instance_type(node_config: dict) -> str | None:
    return node_config.get("InstanceType") or node_config.get("machineType")


def _gpus_of(node_config: dict) -> tuple[int | None, Instance | None]:
    itype = _instance_type(node_config)
    inst = INSTANCES.get(itype or "")
    if inst is None:
        return None, None
    extra = sum(int(a.get("acceleratorCount", 0)) for a in node_config.get("guestAccelerators") or [])
    return inst.gpus + extra, inst


def rule_gpu_counts(cfg: dict, problems: list[str], warnings: list[str]) -> None:
    """Declared GPU resources equal the GPUs the instance type has; CPUs no more than vCPUs."""
    head = cfg.get("head_node_type")
    gpu_workers = 0
    for name, node in (cfg.get("available_node_types") or {}).items():
        nc = node.get("node_config") or {}
        res = node.get("resources") or {}
        itype = _instance_type(nc)
        gpus, inst = _gpus_of(nc)
        if inst is None:
            if itype is None:
                continue  # no node_config: Ray's validation says so
            warnings.append(f"gpus: node type {name!r} has instance type {itype!r}, which tally "
                            "does not know; its GPU count is not checked")
            continue
        if name == head:
            if gpus:
                warnings.append(f"gpus: the head {itype} has {gpus} GPU(s) that will sit idle; "
                                "a CPU instance is enough for the head")
            continue
        declared = res.get("GPU")
        if declared is None and gpus:
            problems.append(f"gpus: node type {name!r} ({itype}, {gpus}x {inst.gpu}) declares no "
                            f'GPU resource; add "GPU": {gpus} to its resources')
        elif declared is not None and declared != gpus:
            problems.append(f"gpus: node type {name!r} declares GPU={declared} but {itype} has "
                            f"{gpus}; set \"GPU\": {gpus}")
        cpu = res.get("CPU")
        if cpu is not None and cpu > inst.vcpus:
            problems.append(f"gpus: node type {name!r} declares CPU={cpu} but {itype} has "
                            f"{inst.vcpus} vCPUs; set \"CPU\": {inst.vcpus} or fewer")
        if gpus and (cfg.get("provider") or {}).get("type") == "gcp":
            sched = nc.get("scheduling") or []
            sched = sched if isinstance(sched, list) else [sched]
            if not any(isinstance(s, dict) and s.get("onHostMaintenance") == "TERMINATE"
                       for s in sched):
                problems.append(f"gpus: GCP node type {name!r} has GPUs but no scheduling "
                                "onHostMaintenance: TERMINATE (GPU VMs cannot live-migrate)")
        if gpus and node.get("max_workers", cfg.get("max_workers", 0)):
            gpu_workers += 1
    if gpu_workers == 0:
        warnings.append("gpus: no worker node type with GPUs and max_workers > 0; nothing to "
                        "train on")


def node_summary(cfg: dict) -> list[dict]:
    out = []
    nodes = cfg.get("available_node_types")
    if not isinstance(nodes, dict):
        return out
    for name, node in nodes.items():
        if not isinstance(node, dict):
            continue
        nc = node.get("node_config") if isinstance(node.get("node_config"), dict) else {}
        gpus, inst = _gpus_of(nc)
        res = node.get("resources") if isinstance(node.get("resources"), dict) else {}
        out.append({"name": name, "head": name == cfg.get("head_node_type"),
                    "instance_type": _instance_type(nc), "gpu_model": inst.gpu if inst else None,
                    "instance_gpus": gpus, "resources": res,
                    "min_workers": node.get("min_workers"), "max_workers": node.get("max_workers")})
    return out
