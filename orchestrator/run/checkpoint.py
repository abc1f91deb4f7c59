"""Checkpoints with torch.distributed.checkpoint (DCP), complete-or-nothing, on a local disk
or an object store (any fsspec URI: s3://, gs://; see storage.py).

Layout under a run's checkpoint root (shared storage on a cluster):

    step-00000100.tmp/   local disk only: being written (every rank writes its DCP shard here)
    step-00000100/       complete: renamed from .tmp after every rank finished, and holding
        COMPLETE.json    step, files with their sizes and sha256, written last
        rng-rank<r>.pt   each rank's RNG states (torch.save of tensors, loaded weights_only)
        *.distcp, .metadata

An object store has no atomic rename (a "rename" is a copy of every object, then a delete), so
there the ranks write straight into step-00000100/ and rank 0 writes COMPLETE.json last, in one
PUT, after every rank finished and every file's sha256 is known: the object appears whole or not
at all. A save over an existing step deletes the old marker first.

A directory counts only when it has COMPLETE.json and every file in it matches. Loading walks
from the newest complete checkpoint back to older ones, so a half-written or corrupted newest
checkpoint falls back to the previous good one, and says so (a step-N/ directory without a
marker is reported as skipped too: on an object store it is a save that did not finish). We scan
storage rather than ask Ray which checkpoint it registered: a hard crash can lose Ray's record of
the newest one.
"""

from __future__ import annotations

import hashlib
import io
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

from orchestrator.run.storage import Location as _Root
from orchestrator.run.storage import Where
from orchestrator.run.storage import basename
from orchestrator.run.storage import sha256_file as _sha256  # noqa: F401 (tests use it)

MARKER = "COMPLETE.json"
_NAME = re.compile(r"^step-(\d{8})$")
_TMP = re.compile(r"^step-(\d{8})\.tmp$")



@dataclass(frozen=True)
class Found:
    step: int
    path: Where
    skipped: list[tuple[Where, str]]  # newer checkpoints passed over, and why


class _Tee:
    """A write stream that also counts and hashes what goes through it."""

    def __init__(self, raw):
        self.raw, self.sha, self.bytes = raw, hashlib.sha256(), 0

    def write(self, b) -> int:
        view = memoryview(b).cast("B")
        self.sha.update(view)
        self.bytes += view.nbytes
        return self.raw.write(b)

    def __getattr__(self, name: str):
        return getattr(self.raw, name)


def _hashing_writer(uri: str):
    """DCP's fsspec writer, recording (bytes, sha256) of every file this rank writes, so the
    manifest needs no second download of the shards."""
    from contextlib import contextmanager

    from torch.distributed.checkpoint._fsspec_filesystem import FileSystem, FsspecWriter

    class HashingFileSystem(FileSystem):
        def __init__(self, fs):
            super().__init__()
            self.fs, self.written = fs, {}

        @contextmanager
        def create_stream(self, path, mode):
            with super().create_stream(path, mode) as stream:
                if "w" not in mode:
                    yield stream
                    return
                tee = _Tee(stream)
                yield tee
            self.written[basename(os.fspath(path))] = {"bytes": tee.bytes,
                                                       "sha256": tee.sha.hexdigest()}

        def rename(self, path, new_path):  # .metadata.tmp -> .metadata
            super().rename(path, new_path)
            old = self.written.pop(basename(os.fspath(path)), None)
            if old is not None:
                self.written[basename(os.fspath(new_path))] = old

    # sync_files would os.sync() the whole machine: an object is durable once its PUT ends
    writer = FsspecWriter(uri, sync_files=False)
    writer.fs = HashingFileSystem(writer.fs.fs)
    return writer


def step_dir(root: Where, step: int) -> Where:
    r = _Root(root)
    return r.out(r.join(f"step-{step:08d}"))


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


def save(root: Where, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
         extra: dict[str, Any], keep_last: int | None = None) -> Where:
    """Collective: every rank calls it. Returns the complete checkpoint's directory."""
    r = _Root(root)
    final = r.join(f"step-{step:08d}")
    # local: write beside, rename when complete; object store: write in place, marker last
    target = final + ".tmp" if r.local else final
    rank, world = _rank(), _world()
    if rank == 0:
        if r.local:
            tmp = Path(target)
            if tmp.exists():
                shutil.rmtree(tmp)  # left by a crash mid-save
            tmp.mkdir(parents=True)
        else:
            r.rmtree(final, first=MARKER)  # an older save of this step, or one cut short: marker first
    _barrier()
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optim": optim_sd}
    if r.local:
        dcp.save(state, checkpoint_id=target)
        torch.save(rng_state(), Path(target) / f"rng-rank{rank}.pt")
        written = None
    else:
        writer = _hashing_writer(r.out(target))
        dcp.save(state, storage_writer=writer)
        buf = io.BytesIO()
        torch.save(rng_state(), buf)
        rng = buf.getvalue()
        r.write(f"{target}/rng-rank{rank}.pt", rng)
        written = {**writer.fs.written, f"rng-rank{rank}.pt": {
            "bytes": len(rng), "sha256": hashlib.sha256(rng).hexdigest()}}
    _barrier()
    # Locally each rank hashes a share of the files; on an object store each rank hashed what
    # it wrote. Rank 0 writes the marker (and renames, locally).
    sizes = r.files(target) if r.local or rank == 0 else {}  # remote: rank 0 checks the list
    if written is None:
        mine = {name: {"bytes": sizes[name], "sha256": r.sha256(f"{target}/{name}")}
                for i, name in enumerate(sorted(sizes)) if i % world == rank}
    else:
        mine = written
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
        for name, size in sizes.items():  # what the store holds is what the ranks wrote
            entry = manifest["files"].get(name)
            if entry is None:  # not written through DCP's streams: hash what is stored
                manifest["files"][name] = {"bytes": size, "sha256": r.sha256(f"{target}/{name}")}
            elif entry["bytes"] != size:
                raise OSError(f"{r.out(target)}/{name} holds {size} bytes, {entry['bytes']} "
                              "were written")
        missing = set(manifest["files"]) - set(sizes)
        if missing:
            raise OSError(f"{r.out(target)} lacks {sorted(missing)} after every rank wrote")
        if r.local:
            marker = Path(target) / MARKER
            with open(marker.with_suffix(".part"), "w") as f:
                json.dump(manifest, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(marker.with_suffix(".part"), marker)
            if Path(final).exists():
                shutil.rmtree(final)
            os.replace(target, final)
        else:
            r.write(f"{final}/{MARKER}", json.dumps(manifest, indent=1).encode())
        if keep_last:
            prune(root, keep_last)
    _barrier()
    return r.out(final)


def _step_dirs(r: _Root) -> list[tuple[int, str, bool]]:
    """(step, path, has a marker) of every step-N directory, newest first."""
    found = []
    for name, path in r.dirs():
        m = _NAME.match(name)
        if m:
            found.append((int(m.group(1)), path, r.is_file(f"{path}/{MARKER}")))
    return sorted(found, reverse=True)


def complete_steps(root: Where) -> list[tuple[int, Where]]:
    """Checkpoint directories that carry a marker, newest first (contents not yet verified)."""
    r = _Root(root)
    return [(step, r.out(path)) for step, path, marked in _step_dirs(r) if marked]


def verify(path: Where, share: tuple[int, int] = (0, 1)) -> str | None:
    """None when the checkpoint's files (this rank's share of them) match the marker;
    otherwise the reason it is not usable."""
    r = _Root(path)
    try:
        manifest = json.loads(r.read(r.join(MARKER)))
    except (OSError, ValueError) as e:
        return f"unreadable marker ({e})"
    rank, world = share
    sizes = r.files(r.path)
    for i, (name, want) in enumerate(sorted(manifest.get("files", {}).items())):
        if name not in sizes:
            return f"{name} is missing"
        if sizes[name] != want["bytes"]:
            return f"{name} has {sizes[name]} bytes, expected {want['bytes']}"
        if i % world == rank and r.sha256(r.join(name)) != want["sha256"]:
            return f"{name} does not match its checksum"
    return None


def find_latest(root: Where, world_verify: bool = True, max_step: int | None = None) -> Found | None:
    """The newest checkpoint that is complete and intact (collective when distributed: every
    rank checks a share of the files and they agree), at or before `max_step` when given (the
    last step the store holds: resuming past it would leave steps unrecorded)."""
    skipped: list[tuple[Where, str]] = []
    rank, world = _rank(), _world()
    r = _Root(root)
    listed = _step_dirs(r) if rank == 0 or not dist.is_initialized() else None
    if dist.is_initialized():  # one listing for all ranks: they must walk the same list
        box = [listed]
        dist.broadcast_object_list(box, src=0)
        listed = box[0]
    for step, where, marked in listed or []:
        path = r.out(where)
        if not marked:
            skipped.append((path, f"no {MARKER}: a save that did not finish"))
            continue
        if max_step is not None and step > max_step:
            skipped.append((path, f"past the last recorded step {max_step}"))
            continue
        reason = verify(path, (rank, world) if world_verify else (0, 1))
        if dist.is_initialized():
            reasons: list[str | None] = [None] * world
            dist.all_gather_object(reasons, reason)
            reason = next((x for x in reasons if x), None)
        if reason is None:
            return Found(step, path, skipped)
        skipped.append((path, reason))
    if skipped:
        return Found(-1, Path(), skipped)
    return None


def load(path: Where, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Collective: load model, optimiser and extra state in place; returns `extra`."""
    r = _Root(path)
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optim": optim_sd}
    manifest = json.loads(r.read(r.join(MARKER)))
    if r.local:
        dcp.load(state, checkpoint_id=r.path)
    else:
        from torch.distributed.checkpoint._fsspec_filesystem import FsspecReader

        dcp.load(state, storage_reader=FsspecReader(r.out(r.path)))
    set_state_dict(model, optimizer, model_state_dict=state["model"],
                   optim_state_dict=state["optim"], options=StateDictOptions(strict=True))
    rng_file = r.join(f"rng-rank{_rank()}.pt")
    if r.local and Path(rng_file).is_file():
        set_rng_state(torch.load(rng_file, weights_only=True))
    elif not r.local and r.is_file(rng_file):
        set_rng_state(torch.load(io.BytesIO(r.read(rng_file)), weights_only=True))
    return dict(manifest.get("extra", {}))


def prune(root: Where, keep_last: int) -> None:
    """Keep the newest `keep_last` complete checkpoints; remove older ones and stale partial
    saves (a .tmp locally, a step-N/ without a marker on an object store) older than the newest
    complete one. The newest complete checkpoint is never removed."""
    r = _Root(root)
    listed = _step_dirs(r)
    complete = [(step, path) for step, path, marked in listed if marked]
    for _, path in complete[max(1, keep_last):]:
        r.rmtree(path, first=MARKER)
    newest = complete[0][0] if complete else None
    if newest is None:
        return
    if r.local:
        for p in Path(r.path).glob("step-*.tmp"):
            m = _TMP.match(p.name)
            if m and int(m.group(1)) < newest:
                shutil.rmtree(p, ignore_errors=True)
    else:
        for step, path, marked in listed:
            if not marked and step < newest:
                r.rmtree(path, first=MARKER)
