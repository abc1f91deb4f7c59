"""Checkpoints with torch.distributed.checkpoint (DCP), complete-or-nothing.

Layout under a run's checkpoint root (shared storage on a cluster):

    step-00000100.tmp/   being written (every rank writes its DCP shard here)
    step-00000100/       complete: renamed from .tmp after every rank finished, and holding
        COMPLETE.json    step, files with their sizes and sha256, written last
        rng-rank<r>.pt   each rank's RNG states (torch.save of tensors, loaded weights_only)
        *.distcp, .metadata

A directory counts only when it has COMPLETE.json and every file in it matches. Loading walks
from the newest complete checkpoint back to older ones, so a half-written or corrupted newest
checkpoint falls back to the previous good one, and says so. We scan storage rather than ask Ray
which checkpoint it registered: a hard crash can lose Ray's record of the newest one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_state_dict,
                                                     set_state_dict)

MARKER = "COMPLETE.json"
_NAME = re.compile(r"^step-(\d{8})$")


@dataclass(frozen=True)
class Found:
    step: int
    path: Path
    skipped: list[tuple[Path, str]]  # newer checkpoints passed over, and why


def step_dir(root: Path, step: int) -> Path:
    return Path(root) / f"step-{step:08d}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def rng_state() -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save(root: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
         extra: dict[str, Any], keep_last: int | None = None) -> Path:
    """Collective: every rank calls it. Returns the complete checkpoint's directory."""
    root = Path(root)
    final = step_dir(root, step)
    tmp = final.with_name(final.name + ".tmp")
    rank, world = _rank(), _world()
    if rank == 0:
        if tmp.exists():
            shutil.rmtree(tmp)  # left by a crash mid-save
        tmp.mkdir(parents=True)
    _barrier()
    model_sd, optim_sd = get_state_dict(model, optimizer)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp))
    torch.save(rng_state(), tmp / f"rng-rank{rank}.pt")
    _barrier()
    # Each rank hashes a share of the files; rank 0 writes the marker and renames.
    files = sorted(p.name for p in tmp.iterdir())
    mine = {name: {"bytes": (tmp / name).stat().st_size, "sha256": _sha256(tmp / name)}
            for i, name in enumerate(files) if i % world == rank}
    shares: list[dict] = [None] * world  # type: ignore[list-item]
    if dist.is_initialized():
        dist.all_gather_object(shares, mine)
    else:
        shares = [mine]
    if rank == 0:
        manifest = {"step": step, "world_size": world, "files": {},
                    "extra": {k: v for k, v in extra.items() if isinstance(v, (int, float, str))}}
        for share in shares:
            manifest["files"].update(share)
        marker = tmp / MARKER
        with open(marker.with_suffix(".part"), "w") as f:
            json.dump(manifest, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(marker.with_suffix(".part"), marker)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        if keep_last:
            prune(root, keep_last)
    _barrier()
    return final


def complete_steps(root: Path) -> list[tuple[int, Path]]:
    """Checkpoint directories that carry a marker, newest first (contents not yet verified)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _NAME.match(p.name)
        if m and (p / MARKER).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found, reverse=True)


def verify(path: Path, share: tuple[int, int] = (0, 1)) -> str | None:
    """None when the checkpoint's files (this rank's share of them) match the marker;
    otherwise the reason it is not usable."""
    try:
        manifest = json.loads((path / MARKER).read_text())
    except (OSError, ValueError) as e:
        return f"unreadable marker ({e})"
    rank, world = share
    for i, (name, want) in enumerate(sorted(manifest.get("files", {}).items())):
        f = path / name
        if not f.is_file():
            return f"{name} is missing"
        if f.stat().st_size != want["bytes"]:
            return f"{name} has {f.stat().st_size} bytes, expected {want['bytes']}"
        if i % world == rank and _sha256(f) != want["sha256"]:
            return f"{name} does not match its checksum"
    return None


def find_latest(root: Path, world_verify: bool = True, max_step: int | None = None) -> Found | None:
    """The newest checkpoint that is complete and intact (collective when distributed: every
    rank checks a share of the files and they agree), at or before `max_step` when given (the
    last step the store holds: resuming past it would leave steps unrecorded)."""
    skipped: list[tuple[Path, str]] = []
    rank, world = _rank(), _world()
    for step, path in complete_steps(root):
        if max_step is not None and step > max_step:
            skipped.append((path, f"past the last recorded step {max_step}"))
            continue
        reason = verify(path, (rank, world) if world_verify else (0, 1))
        if dist.is_initialized():
            reasons: list[str | None] = [None] * world
            dist.all_gather_object(reasons, reason)
            reason = next((r for r in reasons if r), None)
        if reason is None:
            return Found(step, path, skipped)
        skipped.append((path, reason))
    if skipped:
        return Found(-1, Path(), skipped)
    return None


def load(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Collective: load model, optimiser and extra state in place; returns `extra`."""
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optim": optim_sd}
    manifest = json.loads((Path(path) / MARKER).read_text())
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(model, optimizer, model_state_dict=state["model"],
                   optim_state_dict=state["optim"], options=StateDictOptions(strict=True))
    rng_file = Path(path) / f"rng-rank{_rank()}.pt"
    if rng_file.is_file():
        set_rng_state(torch.load(rng_file, weights_only=True))
    return dict(manifest.get("extra", {}))


def prune(root: Path, keep_last: int) -> None:
    """Keep the newest `keep_last` complete checkpoints; remove older ones and stale .tmp dirs."""
    steps = complete_steps(root)
    for _, path in steps[keep_last:]:
        shutil.rmtree(path, ignore_errors=True)
    newest = steps[0][0] if steps else None
    for p in Path(root).glob("step-*.tmp"):
        m = re.match(r"^step-(\d{8})\.tmp$", p.name)
        if m and newest is not None and int(m.group(1)) < newest:
            shutil.rmtree(p, ignore_errors=True)
