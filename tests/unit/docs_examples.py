"""Reading the `$ ` examples out of a markdown page and running them (tests/unit/test_docs.py)."""

from __future__ import annotations

import io
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

MARK = re.compile(r"^\s*<!--\s*(needs-training|not-run)\b[^>]*-->\s*$")
FILL = re.compile(r"^\s*<!--\s*store: tests/report_data\.py\s*-->\s*$")
FENCE = re.compile(r"^\s*```")
PREFIXES = (("python", "cli.py"), ("tally",))
SHELL = {"|", "||", "&&", ";", ">", ">>", "<", "&", "2>&1"}
ID_TIME = re.compile(r"\d{8}-\d{6}-[0-9a-f]{4}")


@dataclass
class Command:
    page: str
    line: int  # 1-based line of the `$ ` in the page
    text: str  # the command after `$ `, continuation lines joined
    expected: list[str] = field(default_factory=list)

    @property
    def words(self) -> list[str]:
        return shlex.split(self.text, comments=True)

    @property
    def is_tally(self) -> bool:
        w = self.words
        return any(w[:len(p)] == list(p) for p in PREFIXES)

    @property
    def is_echo_status(self) -> bool:
        return self.words == ["echo", "$?"]

    def argv(self) -> list[str]:
        w = self.words
        for p in PREFIXES:
            if w[:len(p)] == list(p):
                return w[len(p):]
        raise ValueError(self.text)


@dataclass
class Block:
    page: str
    line: int
    skip: str | None  # the marker's kind when the block is not run
    commands: list[Command]
    fill: bool = False  # run against the store tests/report_data.py fills


def _code_blocks(lines: list[str]):
    """(first line index, body lines dedented, the nearest non-blank line before it)."""
    i, n = 0, len(lines)
    prev = ""
    while i < n:
        line = lines[i]
        if FENCE.match(line):
            j = i + 1
            while j < n and not FENCE.match(lines[j]):
                j += 1
            yield i + 1, lines[i + 1:j], prev
            prev, i = "", j + 1
            continue
        ind = len(line) - len(line.lstrip(" "))
        if line.strip() and ind >= 4 and line.lstrip().startswith("$ "):
            j, body = i, []
            while j < n:
                cur = lines[j]
                if cur.strip() == "":
                    k = j
                    while k < n and lines[k].strip() == "":
                        k += 1
                    if k < n and len(lines[k]) - len(lines[k].lstrip(" ")) >= ind:
                        body += [""] * (k - j)
                        j = k
                        continue
                    break
                if len(cur) - len(cur.lstrip(" ")) < ind:
                    break
                body.append(cur[ind:])
                j += 1
            yield i, body, prev
            prev, i = "", j
            continue
        if line.strip():
            prev = line
        i += 1


def read_blocks(text: str, page: str) -> list[Block]:
    """The blocks of a page that hold `$ ` commands."""
    lines = text.splitlines()
    out = []
    for start, body, prev in _code_blocks(lines):
        cmds: list[Command] = []
        k = 0
        while k < len(body):
            line = body[k]
            if line.startswith("$ "):
                text_, first = line[2:], k
                while text_.endswith("\\") and k + 1 < len(body):
                    k += 1
                    text_ = text_[:-1] + " " + body[k].strip()
                cmds.append(Command(page, start + first + 1, text_.strip()))
            elif cmds:
                cmds[-1].expected.append(line)
            k += 1
        if cmds:
            m = MARK.match(prev)
            out.append(Block(page, start + 1, m.group(1) if m else None, cmds,
                             bool(FILL.match(prev))))
    return out


def normal(lines: list[str]) -> list[str]:
    return [ID_TIME.sub("<id>", " ".join(x.split())) for x in lines if x.strip()]


def matches(expected: list[str], got: list[str]) -> bool:
    """`got` is `expected`, where a line starting with `...` stands for any lines."""
    exp, out = normal(expected), normal(got)
    pieces: list[list[str]] = [[]]
    for line in exp:
        if line.startswith("..."):
            pieces.append([])
        else:
            pieces[-1].append(line)
    if len(pieces) == 1:
        return out == pieces[0]
    first, last = pieces[0], pieces[-1]
    pos, end = len(first), len(out) - len(last)
    if out[:pos] != first or end < pos or out[end:] != last:
        return False
    for piece in pieces[1:-1]:  # in order; the leftmost place of each is as good as any
        at = next((s for s in range(pos, end - len(piece) + 1) if out[s:s + len(piece)] == piece),
                  None)
        if at is None:
            return False
        pos = at + len(piece)
    return True


class Runner:
    """Runs a page's commands in-process, in one TALLY_HOME, from the current directory."""

    def __init__(self, home: Path, monkeypatch):
        self.mp = monkeypatch
        home.mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv("TALLY_HOME", str(home))
        monkeypatch.delenv("TALLY_DB", raising=False)
        monkeypatch.setenv("COLUMNS", "100")
        monkeypatch.setenv("TERM", "dumb")
        monkeypatch.setenv("NO_COLOR", "1")
        self.last_rc: int | None = None
        self.filled = False

    def fill(self) -> None:
        """The three synthetic runs of tests/report_data.py, written once into this home."""
        from orchestrator.store import open_store
        from orchestrator.store.home import Home
        from tests.report_data import fill

        if not self.filled:
            store = open_store(None, Home.resolve())
            try:
                fill(store)
            finally:
                store.close()
            self.filled = True

    def run(self, cmd: Command) -> tuple[int, list[str]]:
        """(exit status, the lines stdout and stderr got, in the order they were written)."""
        import signal

        import cli

        buf = io.StringIO()
        saved = sys.stdout, sys.stderr, signal.getsignal(signal.SIGTERM), cli.PROG
        sys.stdout = sys.stderr = buf
        cli.PROG = "tally" if cmd.words[0] == "tally" else "cli.py"
        try:
            rc = cli.main(cmd.argv())
        finally:  # cli.main makes SIGTERM raise; put everything back
            sys.stdout, sys.stderr, sigterm, cli.PROG = saved
            signal.signal(signal.SIGTERM, sigterm)
        return rc, buf.getvalue().splitlines()

    def check(self, cmd: Command, want_rc: int | None = None) -> str | None:
        """None when the command prints what the page shows; else what differs."""
        rc, got = self.run(cmd)
        self.last_rc = rc
        where = f"{cmd.page}:{cmd.line}: $ {cmd.text}"
        if not matches(cmd.expected, got):
            return (f"{where}\noutput does not match the page.\n--- page:\n"
                    + "\n".join(cmd.expected) + "\n--- now:\n" + "\n".join(got))
        if want_rc is None:
            want_rc = 2 if any(x.lstrip().startswith("error:") for x in cmd.expected) else 0
        if rc != want_rc:
            return f"{where}\nexit status {rc}, the page implies {want_rc}\n" + "\n".join(got)
        return None

    def check_block(self, block: Block) -> list[str]:
        problems = []
        cmds = block.commands
        if block.fill:
            self.fill()
        for i, cmd in enumerate(cmds):
            where = f"{cmd.page}:{cmd.line}: $ {cmd.text}"
            try:
                words = cmd.words
            except ValueError as e:
                problems.append(f"{where}\ncannot be read as a shell command ({e})")
                continue
            if cmd.is_echo_status:
                continue  # checked with the command before it
            if not cmd.is_tally or SHELL & set(words):
                problems.append(f"{where}\nnot a plain tally command: run it, or mark the block "
                                "<!-- not-run: why --> (tests/unit/test_docs.py lists those)")
                continue
            nxt = cmds[i + 1] if i + 1 < len(cmds) else None
            want = None
            if nxt is not None and nxt.is_echo_status:
                want = int(normal(nxt.expected)[0])
            problem = self.check(cmd, want)
            if problem:
                problems.append(problem)
        return problems


def anchors(text: str) -> set[str]:
    """The `#anchor`s of a page's headings as GitHub makes them (outside code blocks)."""
    out, fenced = set(), False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        m = None if fenced else re.match(r"#{1,6}\s+(.*)", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            out.add(slug)
    return out
