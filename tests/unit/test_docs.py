"""The docs cannot go stale: every `$ python cli.py ...` / `$ tally ...` example in README.md and
docs/*.md is run here (in-process, through `cli.main`) and its output compared with what the page
shows, numbers included.

How a page is read (tests/unit/docs_examples.py):
- an example is a code block (fenced, or indented four spaces) with `$ ` command lines; the lines
  after a command, up to the next `$ ` line, are its output (stdout and stderr as a pipe shows
  them: stdout 200 columns wide, stderr at COLUMNS=100, no colour);
- a line that starts with `...` stands for any number of lines (output trimmed on the page);
- whitespace runs count as one space, blank lines are dropped, and the timestamp part of an id
  (`plan-20261123-045000-7020`) matches any other; nothing else is normalised;
- the exit status must be 2 when the shown output has an `error:` line, else 0, or the number a
  following `$ echo $?` shows;
- each page runs in a fresh TALLY_HOME of its own, its examples in order (a page may store a plan
  and then show it), from the repository root.
A block whose commands cannot run here says why in an HTML comment on the line before it:
`<!-- needs-training -->` or `<!-- not-run: REASON -->`; those are listed in SKIPPED below, so
adding one is a visible change. An unmarked block may hold only tally commands and `echo $?`.
`<!-- store: tests/report_data.py -->` before a block runs it against a store holding that
module's three synthetic runs (docs/reports.md).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.unit import docs_examples as dx

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# Every block the test does not run: (page, marker, its first command cut to 60 characters).
# Most need a trained run, a Ray head, an S3 server or input files made by hand.
SKIPPED = {
    ('README.md', 'needs-training', 'python cli.py train tiny --workers 2 --max-steps 30 --plan p'),
    ('README.md', 'needs-training', 'python cli.py runs'),
    ('README.md', 'needs-training', 'python cli.py report carbon'),
    ('README.md', 'not-run', 'python cli.py dashboard'),
    ('cluster.md', 'not-run', 'python cli.py dashboard'),
    ('cluster.md', 'not-run', 'python cli.py dashboard --port 28265 --num-cpus 2'),
    ('data.md', 'not-run', 'python cli.py data prepare github=src/code.jsonl.zst wikiped'),
    ('data.md', 'not-run', 'ls -a $TALLY_HOME/data/ $TALLY_HOME/data/.mix2.work-02370211'),
    ('data.md', 'not-run', 'python cli.py data import nano train.bin --val val.bin --tok'),
    ('data.md', 'not-run', 'python cli.py data import mega books_text_document --tokeniz'),
    ('data.md', 'not-run', 'python cli.py data prepare code=cut.jsonl.zst --name x --tok'),
    ('eval.md', 'needs-training', 'python cli.py eval $W/hf --tasks tests/data/eval/ARC-Easy-Te'),
    ('eval.md', 'needs-training', 'python cli.py eval tiny-20261202-011412-dc08 --tasks $T/scie'),
    ('eval.md', 'needs-training', 'python cli.py train tiny --data bench --max-steps 60 --worke'),
    ('eval.md', 'needs-training', 'python cli.py report run tiny-20261202-011659-f8db --plot ru'),
    ('export.md', 'needs-training', 'python cli.py data prepare json=$STDLIB/json/*.py email=$STD'),
    ('export.md', 'needs-training', 'python check.py'),
    ('export.md', 'needs-training', 'python cli.py train --init-from /tmp/t16/doc/out/tiny-meta -'),
    ('install.md', 'not-run', 'python3 -m venv /tmp/v18'),
    ('install.md', 'not-run', 'tally --version'),
    ('metering.md', 'needs-training', 'python cli.py runs --json'),
    ('metering.md', 'not-run', "curl -s http://127.0.0.1:54371/metrics | grep '^ray_tally_'"),
    ('observability.md', 'needs-training', 'python cli.py --log-level info train tiny --workers 2 --max-'),
    ('observability.md', 'not-run', 'python cli.py train tiny --tracker mlflow          # without'),
    ('observability.md', 'not-run', 'python cli.py dashboard --port 8399 --num-cpus 2'),
    ('observability.md', 'not-run', 'curl -s --get 127.0.0.1:9391/api/v1/query  --data-urlencode '),
    ('plan.md', 'not-run', 'python cli.py plan --model tiny --train-tokens 40960 --gpu c'),
    ('plan.md', 'needs-training', 'python cli.py plan --model tiny --train-tokens 40960 --gpu c'),
    ('scaling.md', 'needs-training', 'python cli.py data prepare --demo'),
    ('scaling.md', 'needs-training', 'python cli.py sweep --budgets 5e10,1e11,1.4e11,2e11 --sizes '),
    ('scaling.md', 'needs-training', 'python cli.py fit demo-sweep --sweep sweep-9f54958636 --hold'),
    ('scaling.md', 'not-run', 'python bench/fit_synthetic.py --budgets 1e13,3e13,1e14,3e14 '),
    ('scheduling.md', 'not-run', 'python tests/data/forecasts/make_week.py /tmp/week_now.csv 2'),
    ('storage.md', 'not-run', 'python -m moto.server -H 127.0.0.1 -p 5055 &'),
    ('storage.md', 'not-run', 'python cli.py train tiny --storage s3:tally-demo/team --max-'),
    ('storage.md', 'not-run', 'python cli.py train tiny --workers 2 --max-steps 4 --tokens '),
    ('storage.md', 'not-run', 'python -c "import s3fs; fs = s3fs.S3FileSystem(); [print(f\'{'),
    ('storage.md', 'not-run', 'python -c "import s3fs; s3fs.S3FileSystem().pipe_file(\'tally'),
    ('train.md', 'needs-training', 'python cli.py train tiny --workers 2 --max-steps 30 --plan p'),
}


def _pages_with_examples():
    return [p for p in PAGES if dx.read_blocks(p.read_text(), p.name)]


@pytest.mark.parametrize("page", _pages_with_examples(), ids=lambda p: p.name)
def test_examples_print_what_the_page_shows(page, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    runner = dx.Runner(tmp_path / "home", monkeypatch)
    failures = []
    for block in dx.read_blocks(page.read_text(), page.name):
        if block.skip:
            continue
        for problem in runner.check_block(block):
            failures.append(problem)
    assert not failures, "\n\n".join(failures)


def test_skipped_examples_are_few_and_named():
    skipped = set()
    ran = 0
    for page in PAGES:
        for block in dx.read_blocks(page.read_text(), page.name):
            if block.skip:
                skipped.add((page.name, block.skip, block.commands[0].text[:60]))
            else:
                ran += sum(1 for c in block.commands if c.is_tally)
    assert skipped == SKIPPED, f"skipped examples changed: {sorted(skipped ^ SKIPPED)}"
    assert ran > len(SKIPPED), f"only {ran} examples run against {len(SKIPPED)} skipped blocks"


def test_a_changed_number_fails(tmp_path, monkeypatch):
    """The check can fail: the first run example of the README with one digit of its output
    changed is reported as a mismatch."""
    monkeypatch.chdir(ROOT)
    blocks = [b for b in dx.read_blocks((ROOT / "README.md").read_text(), "README.md")
              if not b.skip]
    cmd = next(c for b in blocks for c in b.commands if c.is_tally and re.search(r"\d", "".join(c.expected)))
    runner = dx.Runner(tmp_path / "home", monkeypatch)
    assert runner.check(cmd) is None  # as the page shows it: passes
    i = next(i for i, line in enumerate(cmd.expected) if re.search(r"\d", line) and not line.startswith("..."))
    line = cmd.expected[i]
    j = next(k for k, ch in enumerate(line) if ch.isdigit())
    changed = line[:j] + str((int(line[j]) + 1) % 10) + line[j + 1:]
    cmd.expected[i] = changed
    problem = runner.check(cmd)
    assert problem is not None and "does not match" in problem


def test_matching_rules():
    m = dx.matches
    assert m(["a  b", "...", "z"], ["a b", "x", "y", "z"])
    assert m(["...", "y"], ["x", "y"])
    assert not m(["a", "z"], ["a", "x", "z"])
    assert not m(["a"], ["a", "b"])  # nothing left out without a `...` line
    assert m(["plan plan-20261123-045000-7020"], ["plan plan-20261202-001122-ab12"])
    assert not m(["E=1.69"], ["E=1.70"])


def test_the_shipped_run_file_loads():
    """docs/examples/run.toml (docs/train.md) is a valid run file, and every value it sets is in
    the specification it gives (nothing accepted and ignored)."""
    from orchestrator.run.spec import build, coerce, read_run_file

    path = str(ROOT / "docs" / "examples" / "run.toml")
    spec = build(None, path, {})
    values = read_run_file(path)
    assert spec.preset == "tiny" and len(values) >= 10
    for key, value in values.items():
        assert getattr(spec, key) == coerce(key, value, path), key
    # docs/train.md shows the file as it is (its opening comment left out)
    shown = (ROOT / "docs" / "train.md").read_text().split("```toml\n", 1)[1].split("```", 1)[0]
    body = Path(path).read_text().split("\n")
    assert "\n".join(x for x in body if not x.startswith("#")).strip() == shown.strip()


# Pages other work adds to docs/ (linked from the README's concept list before they land).
PENDING: set[str] = set()  # pages a README link may name before they are written


def test_links_between_pages_resolve():
    """Every relative link in README.md and docs/ names a file that exists, and a `#anchor` a
    heading of that page (GitHub's slugs)."""
    bad = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # http:, https:, mailto:
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            rel = str(dest.relative_to(ROOT)) if ROOT in dest.parents else str(dest)
            if rel in PENDING:
                continue
            if not dest.exists():
                bad.append(f"{page.name}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in dx.anchors(dest.read_text()):
                bad.append(f"{page.name}: {target} (no such heading)")
    assert not bad, bad


def test_train_option_groups_are_the_specification():
    """docs/train.md's table of option groups lists every `train` option of the run
    specification, each in its group (orchestrator/run/spec.py)."""
    from orchestrator.run.spec import GROUPS, OPTIONS, flag

    shown = {}
    for line in (ROOT / "docs" / "train.md").read_text().splitlines():
        m = re.match(r"\| `\[(\w+)\]` \| (.*?) \|", line)
        if m:
            shown[m.group(1)] = re.findall(r"`(--[\w-]+)`", m.group(2))
    want = {g: [flag(f.name) for f in OPTIONS if f.metadata["group"] == g] for g in GROUPS}
    assert shown == {g: v for g, v in want.items() if v}


def test_files_the_pages_name_exist():
    """A source, test or bench file a page names by its path (`tests/unit/test_x.py`,
    `orchestrator/run/spec.py`, `bench/results/train.md`) is there."""
    named = re.compile(r"\b(?:tests|bench|orchestrator|planners|reports|model|docs)/"
                       r"[\w/.-]+\.(?:py|md|json|sh|csv|png|toml|yaml)\b")
    missing = sorted({(page.name, path) for page in PAGES for path in named.findall(page.read_text())
                      if not (ROOT / path).exists() and path not in PENDING})
    assert not missing, missing
