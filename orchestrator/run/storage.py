"""Where a run's checkpoints go: a local path, `file://`, `s3://` or `gs://` (`--storage`).

    --storage            checkpoints of run R              local files of run R (pid files,
                                                           codecarbon output, Ray's own state)
    (none)               $TALLY_HOME/runs/R/checkpoints    $TALLY_HOME/runs/R
    /nfs/tally           /nfs/tally/R/checkpoints          /nfs/tally/R
    file:///nfs/tally    /nfs/tally/R/checkpoints          /nfs/tally/R
    s3://bucket/prefix   s3://bucket/prefix/R/checkpoints  $TALLY_HOME/runs/R
    gs://bucket/prefix   gs://bucket/prefix/R/checkpoints  $TALLY_HOME/runs/R

Object stores are reached through fsspec (s3fs, gcsfs) with their standard configuration:
credentials, region and an S3-compatible endpoint from the environment (`AWS_ENDPOINT_URL`,
`AWS_ACCESS_KEY_ID`, ...). The driver forwards those variables to the Ray Train workers
(`worker_env`); on a cluster they can also be set on the nodes themselves (instance roles).
Ray's own run state stays on local disk: the checkpoints are ours (checkpoint.py), not Ray's.

`Location` reads and writes one such place (listing, whole-file reads and writes, hashing,
removal) for checkpoint.py: pathlib and os on a local disk, the fsspec filesystem otherwise.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Union
from urllib.parse import urlparse

from planners.errors import BadInput, RunFailed

SCHEMES = {"s3": "s3fs", "gs": "gcsfs"}  # object stores and the fsspec package each needs
# what an object store client reads from the environment; forwarded to the Ray Train workers
ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
       "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_CA_BUNDLE",
       "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "STORAGE_EMULATOR_HOST")
# the part of those that says where the store is, not who may use it: what a job submitted
# through the Jobs API takes along (credentials stay with the cluster's nodes)
LOCATION_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION",
                "GOOGLE_CLOUD_PROJECT", "STORAGE_EMULATOR_HOST")
_URI_TYPO = re.compile(r"^(s3|gs|gcs|file|https?|az|abfs|hdfs):", re.IGNORECASE)
Where = Union[Path, str]  # a local Path, or a URI string (s3://bucket/prefix/step-00000100)
ACCEPTED = "a local path, file:///PATH, s3://BUCKET[/PREFIX] or gs://BUCKET[/PREFIX]"


@dataclass(frozen=True)
class Storage:
    uri: str  # an absolute local path, or scheme://bucket[/prefix] without a trailing slash
    local: bool

    @property
    def scheme(self) -> str:
        return "file" if self.local else self.uri.split("://", 1)[0]

    def join(self, *parts: str) -> str:
        return "/".join([self.uri.rstrip("/"), *parts])

    def check(self) -> "Storage":
        """Can we write here? BadInput naming the storage when not (no bucket, no access)."""
        if self.local:
            try:
                Path(self.uri).mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise BadInput(f"--storage {self.uri!r} cannot be created ({e.strerror}); "
                               f"give a writable directory or {ACCEPTED}") from None
            return self
        import fsspec

        fs, root = fsspec.core.url_to_fs(self.uri)
        probe = f"{root}/.tally-probe-{uuid.uuid4().hex[:8]}"
        try:
            fs.pipe_file(probe, b"")
            fs.rm_file(probe)
        except (FileNotFoundError, PermissionError) as e:
            bucket = root.split("/", 1)[0]
            what = "does not exist" if isinstance(e, FileNotFoundError) else "refuses access"
            raise BadInput(f"--storage {self.uri!r}: bucket {bucket!r} {what} at "
                           f"{_endpoint(self.scheme)} ({e}); create it or check the "
                           "credentials in the environment") from None
        except Exception as e:  # network, DNS, credentials missing ...
            raise RunFailed(f"--storage {self.uri!r} cannot be reached at "
                            f"{_endpoint(self.scheme)}: {type(e).__name__}: {e}") from None
        return self


def parse(storage: str | os.PathLike) -> Storage:
    """`--storage` as given -> Storage (no I/O). BadInput on anything else than ACCEPTED."""
    text = str(storage).strip()
    if not text:
        raise BadInput(f"--storage is empty; give {ACCEPTED}")
    if "://" not in text:
        if _URI_TYPO.match(text):  # s3:bucket, s3:/bucket: would be a local folder "s3:"
            raise BadInput(f"--storage {text!r} looks like a URI without '//'; give {ACCEPTED}")
        return Storage(str(Path(text).expanduser().absolute()), True)
    url = urlparse(text)
    scheme = url.scheme.lower()
    if scheme == "file":
        if url.netloc not in ("", "localhost") or not url.path.startswith("/"):
            raise BadInput(f"--storage {text!r}: a file URI names an absolute local path, "
                           "file:///PATH")
        return Storage(str(Path(url.path)), True)
    if scheme not in SCHEMES:
        raise BadInput(f"--storage {text!r}: scheme {scheme + '://'!r} is not supported; give "
                       f"{ACCEPTED}")
    if not url.netloc or url.params or url.query or url.fragment:
        raise BadInput(f"--storage {text!r} must name a bucket and an optional prefix, "
                       f"{scheme}://BUCKET[/PREFIX]")
    package = SCHEMES[scheme]
    try:
        __import__(package)
    except ImportError:
        raise BadInput(f"--storage {text!r} needs the {package} package, which is not installed "
                       f"(pip install {package} matching fsspec's version)") from None
    prefix = "/".join(p for p in url.path.split("/") if p)
    return Storage(f"{scheme}://{url.netloc}" + (f"/{prefix}" if prefix else ""), False)


def resolve(storage: str | None, home) -> Storage:
    """`--storage`, or the default $TALLY_HOME/runs."""
    return parse(storage) if storage else Storage(str(Path(home.runs).absolute()), True)


@dataclass(frozen=True)
class RunLocation:
    storage_path: str  # the run's place in the storage: what the store records
    checkpoints: str  # the checkpoint root the workers read and write
    local_dir: Path  # this run's local files: pid files, codecarbon, logs
    ray_storage: str  # RunConfig(storage_path=...): Ray's own state, always a local directory
    worker_env: dict[str, str]  # the object store's settings, for the Ray Train workers


def run_location(storage: Storage, home, run_id: str) -> RunLocation:
    local = Path(storage.join(run_id)) if storage.local else Path(home.runs).absolute() / run_id
    return RunLocation(storage_path=storage.join(run_id),
                       checkpoints=storage.join(run_id, "checkpoints"), local_dir=local,
                       ray_storage=storage.uri if storage.local else str(local.parent),
                       worker_env=worker_env(storage))


def worker_env(storage: Storage) -> dict[str, str]:
    """The object store settings of the driver's environment, for the Ray Train workers: the
    workers of a local Ray started before these were set, and a cluster's nodes, do not have
    the driver's environment. Empty for local storage."""
    if storage.local:
        return {}
    return {k: os.environ[k] for k in ENV if os.environ.get(k)}


def location_env(storage: Storage) -> dict[str, str]:
    """For a job submitted to a cluster's head: where the object store is (an S3-compatible
    endpoint, the region), as set here; never credentials. Empty for local storage."""
    return {k: v for k, v in worker_env(storage).items() if k in LOCATION_ENV}


def _endpoint(scheme: str) -> str:
    if scheme == "s3":
        return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") \
            or "the AWS default endpoint"
    return os.environ.get("STORAGE_EMULATOR_HOST") or "the default endpoint"


# -- reading and writing a location: a local directory or a place in a bucket -------------
class Location:
    """A checkpoint location: the local filesystem (Path semantics, atomic renames) or an
    fsspec object store (paths inside it, no renames)."""

    def __init__(self, where: Where):
        text = str(where)
        self.fs = None
        self.local = "://" not in text
        if not self.local:
            from fsspec.core import url_to_fs
            from fsspec.implementations.local import LocalFileSystem

            fs, path = url_to_fs(text)
            if isinstance(fs, LocalFileSystem):  # file:///...
                self.local, text = True, path
            else:
                self.fs, self.path = fs, path.rstrip("/")
        if self.local:
            self.path = str(Path(text))

    def join(self, *parts: str) -> str:
        return "/".join([self.path, *parts]) if not self.local else str(Path(self.path, *parts))

    def out(self, path: str) -> Where:
        """How a location is handed back: a Path when local, a URI otherwise."""
        return Path(path) if self.local else self.fs.unstrip_protocol(path)

    def fresh(self, path: str) -> None:
        """Forget cached listings: other ranks and processes write here too."""
        if self.fs is not None:
            self.fs.invalidate_cache(path)

    def dirs(self) -> list[tuple[str, str]]:
        """(name, path) of every entry directly under the root."""
        if self.local:
            root = Path(self.path)
            return [(p.name, str(p)) for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
        self.fresh(self.path)
        try:
            entries = self.fs.ls(self.path, detail=True)
        except FileNotFoundError:
            return []
        return [(e["name"].rstrip("/").rsplit("/", 1)[-1], e["name"].rstrip("/"))
                for e in entries if e.get("type") == "directory"]

    def files(self, path: str) -> dict[str, int]:
        """name -> size in bytes of the files directly in `path`."""
        if self.local:
            d = Path(path)
            if not d.is_dir():
                return {}
            return {p.name: p.stat().st_size for p in d.iterdir() if p.is_file()}
        self.fresh(path)
        try:
            entries = self.fs.ls(path, detail=True)
        except FileNotFoundError:
            return {}
        return {e["name"].rsplit("/", 1)[-1]: int(e["size"]) for e in entries
                if e.get("type") == "file"}

    def is_file(self, path: str) -> bool:
        if self.local:
            return Path(path).is_file()
        self.fresh(path)
        return self.fs.isfile(path)

    def read(self, path: str) -> bytes:
        if self.local:
            return Path(path).read_bytes()
        return self.fs.cat_file(path)

    def write(self, path: str, data: bytes) -> None:
        if self.local:
            Path(path).write_bytes(data)
        else:
            self.fs.pipe_file(path, data)  # one PUT

    def sha256(self, path: str) -> str:
        if self.local:
            return sha256_file(Path(path))
        h = hashlib.sha256()
        with self.fs.open(path, "rb", block_size=1 << 22) as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        return h.hexdigest()

    def rmtree(self, path: str, first: str | None = None) -> None:
        """Remove a directory; on an object store the file `first` (a completion marker) goes
        first, so a delete cut short never leaves a marker over missing files."""
        if self.local:
            shutil.rmtree(path, ignore_errors=True)
            return
        if first:
            try:
                self.fs.rm_file(f"{path}/{first}")
            except FileNotFoundError:
                pass
        self.fresh(path)
        try:
            self.fs.rm(path, recursive=True)
        except FileNotFoundError:
            pass
        self.fresh(self.path)


def basename(path: Where) -> str:
    """The last part of a local Path or a URI (step-00000100)."""
    return str(path).rstrip("/").rsplit("/", 1)[-1]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
