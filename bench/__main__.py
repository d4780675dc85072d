"""`python -m bench` (make bench): run every benchmark, print its table, write bench/results/*.md."""

from __future__ import annotations

import os
import sys

from bench import codecarbon_compare, gpu_efficiency, observer, orchestration, tracking_scale
from bench.common import write_table

SUITE = [
    (
        "observer",
        "Observer effect: throughput with the monitor on and off",
        observer,
        [
            "Throughput: medians of 5 alternating 2-s windows, monitor off and on. The sampler runs in its "
            "own process at low priority, at the default rate (conf/monitor/default.yaml); its share of one "
            "core is the CPU time its threads ran over the window's wall time, median (min-max) of 5 "
            "windows, in 2-s windows (the rate's fast start) and over a default job's sampled span. "
            "Targets: >= 99% of unmonitored throughput; sampler <= 1% of a core."
        ],
    ),
    (
        "orchestration",
        "Orchestration overhead per job (multirun of N tiny jobs)",
        orchestration,
        ["(sweep wall time - imports - measured windows) / N; target < 1 s per job after imports."],
    ),
    (
        "tracking",
        "Tracking and aggregation at scale",
        tracking_scale,
        ["Synthetic job-shaped runs; target: 10,000 runs aggregated in < 10 s on 2 cores."],
    ),
    (
        "gpu_efficiency",
        "opt-1.3b fp16 generation on the GPU against the memory-bandwidth bound",
        gpu_efficiency,
        ["Random weights (same size as the real model); 64 new tokens per prompt."],
    ),
    (
        "codecarbon",
        "ecopipe beside CodeCarbon 3.3.2 on the default job's workload: gross energy per 1,000 inferences, "
        f"median (min–max) of {codecarbon_compare.REPEATS} interleaved repeats",
        codecarbon_compare,
        [],
    ),
]


def main() -> None:
    """Every benchmark, or those named on the command line (`python -m bench codecarbon`)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    chosen = set(sys.argv[1:])
    for name, title, module, notes in SUITE:
        if chosen and name not in chosen:
            continue
        frame = module.run()
        if frame.empty:
            print(f"## {title}\n\nskipped: needs {getattr(module, 'NEEDS', 'CUDA')}\n")
            continue
        # A bench may add what only its run knows: versions, repeats (header) and findings (notes).
        header, extra = frame.attrs.get("header", []), frame.attrs.get("notes", [])
        print(write_table(name, title, frame, [*notes, *extra], header))


if __name__ == "__main__":
    main()
