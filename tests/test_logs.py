"""Each warning once per process, in every place logs go (the console and a job's log file)."""

from __future__ import annotations

import io
import logging

from ecopipe.logs import OncePerProcess


def test_a_repeated_warning_reaches_every_handler_once_and_errors_always():
    once = OncePerProcess()
    logger = logging.getLogger("ecopipe.test_logs")
    logger.propagate = False
    screens = [io.StringIO(), io.StringIO()]  # the console and the job's log file
    for screen in screens:
        handler = logging.StreamHandler(screen)
        handler.addFilter(once)
        logger.addHandler(handler)
    try:
        for _ in range(3):
            logger.warning("CPU energy is an ESTIMATE")
            logger.error("job refused")
        logger.warning("another warning")
    finally:
        logger.handlers.clear()
    for screen in screens:
        assert screen.getvalue().splitlines() == [
            "CPU energy is an ESTIMATE",
            "job refused",
            "job refused",
            "job refused",
            "another warning",
        ]
