"""report carbon / cost / run over real SQLite stores filled through the Store's methods."""

from __future__ import annotations

import csv
import dataclasses
from datetime import datetime, timedelta, timezone

import pytest

from orchestrator.store import Store
from planners import footprint as fp
from planners import grid
from reports.reference import llama_reference
from tests.conftest import assert_bad_input
from tests.report_data import cpu_run, estimated_run, fill, gpu_run

# LLaMA Table 15 as printed: model -> (MWh, tCO2eq)
PAPER = {"OPT-175B": (356, 137), "BLOOM-175B": (475, 183), "LLaMA-7B": (36, 14),
         "LLaMA-13B": (59, 23), "LLaMA-33B": (233, 90), "LLaMA-65B": (449, 173)}

# What tests/report_data.py wrote, worked out by hand from its parameters.
GPU_RUN_S = 200 * 5.0
GPU_RUN_J = int(GPU_RUN_S // 10) * 10.0 * 2 * (610 + 620 + 630 + 640 + 95 + 12)
GPU_RUN_MEASURED_J = int(GPU_RUN_S // 10) * 10.0 * 2 * (610 + 620 + 630 + 640 + 95)


@pytest.fixture
def store(home):
    from orchestrator.store.home import Home
    from orchestrator.store import open_store

    s = open_store(None, Home.resolve())
    yield s
    s.close()


@pytest.fixture
def filled(store):
    fill(store)
    return store


def _by_id(doc):
    return {r["id"]: r for r in doc["runs"]}


def test_table_15_reproduced_within_the_papers_rounding():
    rows = llama_reference()
    assert [r["model"] for r in rows] == list(PAPER)
    for r in rows:
        mwh, t = PAPER[r["model"]]
        assert abs(r["energy_mwh"] - mwh) <= 1.5, r
        assert abs(r["tco2eq"] - t) <= 1.0, r
        assert r["paper_energy_mwh"] == mwh and r["paper_tco2eq"] == t
    by = {r["model"]: r for r in rows}
    # per token: LLaMA-65B trained 1.4T tokens; OPT 180B
    assert by["LLaMA-65B"]["tokens"] == 1.4e12 and by["OPT-175B"]["tokens"] == 180e9
    assert by["LLaMA-65B"]["kwh_per_million_tokens"] == pytest.approx(
        by["LLaMA-65B"]["facility_energy_kwh"] / 1.4e6)


def test_empty_database_says_so_plainly(home, run_cli):
    res = run_cli("report", "carbon")
    assert res.code == 0 and "No runs" in res.stdout and "methodology" in res.stdout
    doc = run_cli("report", "carbon", "--json", "--reference", "llama").json()
    assert doc["runs"] == [] and len(doc["reference"]) == 6
    assert doc["totals"]["runs"] == 0
    assert all(v == 0 for k, v in doc["totals"].items()
               if k not in ("kwh_per_million_tokens", "gco2eq_per_million_tokens"))
    assert set(doc) == {"runs", "totals", "reference", "methodology"}
    cost = run_cli("report", "cost", "--json").json()
    assert cost["runs"] == [] and cost["totals"]["cost_usd"] == 0
    assert "No runs" in run_cli("report", "cost").stdout


def test_carbon_rows_from_the_samples_and_totals_equal_their_sum(filled, run_cli):
    doc = run_cli("report", "carbon", "--json").json()
    rows = _by_id(doc)
    assert [r["id"] for r in doc["runs"]] == ["tiny-cpu", "1b-h100", "small-est"]  # by start
    g = rows["1b-h100"]
    assert g["duration_s"] == pytest.approx(GPU_RUN_S)
    assert g["gpu_hours"] == pytest.approx(2 * 4 * GPU_RUN_S / 3600)
    assert g["energy_kwh"] == pytest.approx(GPU_RUN_J / 3.6e6)
    assert g["measured_energy_kwh"] == pytest.approx(GPU_RUN_MEASURED_J / 3.6e6)
    assert g["energy_mwh"] == pytest.approx(GPU_RUN_J / 3.6e6 * 1.1 / 1000)
    assert g["tco2eq"] == pytest.approx(GPU_RUN_J / 3.6e6 * 1.1 * 0.43 / 1000)
    assert g["intensity_source"].endswith("gcp us-central1)")
    assert g["energy_kwh_by_device"]["gpu"] == pytest.approx(
        int(GPU_RUN_S // 10) * 10.0 * 2 * 2500 / 3.6e6)
    # how the energy was obtained: no estimate passes for a measurement
    assert g["energy_method"] == "mixed" and "RAM estimate" in g["energy_sources_detail"]
    assert rows["small-est"]["energy_method"] == "estimated"
    assert rows["small-est"]["measured_energy_kwh"] == 0
    # CPU-only: no GPU-hours, but device-hours (one per worker)
    t = rows["tiny-cpu"]
    assert t["gpu_hours"] == 0 and t["device_hours"] == pytest.approx(2 * 60 / 3600)
    for key in ("duration_s", "gpu_hours", "device_hours", "energy_kwh", "facility_energy_kwh",
                "energy_mwh", "tco2eq", "measured_energy_kwh", "estimated_energy_kwh"):
        assert doc["totals"][key] == pytest.approx(sum(r[key] for r in doc["runs"])), key
    assert doc["totals"]["tokens"] == sum(r["tokens"] for r in doc["runs"])
    assert doc["totals"]["runs"] == 3
    human = run_cli("report", "carbon").stdout
    assert "1b-h100" in human and "total" in human and "methodology" in human
    assert "intensity 0.43 kg CO2eq/kWh" in human and "PUE 1.58" in human


def test_plan_vs_actual_scales_the_plan_to_the_tokens_trained(filled, run_cli):
    p = _by_id(run_cli("report", "carbon", "--json").json())["1b-h100"]["plan"]
    planned_gpu_hours = 8 * 400 * 5.0 / 3600
    planned_mwh = planned_gpu_hours * 700 * 1.1 / 1e6
    assert p["option"] == "given" and p["scale"] == pytest.approx(0.5)
    assert "stopped" in p["note"]
    assert p["predicted_energy_mwh"] == pytest.approx(planned_mwh * 0.5)
    assert p["predicted_tco2eq"] == pytest.approx(planned_mwh * 0.5 * 0.43)
    measured_mwh = GPU_RUN_J / 3.6e6 * 1.1 / 1000
    assert p["ratio_energy_mwh"] == pytest.approx(measured_mwh / (planned_mwh * 0.5))
    assert "plan vs actual" in run_cli("report", "carbon").stdout


def test_plan_vs_actual_compares_only_like_hardware(store, run_cli):
    """A CPU run against a plan that priced A100s: what differs is said, no ratio is printed."""
    gpu_plan = store.add_plan({"preset": "tiny"}, {
        "options": [{"label": "given", "energy_mwh": 1e-6, "tco2eq": 2e-8, "gpu_hours": 1e-3,
                     "tokens": 1000}],
        "assumptions": {"gpu": {"value": "a100-80gb"}, "gpus": {"value": 2048}}})
    cpu_run(store, "on-cpu")
    store.update_run("on-cpu", plan_id=gpu_plan)
    p = run_cli("report", "carbon", "--json").json()["runs"][0]["plan"]
    assert p["comparable"] is False and "ratio_energy_mwh" not in p
    assert "2048 x a100-80gb" in p["differs"] and "CPU" in p["differs"]
    assert "--gpu cpu" in p["note"]
    human = run_cli("report", "carbon").stdout
    assert "not compared" in human


def test_filters(store, run_cli):
    fill(store)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    cpu_run(store, "recent", start=now - timedelta(days=2))
    cpu_run(store, "older", start=now - timedelta(days=10))
    ids = lambda *a: [r["id"] for r in run_cli("report", "carbon", "--json", *a).json()["runs"]]  # noqa: E731
    assert ids("--run", "1b-h100", "--run", "small-est") == ["1b-h100", "small-est"]
    assert ids("--preset", "1b") == ["1b-h100"]
    assert ids("--preset", "llama-7b") == []
    assert ids("--since", "7d") == ["recent"]
    got = ids("--since", "2025-11-20T09:00:00Z")
    assert got[:2] == ["1b-h100", "small-est"] and "tiny-cpu" not in got
    assert ids("--since", "2025-11-20")[:3] == ["tiny-cpu", "1b-h100", "small-est"]


def test_overrides_go_through_the_footprint(filled, run_cli):
    base = _by_id(run_cli("report", "carbon", "--json").json())
    doc = run_cli("report", "carbon", "--json", "--pue", "1.5", "--intensity", "0.1").json()
    for r in doc["runs"]:
        assert r["pue"] == 1.5 and r["intensity_source"] == "--intensity"
        assert r["tco2eq"] == pytest.approx(base[r["id"]]["energy_kwh"] * 1.5 * 0.1 / 1000)
    fra = grid.lookup("FRA")
    doc = run_cli("report", "carbon", "--json", "--region", "FRA").json()
    assert all(r["intensity_kg_per_kwh"] == fra.kg_per_kwh and "FRA" in r["intensity_source"]
               for r in doc["runs"])
    assert_bad_input(run_cli("report", "carbon", "--region", "FRA", "--intensity", "0.1"),
                     "--region")
    assert_bad_input(run_cli("report", "carbon", "--pue", "0.5"), "PUE")
    assert_bad_input(run_cli("report", "carbon", "--region", "atlantis"), "atlantis")


def test_gpu_run_without_samples_is_an_estimate_from_tdp(store, run_cli):
    gpu_run(store, "no-meter", with_plan=False)
    from orchestrator.store import EnergySample
    from sqlalchemy import delete

    with store.write() as s:  # the meter failed: no samples reached the store
        s.execute(delete(EnergySample).where(EnergySample.run_id == "no-meter"))
    store.update_run("no-meter", paused_s=40.0)
    r = run_cli("report", "carbon", "--json").json()["runs"][0]
    assert r["duration_s"] == pytest.approx(GPU_RUN_S - 40) and "paused" in r["duration_basis"]
    assert r["energy_method"] == "estimated" and "TDP 700 W" in r["energy_sources_detail"]
    assert r["energy_kwh"] == pytest.approx(8 * (GPU_RUN_S - 40) / 3600 * 700 / 1000)
    assert r["measured_energy_kwh"] == 0


def test_cost(store, run_cli):
    fill(store)
    gpu_run(store, "h100-catalogue", with_plan=False)
    store.update_run("h100-catalogue", config={**store.get_run("h100-catalogue").config,
                                               "price_usd_per_gpu_hour": None})
    doc = run_cli("report", "cost", "--json").json()
    rows = _by_id(doc)
    gh = 2 * 4 * GPU_RUN_S / 3600
    assert rows["1b-h100"]["cost_usd"] == pytest.approx(gh * 2.5)
    assert "config" in rows["1b-h100"]["price_source"]
    assert rows["h100-catalogue"]["price_usd_per_gpu_hour"] == 2.0
    assert "catalogue" in rows["h100-catalogue"]["price_source"]
    assert rows["tiny-cpu"]["cost_usd"] == 0 and rows["tiny-cpu"]["price_usd_per_gpu_hour"] is None
    assert doc["totals"]["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in doc["runs"]))
    over = _by_id(run_cli("report", "cost", "--json", "--price", "3").json())
    assert over["1b-h100"]["cost_usd"] == pytest.approx(gh * 3) and \
        over["1b-h100"]["price_source"] == "--price"
    human = run_cli("report", "cost").stdout
    assert "price" in human and "1b-h100" in human


def test_run_report_plot_and_terminal_view(filled, run_cli, tmp_path):
    png = tmp_path / "run.png"
    res = run_cli("report", "run", "1b-h100", "--plot", str(png), "--json")
    assert res.code == 0, res.stderr
    doc = res.json()
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    assert doc["plot"] == str(png)
    steps, power = doc["series"]["steps"], doc["series"]["power"]
    assert 150 <= len(steps["step"]) <= 200 and steps["step"][-1] == 200
    assert steps["loss"][0] > steps["loss"][-1]
    # 8 GPUs at 610..640 W, 2 CPUs at 95 W, 2 RAM at 12 W
    assert power["gpu_w"][len(power["gpu_w"]) // 2] == pytest.approx(2 * 2500)
    assert power["total_w"][0] == pytest.approx(2 * 2607)
    human = run_cli("report", "run", "tiny-cpu")
    assert human.code == 0 and "loss" in human.stdout and "▁" in human.stdout
    assert "methodology" in human.stdout
    png2 = tmp_path / "cpu.png"
    assert run_cli("report", "run", "tiny-cpu", "--plot", str(png2)).code == 0
    assert png2.read_bytes()[:4] == b"\x89PNG" and png2.stat().st_size > 20_000


def test_exports(filled, run_cli, tmp_path):
    from codecarbon.output_methods.emissions_data import EmissionsData

    out, em = tmp_path / "carbon.csv", tmp_path / "emissions.csv"
    res = run_cli("report", "carbon", "--csv", str(out), "--emissions-csv", str(em), "--json")
    assert res.code == 0, res.stderr
    doc = _by_id(res.json())
    with open(em, newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == [x.name for x in dataclasses.fields(EmissionsData)]
        em_rows = {r["run_id"]: r for r in reader}
    g = em_rows["1b-h100"]
    assert float(g["energy_consumed"]) == pytest.approx(doc["1b-h100"]["facility_energy_kwh"])
    assert float(g["emissions"]) == pytest.approx(doc["1b-h100"]["tco2eq"] * 1000)
    assert float(g["gpu_energy"]) == pytest.approx(
        doc["1b-h100"]["energy_kwh_by_device"]["gpu"] * 1.1)
    assert g["gpu_count"] == "8" and g["cloud_provider"] == "gcp" and g["pue"] == "1.1"
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == ["tiny-cpu", "1b-h100", "small-est"]
    assert float(rows[1]["tco2eq"]) == pytest.approx(doc["1b-h100"]["tco2eq"])


def test_runs_json_carries_energy_and_tco2eq(filled, run_cli):
    rows = {r["id"]: r for r in run_cli("runs", "--json").json()}
    g = rows["1b-h100"]
    assert g["energy_kwh"] == pytest.approx(GPU_RUN_J / 3.6e6)
    assert g["tco2eq"] == pytest.approx(GPU_RUN_J / 3.6e6 * 1.1 * 0.43 / 1000)
    assert rows["small-est"]["tco2eq"] == pytest.approx(
        fp.footprint(fp.Energy(5 * 20 * 47.5), pue=1.58, intensity_kg_per_kwh=0.381).tco2eq)


def test_bad_input_is_one_line(filled, run_cli, tmp_path):
    assert_bad_input(run_cli("report", "run", "no-such-run"), "no-such-run")
    assert_bad_input(run_cli("report", "carbon", "--run", "no-such-run"), "no-such-run")
    assert_bad_input(run_cli("report", "carbon", "--since", "yesterday"), "yesterday")
    assert_bad_input(run_cli("report", "carbon", "--since", "2026-13-45"), "2026-13-45")
    assert_bad_input(run_cli("report", "run", "1b-h100", "--plot",
                             str(tmp_path / "missing" / "x.png")), "--plot")
    assert_bad_input(run_cli("report", "run", "1b-h100", "--plot", str(tmp_path)), "directory")
    assert_bad_input(run_cli("report", "carbon", "--emissions-csv", "/proc/x.csv"),
                     "--emissions-csv")
    assert_bad_input(run_cli("report", "carbon", "--reference", "gpt3"), "gpt3")
    assert_bad_input(run_cli("report", "carbon", "--preset", "nope"), "nope")
    assert_bad_input(run_cli("report", "cost", "--price", "-1"), "price")


def test_reference_beside_our_runs(filled, run_cli):
    doc = run_cli("report", "carbon", "--reference", "llama", "--json").json()
    assert len(doc["reference"]) == 6 and "reference" in doc["methodology"]
    for r in doc["runs"]:
        assert r["kwh_per_million_tokens"] == pytest.approx(
            r["facility_energy_kwh"] / (r["tokens"] / 1e6))
    human = run_cli("report", "carbon", "--reference", "llama").stdout
    assert "LLaMA-65B" in human and "1b-h100 (1b)" in human and "arXiv 2205.01068" in human


def test_store_only_sees_what_it_was_given(tmp_path):
    """A second store file is independent: the report reads the database it is pointed at."""
    a = Store(f"sqlite:///{tmp_path / 'a.db'}")
    estimated_run(a)
    from reports.carbon import carbon_report

    assert [r["id"] for r in carbon_report(a)["runs"]] == ["small-est"]
    b = Store(f"sqlite:///{tmp_path / 'b.db'}")
    assert carbon_report(b)["runs"] == []


def test_plan_without_chosen_uses_its_first_option_and_running_runs_end_at_their_last_record(
        store, run_cli):
    plan_id = store.add_plan({"preset": "tiny"}, {"options": [
        {"label": "a", "energy_mwh": 1e-6, "tco2eq": 2e-8, "gpu_hours": 0, "tokens": 1000},
        {"label": "b", "energy_mwh": 5.0, "tco2eq": 2.0, "gpu_hours": 9, "tokens": 1000}],
        "assumptions": {"gpu": {"value": "cpu"}, "gpus": {"value": 1}}})
    cpu_run(store, "planned")
    store.update_run("planned", plan_id=plan_id, ended_at=None, status="running")
    r = run_cli("report", "carbon", "--json").json()["runs"][0]
    assert r["plan"]["option"] == "a" and r["plan"]["scale"] == 1.0  # trained more than planned
    assert r["plan"]["ratio_energy_mwh"] == pytest.approx(r["energy_mwh"] / 1e-6)
    # no ended_at yet: the last step (60 s) or energy sample (60 s) ends it
    assert r["duration_s"] == pytest.approx(60.0) and r["duration_basis"] == "started_at..last record"
