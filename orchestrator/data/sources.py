"""Where text comes from: source specs, the files behind them, and documents read as a stream.

    parse_source("code=src/**/*.py:2")  -> Source(name, pattern, weight)
    plan_units(sources, text_field)     -> [Unit]: the pieces of work, the same on any machine
    iter_documents(unit, text_field)    -> (text, utf-8 bytes) one document at a time

A source is a file, a directory (every file under it), a glob, or the same on an object store
(`s3://bucket/prefix/*.jsonl.zst`, `gs://...`, anything fsspec opens). Files are plain text (one
document each; one over 8 MiB is cut at line breaks into documents of about 8 MiB), JSONL (one
document per line, in `text_field`) or Parquet (the `text_field` column), optionally compressed
with gzip, bzip2, xz or zstandard. An uncompressed file over 64 MiB is read as several units of
about 64 MiB (cut at line breaks), a Parquet file as groups of row groups of about that size, so
that one large file still keeps every core busy; a compressed file is one unit.
"""

from __future__ import annotations

import bz2
import glob
import gzip
import io
import json
import lzma
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator

from planners.errors import BadInput

# LLaMA Table 1: sampling proportion (%) by source (Touvron et al. 2023).
LLAMA_MIXTURE = {"commoncrawl": 67.0, "c4": 15.0, "github": 4.5, "wikipedia": 4.5,
                 "books": 4.5, "arxiv": 2.5, "stackexchange": 2.0}
_MIXTURE_ALIASES = {"cc": "commoncrawl", "common_crawl": "commoncrawl", "code": "github",
                    "wiki": "wikipedia", "book": "books", "stack_exchange": "stackexchange",
                    "se": "stackexchange"}
MIXTURES = {"llama": LLAMA_MIXTURE}

UNIT_BYTES = 64 << 20  # a unit of work: about 64 MiB of (uncompressed) input
MAX_DOC_BYTES = 8 << 20  # a plain-text file larger than this is cut into documents this size
_COMPRESSED = (".gz", ".bz2", ".xz", ".lzma", ".zst", ".zstd")
_JSONL = (".jsonl", ".ndjson")
_PARQUET = (".parquet", ".pq")


@dataclass
class Source:
    name: str
    pattern: str
    weight: float | None = None
    files: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Unit:
    """Part of one file: bytes [start, end) of its (uncompressed) stream for text and JSONL,
    row groups [start, end) for Parquet; end -1 is the end of the file."""
    source: int
    path: str
    kind: str  # "text" | "jsonl" | "parquet"
    start: int = 0
    end: int = -1
    whole_file: bool = True


def _parse_weight(text: str, spec: str) -> float:
    try:
        w = float(text)
    except ValueError:
        raise BadInput(f"source {spec!r}: weight {text!r} is not a number; "
                       "give NAME=PATH_OR_GLOB[:WEIGHT] with a weight > 0") from None
    if not math.isfinite(w) or w <= 0:
        raise BadInput(f"source {spec!r}: weight {text} must be a finite number > 0")
    return w


def parse_source(spec: str) -> Source:
    """`name=PATH_OR_GLOB[:weight]`; a trailing `:x` is a weight when it parses as a number."""
    name, eq, rest = str(spec).partition("=")
    name = name.strip()
    if not eq or not name or not rest:
        raise BadInput(f"source {spec!r} is not NAME=PATH_OR_GLOB[:WEIGHT] "
                       "(e.g. code=src/**/*.py:2 or wiki=wiki.jsonl.gz)")
    pattern, weight = rest, None
    head, colon, tail = rest.rpartition(":")
    if colon and head and "/" not in tail:
        try:
            float(tail)
            is_number = True
        except ValueError:
            is_number = tail.strip().lstrip("+-").replace(".", "").isdigit()
        if is_number or tail.strip().startswith("-"):
            pattern, weight = head, _parse_weight(tail, spec)
    return Source(name=name, pattern=pattern, weight=weight)


def apply_mixture(sources: list[Source], mixture: str | None) -> dict:
    """Fill in weights: explicit `:w` wins, then the named mixture by source name, else 1."""
    table = None
    if mixture:
        table = MIXTURES.get(mixture.strip().lower())
        if table is None:
            raise BadInput(f"unknown mixture {mixture!r}; known: {', '.join(MIXTURES)}")
    for s in sources:
        if s.weight is not None:
            continue
        if table is None:
            s.weight = 1.0
            continue
        key = _MIXTURE_ALIASES.get(s.name.lower(), s.name.lower())
        if key not in table:
            raise BadInput(f"source {s.name!r} is not in the {mixture} mixture; name it one of "
                           f"{', '.join(table)} or give it a weight (NAME=PATH:WEIGHT)")
        s.weight = table[key]
    return table or {}


def is_uri(path: str) -> bool:
    return "://" in str(path) and not str(path).startswith("file://")


def _fs(pattern: str):
    import fsspec

    try:
        return fsspec.core.url_to_fs(pattern)
    except (ImportError, ValueError) as e:
        raise BadInput(f"{pattern}: cannot open this kind of address ({e})") from None


def resolve_files(src: Source) -> list[str]:
    """The files of a source, sorted: a file, every file under a directory, or a glob's matches;
    local paths or URIs alike."""
    if is_uri(src.pattern):
        fs, path = _fs(src.pattern)
        try:
            if fs.isdir(path):
                found = fs.find(path)
            elif fs.isfile(path):
                found = [path]
            else:
                found = [p for p in fs.glob(path) if fs.isfile(p)]
        except (OSError, PermissionError) as e:
            raise BadInput(f"source {src.name!r}: {src.pattern} cannot be listed ({e})") from None
        files = sorted(fs.unstrip_protocol(p) for p in found
                       if not Path(p).name.startswith("."))
    else:
        p = Path(src.pattern).expanduser()
        if p.is_dir():
            found = [f for f in p.rglob("*") if f.is_file() and not f.name.startswith(".")]
        elif p.is_file():
            found = [p]
        else:
            found = [Path(f) for f in glob.glob(str(p), recursive=True) if Path(f).is_file()]
        files = sorted(str(f) for f in found)
    if not files:
        raise BadInput(f"source {src.name!r}: no file matches {src.pattern!r}; "
                       "give an existing file, directory or glob")
    return files


def _split_name(path: str) -> tuple[str, str]:
    """-> (kind, compression suffix or '')."""
    name = str(path).lower()
    comp = next((c for c in _COMPRESSED if name.endswith(c)), "")
    stem = name[: -len(comp)] if comp else name
    kind = "jsonl" if stem.endswith(_JSONL) else "parquet" if stem.endswith(_PARQUET) else "text"
    return kind, comp


def _size(path: str) -> int:
    try:
        if is_uri(path):
            fs, p = _fs(path)
            return int(fs.size(p))
        return Path(path).stat().st_size
    except OSError as e:
        raise BadInput(f"{path}: cannot be read ({e})") from None


def plan_units(sources: list[Source], text_field: str, unit_bytes: int | None = None) -> list[Unit]:
    """Every source's files cut into units, in source then file order; depends on the files
    alone, never on how many processes will read them."""
    units, unit_bytes = [], unit_bytes or UNIT_BYTES
    for k, src in enumerate(sources):
        for path in src.files:
            kind, comp = _split_name(path)
            if kind == "parquet":
                units.extend(_parquet_units(k, path, text_field, unit_bytes))
                continue
            size = 0 if comp else _size(path)
            if comp or size <= unit_bytes:
                units.append(Unit(k, path, kind))
                continue
            n = math.ceil(size / unit_bytes)
            for i in range(n):
                units.append(Unit(k, path, kind, i * size // n, (i + 1) * size // n, False))
    return units


def _parquet_file(path: str):
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(open_raw(path))
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError, ...
        raise BadInput(f"{path}: not a readable Parquet file ({str(e).splitlines()[0]})") from None


def _parquet_units(k: int, path: str, text_field: str, unit_bytes: int) -> list[Unit]:
    import pyarrow as pa

    pf = _parquet_file(path)
    schema = pf.schema_arrow
    if text_field not in schema.names:
        raise BadInput(f"{path}: no column {text_field!r} (it has "
                       f"{', '.join(schema.names) or 'none'}); name the text column "
                       "with --text-field")
    typ = schema.field(text_field).type
    if not (pa.types.is_string(typ) or pa.types.is_large_string(typ)):
        raise BadInput(f"{path}: column {text_field!r} holds {typ}, not text; name the text "
                       "column with --text-field")
    meta, units, start, size = pf.metadata, [], 0, 0
    for g in range(meta.num_row_groups):
        size += meta.row_group(g).total_byte_size
        if size >= unit_bytes or g == meta.num_row_groups - 1:
            units.append(Unit(k, path, "parquet", start, g + 1, meta.num_row_groups == g + 1
                              and start == 0))
            start, size = g + 1, 0
    return units or [Unit(k, path, "parquet", 0, 0)]


# --- reading ---------------------------------------------------------------------------------

def open_raw(path: str) -> IO[bytes]:
    try:
        if is_uri(path):
            import fsspec

            return fsspec.open(path, "rb").open()
        return open(path, "rb")
    except (OSError, ImportError, ValueError) as e:
        raise BadInput(f"{path}: cannot be read ({e})") from None


def _decompress(raw: IO[bytes], comp: str) -> IO[bytes]:
    if comp == ".gz":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if comp == ".bz2":
        return bz2.BZ2File(raw, "rb")
    if comp in (".xz", ".lzma"):
        return lzma.LZMAFile(raw, "rb")
    if comp in (".zst", ".zstd"):
        return io.BufferedReader(_ZstdReader(raw), 1 << 20)
    return raw


class _ZstdReader(io.RawIOBase):
    """Zstandard frames one after another, like `zstd -d`; a stream that ends inside a frame
    is an error (zstandard's stream_reader would end quietly, hiding a truncated file)."""

    def __init__(self, raw: IO[bytes]):
        import zstandard

        self.raw, self.zstd = raw, zstandard
        self.dctx = zstandard.ZstdDecompressor()
        self.obj, self.fed, self.buf, self.at = self.dctx.decompressobj(), False, b"", 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while self.at == len(self.buf):
            chunk = self.raw.read(1 << 20)
            if not chunk:
                if self.fed and not self.obj.eof:
                    raise self.zstd.ZstdError("the stream ends inside a frame (truncated)")
                return 0
            out = []
            while chunk:
                if self.obj.eof:  # the next frame
                    self.obj, self.fed = self.dctx.decompressobj(), False
                self.fed = True
                out.append(self.obj.decompress(chunk))
                chunk = self.obj.unused_data if self.obj.eof else b""
            self.buf, self.at = memoryview(b"".join(out)), 0
        n = min(len(b), len(self.buf) - self.at)
        b[:n] = self.buf[self.at:self.at + n]
        self.at += n
        return n


def _stream_errors() -> tuple:
    errors = [OSError, EOFError, zlib.error, lzma.LZMAError]
    try:
        import zstandard

        errors.append(zstandard.ZstdError)
    except ImportError:
        pass
    return tuple(errors)


def _lines(unit: Unit) -> Iterator[tuple[int, bytes]]:
    """(offset in the uncompressed stream, line with its newline) for the lines that start in
    [unit.start, unit.end); a corrupt stream is BadInput naming where it broke."""
    _, comp = _split_name(unit.path)
    raw = open_raw(unit.path)
    pos = 0
    try:
        with raw, _decompress(raw, comp) as f:
            if unit.start > 0:
                f.seek(unit.start - 1)
                pos = unit.start - 1 + len(f.readline())  # finish the line begun before us
            while unit.end < 0 or pos < unit.end:
                line = f.readline()
                if not line:
                    return
                yield pos, line
                pos += len(line)
    except _stream_errors() as e:
        what = f"{comp[1:]} stream" if comp else "file"
        raise BadInput(f"{unit.path}: the {what} is corrupt or unreadable near byte {pos} of "
                       f"its contents ({e}); give an intact file") from None


def _decode(unit: Unit, blob: bytes, offset: int) -> str:
    try:
        return blob.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadInput(f"{unit.path}: bytes at offset {offset + e.start} are not valid UTF-8 "
                       f"({blob[e.start:e.start + 4]!r}); give UTF-8 text") from None


def iter_documents(unit: Unit, text_field: str = "text") -> Iterator[str]:
    """The unit's non-empty documents, in file order.
    Undecodable UTF-8 is refused with its byte offset (in the decompressed stream)."""
    if unit.kind == "parquet":
        yield from _parquet_documents(unit, text_field)
    elif unit.kind == "jsonl":
        for lineno, (pos, line) in enumerate(_lines(unit), 1):
            if not line.strip():
                continue
            text = _decode(unit, line, pos)
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                where = f"line {lineno}" if unit.start == 0 else f"the line at byte {pos}"
                raise BadInput(f"{unit.path}: {where} is not JSON ({e.msg}); "
                               "a .jsonl source needs one JSON object per line") from None
            value = obj.get(text_field) if isinstance(obj, dict) else None
            if not isinstance(value, str):
                where = f"line {lineno}" if unit.start == 0 else f"the line at byte {pos}"
                raise BadInput(f"{unit.path}: {where} has no string field {text_field!r}; "
                               "name the field with --text-field")
            if value.strip():
                yield value
    else:
        buf: list[bytes] = []
        size, first = 0, 0
        for pos, line in _lines(unit):
            if not buf:
                first = pos
            buf.append(line)
            size += len(line)
            if size >= MAX_DOC_BYTES:
                text = _decode(unit, b"".join(buf), first)
                if text.strip():
                    yield text
                buf, size = [], 0
        if buf:
            text = _decode(unit, b"".join(buf), first)
            if text.strip():
                yield text


def _parquet_documents(unit: Unit, text_field: str) -> Iterator[str]:
    pf = _parquet_file(unit.path)
    groups = list(range(unit.start, unit.end if unit.end >= 0 else pf.metadata.num_row_groups))
    if not groups:
        return
    try:
        for batch in pf.iter_batches(batch_size=4096, row_groups=groups, columns=[text_field]):
            for value in batch.column(0).to_pylist():
                if value and value.strip():  # nulls and blank rows are no document
                    yield value
    except OSError as e:
        raise BadInput(f"{unit.path}: Parquet data is corrupt ({e}); give an intact file") from None
