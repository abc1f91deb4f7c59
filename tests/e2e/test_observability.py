"""Observability with the real parts: a Ray head started by `dashboard` (tally's Grafana
dashboard beside Ray's), a real Prometheus (Debian's package; .ci/run installs it) scraping it
through Ray's service-discovery file, and one real run on it that keeps its run log (driver and
every rank) and writes TensorBoard event files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import select

from orchestrator.store import Step, Store
from orchestrator.store.home import Home

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read().decode())


def _wait(what: str, ok, timeout_s: float = 60.0):  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = ok()
            if value:
                return value
        except (OSError, ValueError):  # not there yet, or half written
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def observed_head(tmp_path, train_home):
    """`dashboard` (metrics reported every second), then Prometheus on its discovery file."""
    if shutil.which("prometheus") is None:
        pytest.skip("no prometheus binary (.ci/run installs Debian's `prometheus` package)")
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.pop("TALLY_DB", None)
    env["RAY_metrics_report_interval_ms"] = "1000"  # workers' metrics to the agent every 1 s
    cli = [sys.executable, "cli.py", "--home", str(home)]
    up = subprocess.run([*cli, "dashboard", "--port", str(_free_port()), "--num-cpus", "2",
                         "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert up.returncode == 0, up.stderr
    info = json.loads(up.stdout)
    prom = None
    try:
        discovery = Path(info["session_dir"]) / "prom_metrics_service_discovery.json"
        _wait("Ray's service-discovery file", lambda: discovery.exists() and
              json.loads(discovery.read_text())[0]["targets"])
        port = _free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                          "scrape_configs:\n- job_name: ray\n  file_sd_configs:\n"
                          f"  - files: ['{discovery}']\n    refresh_interval: 1s\n")
        prom = subprocess.Popen(["prometheus", f"--config.file={config}",
                                 f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                 f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        _wait("Prometheus scraping Ray", lambda: any(
            t["health"] == "up" for t in _get(f"{url}/api/v1/targets")["data"]["activeTargets"]))
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=info["token_path"])
        yield {"home": home, "info": info, "prometheus": url, "cli": cli, "env": env,
               "data": str(Path(train_home) / "data" / "demo")}
    finally:
        if prom is not None:
            prom.terminate()
            prom.wait(timeout=30)
        subprocess.run([*cli, "dashboard", "--stop"], cwd=ROOT, env=env, capture_output=True,
                       timeout=120)


def _samples(prometheus: str, selector: str) -> list[dict]:
    """Every sample of `selector` in the last 10 minutes (a finished worker's gauges leave
    Ray's endpoint, so an instant query after the run would find them stale)."""
    q = urllib.parse.quote(f"{selector}[10m]")
    return _get(f"{prometheus}/api/v1/query?query={q}")["data"]["result"]


@pytest.mark.slow
def test_prometheus_scrapes_a_real_run_with_its_log_and_tracker(observed_head):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    h = observed_head
    info = h["info"]
    # tally's dashboard went in beside Ray's own, in the folder Ray's Grafana provider reads
    board = Path(info["grafana_dashboard"])
    assert board.parent == Path(info["session_dir"]) / "metrics" / "grafana" / "dashboards"
    assert json.loads(board.read_text())["uid"] == "tally-training"
    assert (board.parent / "default_grafana_dashboard.json").exists()

    res = subprocess.run([*h["cli"], "train", "tiny", "--address", info["gcs_address"],
                          "--workers", "2", "--max-steps", "4", "--batch-tokens", "1024",
                          "--micro-batch", "2", "--checkpoint-every", "4", "--meter-interval",
                          "0.5", "--data", h["data"], "--no-dashboard", "--tracker",
                          "tensorboard", "--json"],
                         cwd=ROOT, env=h["env"], capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    run = json.loads(res.stdout)
    assert run["status"] == "completed" and run["steps"] == 4
    store = Store(Home(h["home"]).db_url)
    with store.read() as s:
        stored = [r.loss for r in s.scalars(select(Step).where(Step.run_id == run["id"])
                                             .order_by(Step.step))]
    store.close()
    assert len(stored) == 4

    # Prometheus, through Ray's discovery file: the run's loss and energy as tally exports them
    time.sleep(3)  # the last report (1 s) and scrape (1 s)
    loss = _samples(h["prometheus"], f'ray_tally_train_loss{{run="{run["id"]}"}}')
    energy = _samples(h["prometheus"], f'ray_tally_energy_joules_total{{run="{run["id"]}"}}')
    assert loss and energy, (loss, energy)
    scraped = [float(v) for series in loss for _, v in series["values"]]
    assert all(min(abs(v - s) for s in stored) < 1e-6 for v in scraped), (scraped, stored)
    joules = sum(max(float(v) for _, v in series["values"]) for series in energy)
    assert 0 < joules <= run["energy_joules"] * 1.000001, (joules, run["energy_joules"])
    assert {s["metric"]["node"] for s in energy} and {s["metric"]["device"] for s in energy}
    # every panel of tally's Grafana dashboard has data for the run on this real Prometheus
    board_json = json.loads(board.read_text())
    now = time.time()
    for panel in board_json["panels"]:
        for target in panel["targets"]:
            q = urllib.parse.urlencode({"query": target["expr"].replace("$run", run["id"]),
                                        "start": now - 600, "end": now, "step": 2})
            result = _get(f"{h['prometheus']}/api/v1/query_range?{q}")["data"]["result"]
            assert result, (panel["title"], target["expr"])

    # the run's log: the driver and both ranks, each line saying who wrote it
    log = (Path(h["home"]) / "runs" / run["id"] / "run.log").read_text()
    assert f"[driver] orchestrator.run.runtime: run {run['id']}: tiny on 2 cpu worker(s)" in log
    for rank in (0, 1):
        assert f"[rank {rank}] orchestrator.run.worker: rank {rank} of 2 on" in log, log
        assert f"[rank {rank}] orchestrator.run.worker: rank {rank} done at step 4" in log, log
    assert f"[driver] orchestrator.run.runtime: run {run['id']} ended completed" in log, log

    # the tracker, fed by the same recorder: every step's loss, and the energy
    acc = EventAccumulator(str(Path(h["home"]) / "runs" / run["id"] / "tensorboard"))
    acc.Reload()
    tb = {e.step: e.value for e in acc.Scalars("train/loss")}
    assert sorted(tb) == [1, 2, 3, 4]
    assert [tb[k] for k in sorted(tb)] == pytest.approx(stored, rel=1e-5)
    assert acc.Scalars("energy/it_kwh")[-1].value > 0

    # a failed run (its one worker killed, no restarts allowed): the error line names its log,
    # which has the driver's account of the failure
    proc = subprocess.Popen([*h["cli"], "train", "tiny", "--address", info["gcs_address"],
                             "--max-steps", "200", "--batch-tokens", "1024", "--micro-batch",
                             "2", "--max-failures", "0", "--no-meter", "--data", h["data"],
                             "--no-dashboard"], cwd=ROOT, env=h["env"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    runs = Path(h["home"]) / "runs"
    pid_file = _wait("the new run's worker", lambda: next(
        (p for p in runs.glob("*/workers/rank0.pid") if run["id"] not in str(p)
         and p.read_text().strip()), None), 240)
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    failed_log = pid_file.parents[1] / "run.log"
    assert proc.returncode == 1, err[-3000:]
    assert f"failed: run {pid_file.parents[1].name} failed: " in err
    assert err.rstrip().splitlines()[-1].count(f"log: {failed_log}") == 1, err[-3000:]
    assert "ERROR [driver] orchestrator.run.runtime: training failed:" in failed_log.read_text()
