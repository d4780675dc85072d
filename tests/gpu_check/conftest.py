"""The GPU proof's (bench/gpu_check.sh) shared test helpers: the repository, and the script as a user runs it.

Its tests need no GPU: the kit's builder is tested against a local folder of wheels, the
independent-counter arithmetic against a recorded trace, the per-trial edges a job logs, and the whole
script rehearsed on the CPU with the simulated GPU sensor.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# What the script sees: no virtualenv on PATH, the interpreter named for the CPU rehearsal.
SCRIPT_ENV = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "HOME": str(Path.home())}


def gpu_check(*args: str, timeout: int = 600, **popen) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "bench/gpu_check.sh", *args],
        cwd=ROOT,
        env=SCRIPT_ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
        **popen,
    )
