"""Stop signals as an exception, so that a stopped job cleans up and says why it stopped.

SIGTERM (what SLURM, Kubernetes and `kill` send) and SIGINT (Ctrl-C) raise `Stopped` in the main
thread: every `finally` and context manager on the way out runs, so the sampler process is stopped,
temporary folders are removed and the MLflow run is ended KILLED with the signal named. The process
then ends by the same signal, so its exit status (143, 130, or -15 / -2 to a Python parent) says a
signal stopped it.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(BaseException):
    """A stop signal arrived; raised where the main thread was. Not an Exception, so that no
    `except Exception` (a sweep's failure isolation, Hydra's job runner) swallows it."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.signal_name = signal.Signals(signum).name
        super().__init__(f"stopped by {self.signal_name}")


def _raise_stopped(signum: int, frame: object) -> None:
    raise Stopped(signum)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within this block, SIGTERM and SIGINT raise Stopped (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _raise_stopped) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def exit_by(stop: Stopped) -> NoReturn:
    """End this process by the signal that stopped it, as if it had not been caught."""
    signal.signal(stop.signum, signal.SIG_DFL)
    os.kill(os.getpid(), stop.signum)
    raise SystemExit(128 + stop.signum)  # only if the signal is blocked: the shell's convention
