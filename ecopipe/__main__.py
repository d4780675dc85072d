"""`python -m ecopipe`: the Hydra application that runs one job (or, with -m, a sweep of jobs)."""

from __future__ import annotations

import logging
import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from ecopipe.config import CONFIG_DIR, ConfigError, DataMismatchError, register_configs
from ecopipe.job import JobOutcome, record_refusal, run_job
from ecopipe.logs import warn_once
from ecopipe.reference import UnknownRegionError
from ecopipe.stops import Stopped, exit_by, stop_on_signals, stopped_earlier
from ecopipe.sweep import end_stopped_sweep
from ecopipe.tracking.run import recorded

log = logging.getLogger("ecopipe")
register_configs()

USER_ERRORS = (ConfigError, UnknownRegionError)
_cli_pid: int | None = None  # the process `main` runs in; a launcher's worker process runs `app` only


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def app(cfg: DictConfig) -> JobOutcome | None:
    warn_once()
    hydra_cfg = HydraConfig.get()
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    if (stop := stopped_earlier()) is not None:  # a worker whose earlier job was stopped
        log.warning("job not started: this worker process was %s", stop)
        return None
    try:
        return run_job(cfg, resume=in_sweep, overrides=hydra_cfg.overrides.task)
    except Stopped as stop:
        if os.getpid() == _cli_pid:
            raise
        # A launcher's worker: its run is ended KILLED. The worker lives on, so that a pool launcher
        # (joblib) does not see a broken pool and kill the workers whose jobs are still ending theirs.
        log.warning("job %s; its run is ended KILLED", stop)
        return None
    except DataMismatchError as error:
        if in_sweep and cfg.skip_mismatched:  # not a point of this grid
            log.info("skipped: %s", error)
            return None
        return _refuse(cfg, error, in_sweep)
    except USER_ERRORS as error:
        return _refuse(cfg, error, in_sweep)
    except Exception as error:
        if not in_sweep:
            raise
        if not recorded(error):  # it struck before the job's run opened: record it now
            record_refusal(cfg, error)
        # The run is FAILED with the error and keeps whatever was measured; the sweep goes on.
        log.exception("job failed; the sweep goes on")
        return None


def _refuse(cfg: DictConfig, error: Exception, in_sweep: bool) -> None:
    if in_sweep:  # recorded as failed; the sweep goes on
        log.error("job refused: %s (run %s)", error, record_refusal(cfg, error))
        return None
    # Bad input: one paragraph, no traceback, nothing measured was at stake.
    print(f"ecopipe: error: {error}", file=sys.stderr)
    sys.exit(2)


def main() -> None:
    global _cli_pid
    _cli_pid = os.getpid()
    with stop_on_signals():
        try:
            app()
        except Stopped as stop:  # the job's run is already ended KILLED; end the sweep's the same way
            end_stopped_sweep(stop)
            exit_by(stop)


if __name__ == "__main__":
    main()
