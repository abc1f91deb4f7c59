"""The one error type for bad input.

Anything the user typed or pointed us at that we cannot accept raises `BadInput` with one
sentence naming the bad value and what would be accepted. The CLI turns it into exit code 2 and
that one line on stderr, never a traceback.
"""


class BadInput(ValueError):
    """Bad user input: the message is shown to the user as-is, on one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class RunFailed(RuntimeError):
    """A failure at run time (exit code 1): the message says what failed and where the log is."""


class RunInterrupted(RuntimeError):
    """A run stopped by SIGINT (Ctrl-C) or SIGTERM (kill, Slurm, systemd, Kubernetes): the
    message says where it stopped and how to resume; exit code 128 + the signal (130, 143)."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + int(signum)
