"""A job's progress line on stderr: its phase, the elapsed time and, once a trial has run, an ETA.

Each phase is also logged as it starts (`phase: ...`), so that the log and a terminal without the
live line (CI, SLURM, a redirected `make run`) name what runs before every long step: no silence of
more than the step itself.

Nothing is drawn inside a measured window (the idle baseline, the trials): the line changes only
between them, so the terminal's work never lands in a window's energy. While the model loads (metered
as `load_energy_j`, but not an inference window) and warms up, the line is redrawn once a second, so
a minute-long load, random initialisation or warm-up shows its elapsed time, not a frozen screen.
tqdm turns the line off where stderr is not a terminal (CI, SLURM logs, a redirected `make run`).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tqdm import tqdm

from ecopipe.logs import logs_above_progress

log = logging.getLogger(__name__)
FORMAT = "{desc}: phase {n_fmt} of {total_fmt} [{elapsed}{postfix}]"
TICK_S = 1.0
LOADING = "loading model and data"


class JobProgress:
    """Phases: load (and fit), idle baseline, then one per trial; `arms` measured beside each trial
    (a selection job's strategies and members) make a trial's round longer, and the ETA says so."""

    def __init__(
        self,
        trials: int,
        min_window_s: float,
        clock: Callable[[], float] = time.monotonic,
        adaptive: bool = False,  # trials may stop before `trials` once the CI target is met
    ) -> None:
        self.trials, self.min_window_s, self.clock = trials, min_window_s, clock
        self.adaptive = adaptive
        self.arms = 0  # known once the workload has loaded
        self.rounds_s: list[float] = []
        self.round_started: float | None = None
        # initial=1: the count names the phase under way (1 of N while loading), not the ones done.
        # mininterval=0: a handful of phases, each drawn when it starts, however fast the last one was.
        self.bar = tqdm(total=2 + trials, initial=1, desc=LOADING, leave=False,
                        file=sys.stderr, disable=None, bar_format=FORMAT, mininterval=0)  # fmt: skip
        log.info("phase: %s", LOADING)

    @contextmanager
    def ticking(self) -> Iterator[None]:
        """Redraw once a second (the elapsed time moves) while a long, unmeasured step runs."""
        if self.bar.disable:
            yield
            return
        stop = threading.Event()

        def tick() -> None:
            while not stop.wait(TICK_S):
                self.bar.refresh()

        thread = threading.Thread(target=tick, name="ecopipe-progress", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def describe(self, description: str) -> None:
        """A step within the current phase."""
        log.info("phase: %s", description)
        self.bar.set_description_str(description)

    def next_phase(self, description: str, postfix: str = "") -> None:
        log.info("phase: %s%s", description, f" ({postfix})" if postfix else "")
        self.bar.set_description_str(description, refresh=False)
        self.bar.set_postfix_str(postfix, refresh=False)
        self.bar.update()  # redraws

    def eta(self, done: int) -> str:
        """Time left for the trials not yet run: measured rounds' mean, or before the first round the
        least it can take (every window lasts at least monitor.min_window_s)."""
        left = self.trials - done
        if not self.rounds_s:
            return f"at least {left * (1 + self.arms) * self.min_window_s:.0f} s of trials left"
        return f"about {left * sum(self.rounds_s) / len(self.rounds_s):.0f} s left"

    def trial(self, index: int) -> None:
        """Called before trial `index` (from 0) and its arms start; ends the previous round's timing."""
        now = self.clock()
        if self.round_started is not None:
            self.rounds_s.append(now - self.round_started)
        self.round_started = now
        most = "at most " if self.adaptive else ""
        self.next_phase(f"trial {index + 1} of {most}{self.trials}", self.eta(index))

    def __enter__(self) -> JobProgress:
        # Log lines go above the live line instead of being glued to its end.
        self.logs_above = logs_above_progress()
        self.logs_above.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.logs_above.__exit__(*exc)
        self.bar.close()  # also when a phase fails: the error is not printed over a live line
