"""Security checks that need no cluster: every torch.load passes weights_only=True (and a
checkpoint carrying a pickle payload is refused), every YAML load is a safe one.

Covered elsewhere, not repeated: the dashboard refuses requests without (401) or with a wrong
token (403) — tests/test_dashboard.py::test_remote_refused_without_or_with_wrong_token and
test_token_never_printed_or_logged; the token of a real embedded run is searched for in the
store, the run directory, reports and Ray's session logs in test_driver_kill.py."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch

from orchestrator.run import checkpoint as ckpt
from tests.reliability._record import record

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [p for d in ("orchestrator", "model", "planners", "reports", "bench")
           for p in (ROOT / d).rglob("*.py")] + [ROOT / "cli.py"]


def _calls(name: str):
    """(file, call node) for every call of `<something>.name(...)` or `name(...)`."""
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                f = node.func
                called = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
                if called == name:
                    yield path, node


def _kw(node: ast.Call, key: str):
    return next((k.value for k in node.keywords if k.arg == key), None)


def test_every_torch_load_is_weights_only():
    loads = list(_calls("load"))
    torch_loads = [(p, n) for p, n in loads if isinstance(n.func, ast.Attribute)
                   and getattr(n.func.value, "id", None) == "torch"]
    assert torch_loads, "the checkpoint code loads with torch.load"
    bad = [f"{p.relative_to(ROOT)}:{n.lineno}" for p, n in torch_loads
           if not (isinstance(_kw(n, "weights_only"), ast.Constant) and _kw(n, "weights_only").value is True)]
    assert bad == [], bad
    record("security/torch-load", calls=len(torch_loads), without_weights_only=len(bad))


def test_every_yaml_load_is_safe():
    unsafe = []
    for name in ("load", "load_all", "unsafe_load", "full_load"):
        for p, n in _calls(name):
            if not (isinstance(n.func, ast.Attribute) and getattr(n.func.value, "id", None) == "yaml"):
                continue
            loader = _kw(n, "Loader") or (n.args[1] if len(n.args) > 1 else None)
            if name != "load" or not (isinstance(loader, ast.Attribute) and "Safe" in loader.attr):
                unsafe.append(f"{p.relative_to(ROOT)}:{n.lineno}")
    assert unsafe == [], unsafe
    safe = len(list(_calls("safe_load")))
    record("security/yaml", safe_loads=safe, unsafe_loads=len(unsafe))


class _Payload:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/tally-pwned-by-checkpoint",))


def test_a_checkpoint_with_a_pickle_payload_is_refused(tmp_path):
    marker = Path("/tmp/tally-pwned-by-checkpoint")
    marker.unlink(missing_ok=True)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.AdamW(model.parameters())
    path = ckpt.save(tmp_path, 1, model, opt, {"step": 1})
    rng = path / "rng-rank0.pt"
    torch.save({"cpu": _Payload()}, rng)  # a tampered file, its manifest entry made to match
    manifest = json.loads((path / ckpt.MARKER).read_text())
    manifest["files"][rng.name] = {"bytes": rng.stat().st_size, "sha256": ckpt._sha256(rng)}
    (path / ckpt.MARKER).write_text(json.dumps(manifest))
    assert ckpt.find_latest(tmp_path).step == 1  # intact as far as checksums go
    with pytest.raises(Exception, match="[Ww]eights only load failed|Unsupported global"):
        ckpt.load(path, model, opt)
    assert not marker.exists()  # the payload never ran
    record("security/pickle-checkpoint", refused=True, payload_ran=False)
