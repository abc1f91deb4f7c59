"""The logger setup (orchestrator/infra/logs.py): --log-level, the stderr handler, a run's log
file with who wrote each line; the CLI's --log-level."""

import logging

import pytest

from orchestrator.infra import logs
from planners.errors import BadInput


@pytest.fixture(autouse=True)
def _restore():
    yield
    logs.configure(logs.DEFAULT_LEVEL)


def test_level_names_and_bad_level():
    assert logs.parse_level("INFO") == logging.INFO
    assert logs.parse_level(None) == logging.WARNING
    with pytest.raises(BadInput, match="--log-level 'loud' is not one of debug, info, warning"):
        logs.parse_level("loud")


def test_stderr_handler_follows_the_level(capsys):
    log = logging.getLogger("orchestrator.run.somewhere")
    logs.configure("warning")
    log.info("quiet")
    log.warning("shown")
    logs.configure("info")  # replaces the handler: one line per message, not two
    log.info("now shown")
    err = capsys.readouterr().err
    assert "quiet" not in err
    assert err.splitlines() == ["warning: shown", "info: now shown"]
    assert logs.level_name() == "info"


def test_run_log_keeps_info_with_who_and_logger(tmp_path, capsys):
    logs.configure("warning")
    log = logging.getLogger("orchestrator.run.driver")
    with logs.run_log(tmp_path, "driver") as path:
        log.info("run started")
        log.debug("not kept at warning")
        log.error("training failed: boom", extra=logs.FILE_ONLY)
    with logs.run_log(tmp_path, "rank 1", "debug"):  # a worker appends to the same file
        logging.getLogger("orchestrator.run.worker").debug("step 1")
    log.info("after the run: not in the file")
    assert path == tmp_path / "run.log"
    lines = path.read_text().splitlines()
    assert len(lines) == 3
    assert lines[0].endswith("INFO [driver] orchestrator.run.driver: run started")
    assert lines[1].endswith("ERROR [driver] orchestrator.run.driver: training failed: boom")
    assert lines[2].endswith("DEBUG [rank 1] orchestrator.run.worker: step 1")
    assert capsys.readouterr().err == ""  # info below the stderr level; FILE_ONLY kept off it
    assert all(not isinstance(h, logs._RunFile) for h in logging.getLogger("orchestrator").handlers)


def test_cli_log_level(tmp_path, monkeypatch, capsys):
    import cli

    monkeypatch.setenv("TALLY_HOME", str(tmp_path))
    assert cli.main(["--log-level", "loud", "runs"]) == 2
    assert capsys.readouterr().err.strip() == \
        "error: --log-level 'loud' is not one of debug, info, warning, error"
    assert cli.main(["--log-level", "debug", "runs", "--json"]) == 0
    assert logs.level_name() == "debug"


def test_a_workers_exception_lands_in_the_run_log_with_its_rank(tmp_path, monkeypatch):
    import ray.train

    from orchestrator.run import worker

    class Context:
        def get_world_rank(self):
            return 3

    def boom(config):
        logging.getLogger("orchestrator.run.worker").info("rank 3 of 4 on host")
        raise RuntimeError("CUDA error: an illegal memory access")

    monkeypatch.setattr(ray.train, "get_context", lambda: Context())
    monkeypatch.setattr(worker, "_train_loop", boom)
    with pytest.raises(RuntimeError):
        worker.train_loop({"run_dir": str(tmp_path), "log_level": "warning"})
    text = (tmp_path / "run.log").read_text()
    assert "INFO [rank 3] orchestrator.run.worker: rank 3 of 4 on host" in text
    assert "ERROR [rank 3] orchestrator.run.worker: rank 3 failed" in text
    assert "Traceback" in text and "RuntimeError: CUDA error: an illegal memory access" in text
