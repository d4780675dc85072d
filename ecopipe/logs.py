"""Each warning once per process: a sweep's jobs share the launching process (the basic launcher), so
the hardware and estimate warnings that hold for every job are said once per sweep, not per job."""

from __future__ import annotations

import logging


class OncePerProcess(logging.Filter):
    """Lets a WARNING through the first time its logger and text are seen; errors always pass."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[str, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING:
            return True
        key = (record.name, record.getMessage())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


_FILTER = OncePerProcess()


def warn_once() -> None:
    """Put the filter on every handler of the root logger (Hydra's console and job-file handlers,
    which it may replace for each job), once per handler."""
    for handler in logging.getLogger().handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)
