"""Stop signals as an exception, so that a stopped job cleans up and says why it stopped.

SIGTERM (what SLURM, Kubernetes and `kill` send) and SIGINT (Ctrl-C) raise `Stopped` in the main
thread: every `finally` and context manager on the way out runs, so the sampler process is stopped,
temporary folders are removed and the MLflow run is ended KILLED with the signal named. The process
then ends by the same signal, so its exit status (143, 130, or -15 / -2 to a Python parent) says a
signal stopped it.

A process stops once: a second signal (Ctrl-C reaches a whole process group, and a sweep also hands
its stop to its workers) does not break the clean-up of the first; `kill -9` still ends it at once.
Before the first stop is raised, the hooks of `before_stopping` run: a sweep's launcher hands the stop
to the jobs in its worker processes there, before its launcher (joblib) kills the workers outright.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NoReturn

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(BaseException):
    """A stop signal arrived; raised where the main thread was. Not an Exception, so that no
    `except Exception` (a sweep's failure isolation, Hydra's job runner) swallows it."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.signal_name = signal.Signals(signum).name
        super().__init__(f"stopped by {self.signal_name}")


_first_stop: Stopped | None = None
_pending = False  # a stop arrived inside `stops_deferred`: raised when the block ends
_deferring = 0
_hooks: list[Callable[[int], None]] = []


def _raise_stopped(signum: int, frame: object) -> None:
    global _first_stop, _pending
    if _first_stop is not None:  # already stopping: let the clean-up of the first stop finish
        log.warning(
            "%s while stopping: ignored (kill -9 ends the process at once)", signal.Signals(signum).name
        )
        return
    _first_stop = Stopped(signum)
    if _deferring:
        _pending = True
        return
    _stop_now()


def _stop_now() -> NoReturn:
    assert _first_stop is not None
    for hook in _hooks:
        try:
            hook(_first_stop.signum)
        except Exception as error:  # the stop itself must go on
            log.warning("while stopping: %s: %s", type(error).__name__, error)
    raise _first_stop


@contextmanager
def stops_deferred() -> Iterator[None]:
    """A stop that arrives within this block is raised when it ends. For tracking-store calls: an
    exception raised in the middle of an SQLite transaction can leave the store locked for every other
    process (two jobs stopped together then could not end their runs)."""
    global _deferring, _pending
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
    if _pending and not _deferring:
        _pending = False
        _stop_now()


def stopped_earlier() -> Stopped | None:
    """The stop this process received, if any (a worker process lives on after its job was stopped)."""
    return _first_stop


def before_stopping(hook: Callable[[int], None]) -> None:
    """Run `hook(signum)` when the first stop signal arrives, before Stopped is raised; a hook's
    error is logged, and the stop goes on."""
    _hooks.append(hook)


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
        if _first_stop is None:  # else later signals stay ignored: a stopped worker lives on, untouched
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def exit_by(stop: Stopped) -> NoReturn:
    """End this process by the signal that stopped it, as if it had not been caught."""
    signal.signal(stop.signum, signal.SIG_DFL)
    os.kill(os.getpid(), stop.signum)
    raise SystemExit(128 + stop.signum)  # only if the signal is blocked: the shell's convention
