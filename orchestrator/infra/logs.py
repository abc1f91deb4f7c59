"""tally's logging: a logger per module (`logging.getLogger(__name__)`), one stderr handler at
the CLI's `--log-level`, and one log file per run in its run directory (`run.log`) that the
driver and every worker append to, each line naming who wrote it (`driver`, `rank 1`).

The run log keeps INFO and above whatever `--log-level` says (DEBUG too when asked), so a
failed run's error line can point at a file that says what happened on every rank.
"""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from planners.errors import BadInput

# the loggers of our top-level packages: every module logger is a child of one of them
PACKAGES = ("cli", "model", "orchestrator", "planners", "reports")
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}
RUN_LOG = "run.log"
DEFAULT_LEVEL = "warning"

_state = {"level": DEFAULT_LEVEL}
# log.error(..., extra=FILE_ONLY): for the run log only (the CLI prints its own line for it)
FILE_ONLY = {"tally_file_only": True}


def parse_level(name: str | None) -> int:
    """'info' -> logging.INFO; BadInput naming the accepted levels."""
    key = (name or DEFAULT_LEVEL).strip().lower()
    if key not in LEVELS:
        raise BadInput(f"--log-level {name!r} is not one of {', '.join(LEVELS)}")
    return LEVELS[key]


class _Stderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is now (a test runner swaps it), as `warning: ...`."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(_LowerLevelFormatter("%(levelname)s: %(message)s"))
        self.addFilter(lambda record: not getattr(record, "tally_file_only", False))

    @property
    def stream(self):  # noqa: ANN201
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # noqa: ANN001 - StreamHandler.__init__ sets it
        pass


class _LowerLevelFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text.replace(record.levelname, record.levelname.lower(), 1)


def configure(level: str | None = None) -> None:
    """The CLI's stderr handler on our package loggers at `level` (default warning);
    called again, it replaces the handler it added before."""
    lvl = parse_level(level)
    _state["level"] = logging.getLevelName(lvl).lower()
    for name in PACKAGES:
        logger = logging.getLogger(name)
        for h in [h for h in logger.handlers if isinstance(h, _Stderr)]:
            logger.removeHandler(h)
        handler = _Stderr()
        handler.setLevel(lvl)
        logger.addHandler(handler)
        _relevel(logger)


def level_name() -> str:
    """The level configure() was given (what the workers of a run are told)."""
    return _state["level"]


def _relevel(logger: logging.Logger) -> None:
    """The logger passes what its most talkative handler wants (the others filter)."""
    levels = [h.level for h in logger.handlers if isinstance(h, (_Stderr, _RunFile))]
    logger.setLevel(min(levels) if levels else logging.NOTSET)


class _RunFile(logging.FileHandler):
    pass


def run_log_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / RUN_LOG


@contextmanager
def run_log(run_dir: str | Path, who: str = "driver", level: str | None = None) -> Iterator[Path]:
    """While inside: our loggers also append to `run_dir/run.log`, each line
    `TIME LEVEL [who] logger: message`, at INFO (or `level` when it is more talkative)."""
    path = run_log_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = _RunFile(path, mode="a", encoding="utf-8")
    handler.setLevel(min(logging.INFO, parse_level(level or _state["level"])))
    handler.setFormatter(logging.Formatter(
        f"%(asctime)s %(levelname)s [{who}] %(name)s: %(message)s"))
    loggers = [logging.getLogger(name) for name in PACKAGES]
    if not any(isinstance(h, _Stderr) for h in loggers[0].handlers):
        configure(_state["level"])  # warnings still reach stderr beside the file
    for logger in loggers:
        logger.addHandler(handler)
        _relevel(logger)
    try:
        yield path
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
            _relevel(logger)
        handler.close()
