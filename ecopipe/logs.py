"""Each warning once per process: a sweep's jobs share the launching process (the basic launcher), so
the hardware and estimate warnings that hold for every job are said once per sweep, not per job."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm.contrib.logging import logging_redirect_tqdm


class OncePerProcess(logging.Filter):
    """Lets a WARNING through the first time its logger and text are seen; errors always pass.

    One filter serves every handler (console, job log file), so it remembers the first record itself:
    each handler passes that record and drops any later one with the same text.
    """

    def __init__(self) -> None:
        super().__init__()
        self.first: dict[tuple[str, str], logging.LogRecord] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING:
            return True
        return self.first.setdefault((record.name, record.getMessage()), record) is record


_FILTER = OncePerProcess()


def warn_once() -> None:
    """Put the filter on every handler of the root logger (Hydra's console and job-file handlers,
    which it may replace for each job), once per handler."""
    for handler in logging.getLogger().handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)


@contextmanager
def logs_above_progress() -> Iterator[None]:
    """Console log lines written above tqdm's live lines instead of glued to their end; tqdm's stand-in
    console handler keeps the once-per-process filter where the handler it replaces had it."""
    root = logging.getLogger()
    before = list(root.handlers)
    filtered = any(_FILTER in handler.filters for handler in before)
    with logging_redirect_tqdm():
        for handler in root.handlers:
            if filtered and handler not in before:
                handler.addFilter(_FILTER)
        yield
