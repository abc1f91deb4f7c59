"""`dashboard`: a real local Ray head (one for the whole module, started and stopped through the
CLI as a user would), its token authentication, and remote runs through its Jobs API."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from orchestrator.infra.dashboard import ensure_token, http_status, token_path
from orchestrator.store.home import Home
from orchestrator.run.remote import (DEFAULT_REMOTE_PYTHON, defaults_for, parse_event, run_remote,
                                 submit_and_follow)
from orchestrator.store import Store
from planners.errors import BadInput
from tests.conftest import assert_bad_input

ROOT = Path(__file__).resolve().parents[2]


def cli(home: Path, *args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.pop("TALLY_DB", None)
    return subprocess.run([sys.executable, "cli.py", "--home", str(home), *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """One Ray head for the module, started by `cli.py dashboard`, stopped at the end."""
    home = tmp_path_factory.mktemp("dash") / "home"
    outputs = [cli(home, "dashboard", "--port", str(free_port()), "--num-cpus", "2", "--json")]
    assert outputs[0].returncode == 0, outputs[0].stderr
    info = json.loads(outputs[0].stdout)
    yield {"home": home, "info": info, "outputs": outputs}
    cli(home, "dashboard", "--stop")  # no-op when a test already stopped it


def _token(head) -> str:
    return Path(head["info"]["token_path"]).read_text().strip()


# -- fast: no Ray process ------------------------------------------------------------------------
def test_non_loopback_host_refused(run_cli, home):
    assert_bad_input(run_cli("dashboard", "--host", "0.0.0.0"), "--host 0.0.0.0", "--allow-remote")
    assert_bad_input(run_cli("dashboard", "--host", "10.0.0.5", "--allow-remote", "--no-auth"),
                     "--host 10.0.0.5")
    assert_bad_input(run_cli("dashboard", "--port", "12000"), "worker port range")
    assert not (home / "ray-head.json").exists()


def test_token_file_is_private_even_if_it_existed_world_readable(tmp_path):
    home = Home(tmp_path / "h")
    p = ensure_token(home)
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert stat.S_IMODE(p.parent.stat().st_mode) == 0o700
    token = p.read_text()
    assert len(token) == 64 and int(token, 16) >= 0  # Ray's format: 256 bits in hex
    os.chmod(p, 0o644)  # as `ray get-auth-token --generate` leaves it
    assert ensure_token(home) == p and stat.S_IMODE(p.stat().st_mode) == 0o600
    assert p.read_text() == token  # kept, not replaced


def test_stop_without_a_head_is_a_no_op(run_cli, home):
    r = run_cli("dashboard", "--stop", "--json")
    assert r.code == 0 and r.json()["stopped"] is False


def test_a_dead_clusters_record_is_forgotten_a_live_one_kept(tmp_path, monkeypatch):
    from orchestrator.infra.dashboard import _current_cluster_file, forget_current_cluster

    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    record = _current_cluster_file()
    assert record == tmp_path / "ray" / "ray_current_cluster"
    assert forget_current_cluster() is False  # no record: nothing to do
    record.parent.mkdir()
    with socket.socket() as live:
        live.bind(("127.0.0.1", 0))
        live.listen()
        port = live.getsockname()[1]
        record.write_text(f"127.0.0.1:{port}")
        assert forget_current_cluster() is False and record.exists()  # someone listens: kept
        assert forget_current_cluster("127.0.0.1:1") is False and record.exists()  # not ours
        assert forget_current_cluster(f"10.0.0.9:{port}") is True  # ours (matched by port)
        assert not record.exists()
    record.write_text(f"127.0.0.1:{free_port()}")  # nobody listens there: a dead cluster
    assert forget_current_cluster() is True and not record.exists()
    record.write_text("garbage")
    assert forget_current_cluster() is False and record.exists()


def test_event_lines():
    assert parse_event('@tally {"type": "step", "step": 1}') == {"type": "step", "step": 1}
    assert parse_event("plain line @tally {}") is None
    for bad in ("@tally {nope", '@tally [1, 2]', '@tally {"step": 1}'):
        with pytest.raises(BadInput):
            parse_event(bad)


def test_bad_address_and_unreachable_head(tmp_path):
    (tmp_path / "cli.py").write_text("")
    for address, needle in (("127.0.0.1:8265", "not a Ray dashboard URL"),
                            (f"http://127.0.0.1:{free_port()}", "no Ray dashboard answers")):
        with pytest.raises(BadInput, match=needle):
            submit_and_follow(address, ["x"], token_path=None, working_dir=tmp_path,
                              on_event=print)


def test_train_address_unreachable(run_cli, home):
    assert_bad_input(run_cli("train", "tiny", "--address", f"http://127.0.0.1:{free_port()}"),
                     "no Ray dashboard answers")
    assert_bad_input(run_cli("train", "tiny", "--address", "http://127.0.0.1:1",
                             "--token-path", home / "missing"), "cannot be read")
    assert run_cli("runs", "--json").json() == []


# -- one real head ---------------------------------------------------------------------------
@pytest.mark.slow
def test_dashboard_up_with_token_auth(head):
    info = head["info"]
    assert info["started"] is True and info["auth"] == "token"
    assert info["dashboard_url"].startswith("http://127.0.0.1:")
    tp = Path(info["token_path"])
    assert tp == token_path(Home(head["home"]))
    assert stat.S_IMODE(tp.stat().st_mode) == 0o600
    api = info["dashboard_url"] + "/api/version"
    assert http_status(api) == 401
    assert http_status(api, token="0" * 64) == 403
    assert http_status(api, token=_token(head)) == 200
    # the Jobs API too
    assert http_status(info["dashboard_url"] + "/api/jobs/") == 401


@pytest.mark.slow
def test_dashboard_again_finds_the_running_head(head):
    again = cli(head["home"], "dashboard", "--json")
    head["outputs"].append(again)
    assert again.returncode == 0, again.stderr
    doc = json.loads(again.stdout)
    assert doc["started"] is False and doc["pgid"] == head["info"]["pgid"]
    human = cli(head["home"], "dashboard")
    head["outputs"].append(human)
    assert "already running" in human.stdout and str(doc["token_path"]) in human.stdout
    assert "/metrics" in human.stdout


@pytest.mark.slow
def test_defaults_for_the_head_this_home_started(head, tmp_path):
    h = Home(head["home"])
    assert defaults_for(head["info"]["address"], h) == (head["info"]["token_path"],
                                                         head["info"]["python"])
    assert defaults_for("http://10.1.2.3:8265", h) == (head["info"]["token_path"],
                                                       DEFAULT_REMOTE_PYTHON)
    assert defaults_for("http://10.1.2.3:8265", Home(tmp_path), "/t", "/py") == ("/t", "/py")
    assert defaults_for("http://10.1.2.3:8265", Home(tmp_path)) == (None, DEFAULT_REMOTE_PYTHON)


@pytest.mark.slow
def test_remote_job_events_recorded_in_store(head, tmp_path):
    """The Jobs-API path end to end: a stand-in for `train --events` prints @tally lines;
    they land in the local store; the shipped directory lacks .tally, .venv, data, .git."""
    wd = tmp_path / "checkout"
    wd.mkdir()
    shutil.copy(ROOT / "tests" / "fake_remote_job.py", wd / "fake_remote_job.py")
    for d in (".tally", ".venv", "data", "checkpoints", ".git"):
        (wd / d).mkdir()
        (wd / d / "big.bin").write_bytes(b"x" * 1000)
    (wd / "kept.txt").write_text("kept")
    store = Store(f"sqlite:///{tmp_path / 'tally.db'}")
    store.create_run("tiny", {"remote": True}, run_id="tiny-remote-1")
    seen = []
    result = run_remote(store, "tiny-remote-1", head["info"]["address"], ["train", "tiny", "--events"],
                        token_path=head["info"]["token_path"], working_dir=wd,
                        python=head["info"]["python"], script="fake_remote_job.py",
                        on_event=seen.append)
    assert result["status"] == "SUCCEEDED" and result["job_id"] == "tiny-remote-1"
    assert result["events"] == 7 and result["bad_event_lines"] == 1
    assert [e["type"] for e in seen] == ["submitted", "run", "step", "step", "step",
                                         "checkpoint", "energy", "status"]
    run_ev = seen[1]
    assert run_ev["files"] == ["fake_remote_job.py", "kept.txt"]
    assert run_ev["python"] == head["info"]["python"]
    [summary] = store.run_summaries()
    assert summary["status"] == "completed" and summary["job_id"] == "tiny-remote-1"
    assert summary["ray_address"] == head["info"]["address"]
    assert summary["steps"] == 3 and summary["tokens"] == 1536
    assert summary["final_loss"] == pytest.approx(10.0 / 3)
    assert summary["energy_joules"] == pytest.approx(30.0)
    assert summary["ended_at"] is not None
    from reports.runs import show_run

    shown = show_run(store, "tiny-remote-1")
    assert [c["step"] for c in shown["checkpoints"]] == [3]


@pytest.mark.slow
def test_following_survives_a_dropped_connection(head, tmp_path):
    """The connection to the head drops twice mid-job (every socket reset, new ones refused
    for 3 s): the follower reconnects, the log is replayed, every step is recorded once, and
    the run is never marked failed while its job runs."""
    from tests.tcp_proxy import DroppingProxy

    wd = tmp_path / "checkout"
    wd.mkdir()
    shutil.copy(ROOT / "tests" / "fake_remote_job.py", wd / "fake_remote_job.py")
    port = int(head["info"]["address"].rsplit(":", 1)[1])
    proxy = DroppingProxy(port)
    store = Store(f"sqlite:///{tmp_path / 'tally.db'}")
    store.create_run("tiny", {"remote": True}, run_id="tiny-remote-drop")
    seen, statuses = [], []

    def on_event(ev: dict) -> None:
        seen.append(ev)
        steps = [e for e in seen if e["type"] == "step"]
        statuses.append(store.get_run("tiny-remote-drop").status)
        if ev["type"] == "step" and len(steps) in (3, 7):
            threading.Thread(target=proxy.drop, args=(3.0,)).start()

    try:
        result = run_remote(store, "tiny-remote-drop", f"http://127.0.0.1:{proxy.port}",
                            ["train", "tiny", "--events", "--slow"],
                            token_path=head["info"]["token_path"], working_dir=wd,
                            python=head["info"]["python"], script="fake_remote_job.py",
                            on_event=on_event)
    finally:
        proxy.close()
    assert proxy.drops >= 2
    assert result["status"] == "SUCCEEDED"
    steps = [e["step"] for e in seen if e["type"] == "step"]
    assert steps == list(range(1, 13)), steps  # each once, in order, none lost
    assert "failed" not in statuses
    [summary] = store.run_summaries()
    assert summary["status"] == "completed" and summary["steps"] == 12


@pytest.mark.slow
def test_remote_job_without_final_status_marks_run_failed(head, tmp_path):
    wd = tmp_path / "checkout"
    wd.mkdir()
    (wd / "cli.py").write_text("import sys\nprint('@tally {\"type\": \"run\"}')\nsys.exit(4)\n")
    store = Store(f"sqlite:///{tmp_path / 'tally.db'}")
    store.create_run("tiny", {}, run_id="tiny-remote-2")
    result = run_remote(store, "tiny-remote-2", head["info"]["address"], ["train", "tiny"],
                        token_path=head["info"]["token_path"], working_dir=wd,
                        python=head["info"]["python"])
    assert result["status"] == "FAILED"
    run = store.get_run("tiny-remote-2")
    assert run.status == "failed" and run.message


@pytest.mark.slow
def test_remote_refused_without_or_with_wrong_token(head, tmp_path):
    """In a fresh process: Ray caches the first auth token a process loads (the session's own
    test Ray made one), which would ride along with a request meant to carry none."""
    import subprocess
    import sys

    (tmp_path / "cli.py").write_text("")
    wrong = tmp_path / "wrong_token"
    wrong.write_text("f" * 64)
    address = head["info"]["address"]
    probe = (
        "import sys\n"
        "from orchestrator.run.remote import submit_and_follow\n"
        "from planners.errors import BadInput\n"
        "for tp in (None, sys.argv[3]):\n"
        "    try:\n"
        "        submit_and_follow(sys.argv[1], ['x'], token_path=tp, working_dir=sys.argv[2],\n"
        "                          on_event=print)\n"
        "        print('ACCEPTED')\n"
        "    except BadInput as e:\n"
        "        print('REFUSED', e)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["HOME"] = str(tmp_path)  # no ~/.ray/auth_token to fall back on
    res = subprocess.run([sys.executable, "-c", probe, address, str(tmp_path), str(wrong)],
                         cwd=Path(__file__).resolve().parents[2], env=env,
                         capture_output=True, text=True, timeout=120)
    lines = [line for line in res.stdout.splitlines() if line.startswith(("REFUSED", "ACCEPTED"))]
    assert len(lines) == 2, res.stdout + res.stderr
    assert re.search(r"requires a token \(401\)", lines[0]), lines[0]
    assert re.search(r"refused the token .* \(403\)", lines[1]), lines[1]


@pytest.fixture(scope="module")
def head_data(head):
    """A small real dataset in the head's home (Python's own json/email sources, vocab 2048)."""
    from orchestrator.data import prepare

    stdlib = Path(os.__file__).parent
    prepare([f"json={stdlib}/json/*.py", f"email={stdlib}/email/*.py"], name="demo",
            home=Home(head["home"]).ensure(), vocab_size=2048)
    return (head["home"] / "data" / "demo").resolve()


def _scrape(port: int) -> str:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return r.read().decode()
    except OSError:
        return ""


@pytest.mark.slow
def test_real_tiny_training_job_through_train_address(head, head_data):
    """`train tiny --address http://...` on the head `dashboard` started: the job trains for
    real (Ray Train, metered), its steps, energy and job id land in the LOCAL store, and tally's
    metrics appear on the head's Prometheus endpoint while it runs."""
    info = head["info"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.pop("TALLY_DB", None)
    plan = json.loads(cli(head["home"], "plan", "--model", "tiny", "--train-tokens", "4096",
                          "--json").stdout)
    # a delay policy over a replayed forecast: dirty (500 g) from 00:30, clean from 04:30; the
    # job must wait for the clean window (at most 4 simulated hours, 12 s at 1200x; its clock
    # starts when the job plans, so Ray's start-up in the job eats into the wait) before it trains
    forecast = head["home"].parent / "forecast.csv"
    forecast.write_text("time,zone,g_per_kwh\n" + "".join(
        f"2026-11-20T{h // 2:02d}:{30 * (h % 2):02d}:00Z,DE,{500 if 1 <= h <= 8 else 100}\n"
        for h in range(24)))
    carbon = ["--carbon-aware", "--policy", "delay", "--forecast", str(forecast), "--hours",
              "0.5", "--deadline", "11h", "--sim-start", "2026-11-20T00:30:00Z", "--sim-speed",
              "1200"]
    proc = subprocess.Popen(
        [sys.executable, "cli.py", "--home", str(head["home"]), "train", "tiny", "--address",
         info["address"], "--workers", "1", "--max-steps", "4", "--batch-tokens", "1024",
         "--micro-batch", "2", "--checkpoint-every", "4", "--data", "demo", "--plan",
         plan["id"], *carbon, "--json"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: set[str] = set()
    while proc.poll() is None:  # gauges of a finished worker leave the endpoint: scrape now
        seen |= {line.split("{")[0] for line in _scrape(info["metrics_port"]).splitlines()
                 if line.startswith("ray_tally_")}
        time.sleep(2)
    out, err = proc.communicate(timeout=30)
    head["outputs"].append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    assert proc.returncode == 0, err
    run = json.loads(out)
    assert run["status"] == "completed" and run["job_id"] == run["id"]
    assert run["steps"] == 4 and run["tokens"] == 4 * 1024 and run["final_loss"] > 0
    assert run["energy_joules"] > 0 and run["ray_address"] == info["address"]
    listed = cli(head["home"], "runs", "--json")
    assert [r["id"] for r in json.loads(listed.stdout)] == [run["id"]]
    table = cli(head["home"], "runs")
    assert "job" in table.stdout and run["id"] in table.stdout
    shown = json.loads(cli(head["home"], "runs", "show", run["id"], "--json").stdout)
    assert shown["run"]["job_id"] == run["id"]
    # checkpoints went to this home's runs/ (absolute storage on the head), not the job's copy
    assert shown["run"]["storage_path"].startswith(str(head["home"].resolve() / "runs"))
    assert [c["step"] for c in shown["checkpoints"]] == [4]
    assert Path(shown["checkpoints"][0]["path"]).is_dir()
    assert {"ray_tally_energy_joules_total", "ray_tally_power_watts",
            "ray_tally_train_loss"} <= seen, seen
    # the plan and the carbon policy went with the job: the run links the plan, and the job
    # waited for the clean window before training
    assert run["plan_id"] == plan["id"]
    con = sqlite3.connect(head["home"] / "tally.db")
    try:
        waits = [json.loads(d) for (d,) in con.execute(
            "SELECT details FROM run_events WHERE run_id=? AND kind='wait'", (run["id"],))]
    finally:
        con.close()
    assert len(waits) == 1 and waits[0]["until"].startswith("2026-11-20T04:30"), waits


@pytest.mark.slow
def test_train_address_wrong_token_and_dataset_name(head, run_cli, home, tmp_path):
    """Through `train --address` (in-process CLI, another TALLY_HOME): one line, exit 2, and no
    run left behind."""
    wrong = tmp_path / "wrong_token"
    wrong.write_text("f" * 64)
    address = head["info"]["address"]
    assert_bad_input(run_cli("train", "tiny", "--address", address, "--token-path", wrong),
                     "refused the token", "(403)")
    # (no token at all -> 401 is checked in a fresh process above: this one holds a cached one)
    # not this home's head: a dataset name would not resolve in the job's own TALLY_HOME
    assert_bad_input(run_cli("train", "tiny", "--address", address, "--token-path",
                             head["info"]["token_path"]), "--data 'demo' is not an absolute path")
    assert_bad_input(run_cli("train", "tiny", "--address", address, "--token-path",
                             head["info"]["token_path"], "--data", "/data/x"), "--storage None")
    assert run_cli("runs", "--json").json() == []


@pytest.mark.slow
def test_token_never_printed_or_logged(head):
    token = _token(head)
    for out in head["outputs"]:
        assert token not in out.stdout and token not in out.stderr
    home = head["home"]
    for f in home.rglob("*"):
        if f.is_file() and f != Path(head["info"]["token_path"]):
            assert token not in f.read_text(errors="replace"), f
    session = head["info"].get("session_dir")
    assert session and Path(session).is_dir()
    hits = subprocess.run(["grep", "-rlF", token, session], capture_output=True, text=True)
    assert hits.stdout == "", hits.stdout  # Ray's own logs of this head


@pytest.mark.slow
def test_stop_stops_only_its_head(head):
    import psutil

    pgid = head["info"]["pgid"]
    mine = [p.pid for p in psutil.process_iter() if _pgid(p.pid) == pgid]
    assert mine
    r = cli(head["home"], "dashboard", "--stop", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["stopped"] is True
    time.sleep(0.5)
    assert not [pid for pid in mine if psutil.pid_exists(pid) and _alive(pid)]
    assert not (head["home"] / "ray-head.json").exists()
    assert http_status(head["info"]["dashboard_url"] + "/api/version", _token(head)) == 0
    # `ray start` recorded the head as Ray's "current cluster"; stopping it drops that record
    # (a stale one cost every later training run 12 s, waited on by Ray Train's PG cleaner)
    from orchestrator.infra.dashboard import _current_cluster_file

    record = _current_cluster_file()
    gcs_port = head["info"]["gcs_address"].rpartition(":")[2]
    assert not record.exists() or record.read_text().strip().rpartition(":")[2] != gcs_port
    again = cli(head["home"], "dashboard", "--stop", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["stopped"] is False


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
