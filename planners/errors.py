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
