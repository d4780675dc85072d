"""The job's progress line: an ETA from the trials measured, a redraw while the model loads, and not
one character written inside a measured window."""

from __future__ import annotations

import io
import sys
import time

from ecopipe.job import run_job
from ecopipe.stages import progress as progress_module
from ecopipe.stages.progress import JobProgress


class Terminal(io.StringIO):
    """stderr as a terminal (so tqdm draws), with the wall-clock time of every write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[float, str]] = []

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.writes.append((time.time(), text))
        return super().write(text)


def on_terminal(monkeypatch) -> Terminal:
    """Called in the test body: pytest's output capture sets sys.stderr again after fixtures run."""
    screen = Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    return screen


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_eta_is_the_least_the_windows_take_then_the_mean_measured_round(monkeypatch):
    terminal = on_terminal(monkeypatch)
    clock = Clock()
    with JobProgress(trials=3, min_window_s=2.0, clock=clock) as progress:
        progress.arms = 4  # a selection job: each round measures the workload and four arms
        assert progress.eta(0) == "at least 30 s of trials left"  # 3 rounds x 5 windows x 2 s
        progress.trial(0)
        clock.now += 12.0
        progress.trial(1)
        assert progress.rounds_s == [12.0]
        last_drawn = terminal.getvalue().split("\r")[-1].rstrip()
        assert last_drawn == "trial 2 of 3: phase 3 of 5 [00:00, about 24 s left]"  # 2 rounds x 12 s
        clock.now += 18.0
        progress.trial(2)
        assert progress.eta(2) == "about 15 s left"  # one round left, at the mean of 12 and 18 s


def test_the_line_is_redrawn_while_a_long_step_runs_and_never_after(monkeypatch):
    terminal = on_terminal(monkeypatch)
    monkeypatch.setattr(progress_module, "TICK_S", 0.01)
    with JobProgress(trials=1, min_window_s=1.0) as progress:
        with progress.ticking():
            before = len(terminal.writes)
            deadline = time.monotonic() + 30
            while len(terminal.writes) < before + 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert len(terminal.writes) >= before + 3
        after = len(terminal.writes)
        time.sleep(0.1)
        assert len(terminal.writes) == after  # the ticking thread has stopped


def test_the_job_draws_its_phases_but_nothing_inside_a_trial_window(monkeypatch, make_cfg, client):
    terminal = on_terminal(monkeypatch)
    outcome = run_job(make_cfg("monitor.trials=3", "monitor.min_window_s=0.3"))
    edges = [
        [m.value for m in sorted(client.get_metric_history(outcome.run_id, key), key=lambda m: m.step)]
        for key in ("trial_start_unix_s", "trial_end_unix_s")
    ]
    windows = list(zip(*edges, strict=True))
    assert len(windows) == 3
    drawn = "".join(text for _, text in terminal.writes)
    for phase in ("loading model and data", "idle baseline", "trial 1 of 3", "trial 3 of 3", "s left"):
        assert phase in drawn
    inside = [(t, text) for t, text in terminal.writes for start, end in windows if start < t < end]
    assert inside == []
