"""Each warning once per process, in every place logs go (the console and a job's log file)."""

from __future__ import annotations

import io
import logging
import sys

from ecopipe.logs import OncePerProcess, logs_above_progress, warn_once


def test_a_repeated_warning_reaches_every_handler_once_and_errors_always(monkeypatch):
    once = OncePerProcess()
    logger = logging.getLogger("ecopipe.test_logs")
    monkeypatch.setattr(logger, "propagate", False)
    screens = [io.StringIO(), io.StringIO()]  # the console and the job's log file
    handlers = [logging.StreamHandler(screen) for screen in screens]
    for handler in handlers:
        handler.addFilter(once)
    monkeypatch.setattr(logger, "handlers", handlers)
    for _ in range(3):
        logger.warning("CPU energy is an ESTIMATE")
        logger.error("job refused")
    logger.warning("another warning")
    for screen in screens:
        assert screen.getvalue().splitlines() == [
            "CPU energy is an ESTIMATE",
            "job refused",
            "job refused",
            "job refused",
            "another warning",
        ]


def test_above_a_progress_line_a_warning_is_still_said_once(monkeypatch):
    screen = io.StringIO()
    monkeypatch.setattr(sys, "stderr", screen)
    root = logging.getLogger()
    console = logging.StreamHandler(sys.stderr)
    monkeypatch.setattr(root, "handlers", [console])
    warn_once()  # as the job and the sweep do
    with logs_above_progress():
        assert root.handlers[0] is not console  # tqdm's stand-in, which writes around live lines
        for _ in range(3):
            logging.getLogger("ecopipe.test_logs.above").warning("GPU missing from the table")
    assert root.handlers == [console]
    assert screen.getvalue().count("GPU missing from the table") == 1
