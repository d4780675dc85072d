"""`python -m ecopipe`: the Hydra application that runs one job (or, with -m, a sweep of jobs)."""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from ecopipe.config import CONFIG_DIR, ConfigError, register_configs
from ecopipe.job import JobOutcome, run_job
from ecopipe.reference import UnknownRegionError

log = logging.getLogger("ecopipe")
register_configs()

USER_ERRORS = (ConfigError, UnknownRegionError)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def app(cfg: DictConfig) -> JobOutcome:
    try:
        return run_job(cfg)
    except USER_ERRORS as error:
        # Bad input: one paragraph, no traceback, nothing measured was at stake.
        print(f"ecopipe: error: {error}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
