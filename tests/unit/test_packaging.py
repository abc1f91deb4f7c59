"""`pip install .` gives a working tally: pyproject.toml declares every third-party module the
code imports, lists every package, and ships the files that are not Python (the migrations'
template). Read from the source tree only: no build, no install (docs/install.md has the
transcript of a real install into a fresh venv)."""

from __future__ import annotations

import ast
import fnmatch
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
OWN = ("cli", "orchestrator", "model", "planners", "reports")  # the design's top-level names
PACKAGE_ROOTS = ("orchestrator", "model", "planners", "reports")
# extras whose modules the shipped code may import (lazily, with a message when missing)
RUNTIME_EXTRAS = ("gcs", "tensorboard", "mlflow")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(req: str) -> str:
    return canonical(re.split(r"[\s\[<>=!~;]", req.strip(), maxsplit=1)[0])


def declared() -> set[str]:
    project = PYPROJECT["project"]
    names = {requirement_name(r) for r in project["dependencies"]}
    for extra in RUNTIME_EXTRAS:
        names |= {requirement_name(r) for r in project["optional-dependencies"][extra]}
    return names


def sources() -> list[Path]:
    return [ROOT / "cli.py"] + [p for d in PACKAGE_ROOTS for p in (ROOT / d).rglob("*.py")]


def imported_top_levels(path: Path) -> set[str]:
    """Top-level module names a file imports (absolute imports only; relative ones are ours)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


def third_party_imports() -> dict[str, list[str]]:
    """module -> the files that import it, for every module neither stdlib nor ours."""
    found: dict[str, list[str]] = {}
    for path in sources():
        for mod in imported_top_levels(path):
            if mod in sys.stdlib_module_names or mod in OWN or mod == "__future__":
                continue
            found.setdefault(mod, []).append(str(path.relative_to(ROOT)))
    return found


def test_every_third_party_import_is_a_declared_dependency():
    dists = packages_distributions()
    deps = declared()
    missing = {}
    for mod, files in sorted(third_party_imports().items()):
        providers = {canonical(d) for d in dists.get(mod, [])}
        if not providers & deps:
            missing[mod] = (sorted(providers) or ["not installed"], files[:3])
    assert not missing, ("imported but not declared in pyproject.toml [project] dependencies "
                         f"(module: (distributions providing it, files)): {missing}")


def test_the_walk_finds_the_known_imports():
    """The import walk sees what the code is known to use (so the test above can fail)."""
    mods = third_party_imports()
    for mod in ("torch", "ray", "typer", "rich", "sqlalchemy", "alembic", "codecarbon", "yaml"):
        assert mod in mods, mod
    assert "os" not in mods and "orchestrator" not in mods


def test_packages_cover_every_package_directory():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    on_disk = {str(p.parent.relative_to(ROOT)).replace("/", ".")
               for d in PACKAGE_ROOTS for p in (ROOT / d).rglob("__init__.py")}
    assert listed == on_disk, {"not listed": sorted(on_disk - listed),
                               "listed, not on disk": sorted(listed - on_disk)}
    assert PYPROJECT["tool"]["setuptools"]["py-modules"] == ["cli"]
    assert PYPROJECT["project"]["scripts"]["tally"] == "cli:run"


def test_files_that_are_not_python_are_package_data():
    """Every file in a package directory that is not a Python module (the migrations' Alembic
    template, any data file) is matched by [tool.setuptools.package-data]."""
    data = PYPROJECT["tool"]["setuptools"].get("package-data", {})
    unshipped = []
    for d in PACKAGE_ROOTS:
        for p in (ROOT / d).rglob("*"):
            if not p.is_file() or p.suffix in (".py", ".pyc") or "__pycache__" in p.parts:
                continue
            rel = p.relative_to(ROOT)
            # a pattern of the file's package or of one above it, relative to that package
            shipped = any(fnmatch.fnmatch(str(rel.relative_to(Path(*rel.parts[:n]))), pat)
                          for n in range(1, len(rel.parts))
                          for pat in data.get(".".join(rel.parts[:n]), []))
            if not shipped:
                unshipped.append(str(rel))
    assert not unshipped, f"not in package-data: {unshipped}"
    migrations = ROOT / "orchestrator" / "store" / "migrations"
    assert (migrations / "script.py.mako").is_file()
    assert sorted((migrations / "versions").glob("0*.py")), "no migration scripts"
    assert "orchestrator.store.migrations.versions" in PYPROJECT["tool"]["setuptools"]["packages"]
