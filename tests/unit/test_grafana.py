"""tally's Grafana dashboard (orchestrator/infra/grafana/tally.json): a valid dashboard whose every
query names metrics tally exports (orchestrator/energy/metrics.py), provisioned beside Ray's."""

import json
import re

import pytest
import yaml

from orchestrator.energy.metrics import prometheus_names
from orchestrator.infra import grafana

DASH = json.loads(grafana.DASHBOARD.read_text())
PANEL_TYPES = {"timeseries", "stat", "gauge", "table", "bargauge", "text"}
# PromQL words that are not metric names: aggregations, functions, modifiers
PROMQL = {"sum", "avg", "min", "max", "count", "by", "without", "on", "ignoring", "group_left",
          "group_right", "rate", "irate", "increase", "delta", "deriv", "last_over_time",
          "max_over_time", "avg_over_time", "bool", "and", "or", "unless", "offset", "topk"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: its identifiers, less label matchers,
    grouping labels, functions, keywords and numbers."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    e = re.sub(r"\{[^}]*\}", "", e)  # label matchers
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\[[^\]]*\]", "", e)  # range selectors
    words = re.findall(r"(?<![\w.])([A-Za-z_:][\w:]*)(?![\w:]|\s*\()", e)
    return {w for w in words if w not in PROMQL}


def test_metric_name_parser():
    assert metric_names('sum by (node, device) (ray_tally_power_watts{run=~"$run"})') == \
        {"ray_tally_power_watts"}
    assert metric_names("rate(ray_x_total[5m]) / 3.6e6 + on (run) ray_y") == \
        {"ray_x_total", "ray_y"}


def test_dashboard_is_a_valid_grafana_dashboard():
    for key, typ in (("title", str), ("uid", str), ("schemaVersion", int), ("panels", list),
                     ("templating", dict), ("time", dict), ("tags", list)):
        assert isinstance(DASH.get(key), typ), key
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", DASH["uid"])  # Grafana's uid rule
    variables = {v["name"]: v for v in DASH["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in DASH["panels"]]
    assert len(ids) == len(set(ids))
    cells = set()
    for p in DASH["panels"]:
        assert p["type"] in PANEL_TYPES and p["title"]
        g = p["gridPos"]
        assert {"h", "w", "x", "y"} <= set(g) and 0 <= g["x"] and g["x"] + g["w"] <= 24
        cell = (g["x"], g["y"])
        assert cell not in cells, p["title"]  # no two panels on one spot
        cells.add(cell)
        assert p["datasource"]["uid"] == "${datasource}"
        refs = [t["refId"] for t in p["targets"]]
        assert p["targets"] and len(refs) == len(set(refs))
        for t in p["targets"]:
            assert t["expr"].count("(") == t["expr"].count(")")
            assert re.findall(r"\$(\w+)", t["expr"]) == ["run"] * t["expr"].count("$")
    assert "run" in variables


def test_every_query_names_a_metric_tally_exports_with_its_labels():
    exported = prometheus_names()
    queries = [t["expr"] for p in DASH["panels"] for t in p["targets"]]
    queries += [v["query"]["query"] for v in DASH["templating"]["list"]
                if isinstance(v.get("query"), dict)]
    used = set()
    for q in queries:
        names = metric_names(re.sub(r"label_values\((\w+),\s*\w+\)", r"\1", q))
        assert names and names <= set(exported), (q, names - set(exported))
        used |= names
        for name in names:  # grouping labels are labels of that metric
            for labels in re.findall(r"\bby\s*\(([^)]*)\)", q):
                assert {x.strip() for x in labels.split(",")} <= set(exported[name]), q
    assert used == set(exported)  # and every exported metric has a panel
    titles = " ".join(p["title"].lower() for p in DASH["panels"])
    for word in ("power", "energy", "co2", "loss", "tokens/s", "mfu", "by run", "by node"):
        assert word in titles, word


def test_provision_beside_rays_dashboards(tmp_path, monkeypatch):
    monkeypatch.delenv(grafana.OUTPUT_DIR_ENV, raising=False)
    assert grafana.provision(tmp_path, timeout_s=0) is None  # Ray wrote nothing there (yet)
    folder = tmp_path / "metrics" / "grafana" / "dashboards"
    folder.mkdir(parents=True)
    (folder / grafana.RAY_DEFAULT).write_text("{}")
    path = grafana.provision(tmp_path, timeout_s=0)
    assert path == folder / "tally_grafana_dashboard.json"
    assert json.loads(path.read_text())["uid"] == DASH["uid"]
    assert sorted(p.name for p in folder.iterdir()) == [grafana.RAY_DEFAULT, path.name]


@pytest.mark.parametrize("name", ["ray_cluster.yaml", "ray_cluster.gcp.yaml"])
def test_cluster_files_provision_it_after_ray_starts(name):
    from pathlib import Path

    cfg = yaml.safe_load((Path(__file__).parents[2] / name).read_text())
    cmds = cfg["head_start_ray_commands"]
    start = next(i for i, c in enumerate(cmds) if "ray start --head" in c)
    after = [c for c in cmds[start + 1:] if "orchestrator.infra.grafana" in c]
    assert after and "/tmp/ray/session_latest" in after[0]
