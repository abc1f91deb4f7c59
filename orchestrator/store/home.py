"""`$TALLY_HOME` (default `./.tally`): where the database and run artefacts live.

    tally.db            the store (unless --db / TALLY_DB names another SQLAlchemy URL)
    runs/<run-id>/      checkpoints, logs, codecarbon output
    data/               prepared token shards
    tokenizers/         SentencePiece models with their settings
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from planners.errors import BadInput

DEFAULT_HOME = ".tally"


@dataclass(frozen=True)
class Home:
    root: Path

    @classmethod
    def resolve(cls, home: str | os.PathLike | None = None) -> "Home":
        root = Path(home or os.environ.get("TALLY_HOME") or DEFAULT_HOME).expanduser().absolute()
        return cls(root)

    def ensure(self) -> "Home":
        """Create the home if needed; BadInput when it cannot be written."""
        try:
            if self.root.exists() and not self.root.is_dir():
                raise BadInput(f"TALLY_HOME {str(self.root)!r} is a file, not a directory; "
                               "point TALLY_HOME (or --home) at a writable directory")
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BadInput(f"TALLY_HOME {str(self.root)!r} cannot be created ({e.strerror}); "
                           "point TALLY_HOME (or --home) at a writable directory") from None
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise BadInput(f"TALLY_HOME {str(self.root)!r} is not writable; "
                           "point TALLY_HOME (or --home) at a writable directory")
        return self

    @property
    def db_path(self) -> Path:
        return self.root / "tally.db"

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.db_path}"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def tokenizers(self) -> Path:
        return self.root / "tokenizers"

    def run_dir(self, run_id: str) -> Path:
        return self.runs / run_id
