"""Stopping a run the way people and schedulers do: Ctrl-C (SIGINT) or SIGTERM (kill, Slurm,
systemd, Kubernetes).

While the workers train, the first signal asks them to checkpoint at their next step and stop
(the run ends `interrupted`, resumable from that checkpoint); a second signal, or one while no
worker group trains (Ray starting, waiting for a carbon window, a pause), stops at once: the
run is then resumable from its last complete checkpoint. Either way the command says how to
resume and exits 128 + the signal (130, 143).
"""

from __future__ import annotations

import signal
import sys
import threading


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread by a SIGINT or SIGTERM; `signum` says which."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def name(signum: int) -> str:
    return {signal.SIGINT: "Ctrl-C (SIGINT)", signal.SIGTERM: "SIGTERM"}.get(
        signum, signal.Signals(signum).name)


received: int | None = None  # the signal the handler below last turned into Interrupted


def raise_on_sigterm() -> None:
    """SIGTERM raises Interrupted like Ctrl-C does (the CLI's default outside a run), and both
    are remembered in `received`: typer turns a KeyboardInterrupt into a silent exit 130, so the
    CLI reads which signal it was from here."""
    global received
    received = None
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, _raise)


def _raise(signum, frame):  # noqa: ANN001
    global received
    received = signum
    raise Interrupted(signum)


class Stopper:
    """Installed around a run in the driver's main thread (a no-op elsewhere)."""

    def __init__(self, on_first):  # noqa: ANN001 (callable: signum -> None)
        self.on_first = on_first
        self.signum: int | None = None
        self.training = False  # a worker group is up and reads the channel's command
        self.abort = None  # stops the worker group at once (Ray Train's controller abort)
        self._old: dict = {}

    def __enter__(self) -> "Stopper":
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)

    def _handle(self, signum, frame) -> None:  # noqa: ANN001
        first = self.signum is None
        if first:
            self.signum = signum
        if first and self.training:
            try:
                self.on_first(signum)
                print(f"{name(signum)}: the workers checkpoint at their next step and stop "
                      "(send it again to stop now)", file=sys.stderr, flush=True)
                return
            except Exception:  # the channel is gone: stop now
                pass
        if self.training and self.abort is not None:
            try:
                self.abort()
            except Exception:  # the controller is gone already
                pass
        raise Interrupted(self.signum)
