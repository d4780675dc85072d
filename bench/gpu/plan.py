"""The GPU check's steps in order of value, each with its own time limit, and the budget they fit.

Standard library only: `bench/gpu_check.sh` prints the plan (`python -m bench.gpu.plan ...`) before it
installs anything, so a bad `--steps` is refused at once and the reader sees the total up front.
One call on a bare GPU machine = the kit's install (~30 s) + these steps (<= 420 s by default; the
GPU's identification, ~10 s, counts against the same budget): well inside 10 minutes.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    limit_s: float
    proves: str
    default: bool = True  # in the plan unless --steps says otherwise


# Most valuable first: a call cut short keeps the best. The limits are estimates for a cold H100 or
# H200 (a first run there recalibrates them); the default plan's add up to DEFAULT_BUDGET_S.
STEPS: dict[str, Step] = {
    "counter": Step(85, "the job's GPU energy vs the counter and the power field, read by a second process"),
    "idle": Step(25, "idle power settles, without and with a CUDA context"),
    "headline": Step(45, "one job: opt-125m, random weights, fp16"),
    "precisions": Step(75, "opt-125m in fp32, fp16, bf16, int8, int4, or why one cannot run"),
    "engines": Step(80, "eager vs compiled at batch 1, then 8, against the memory-bandwidth bound"),
    "sweep": Step(70, "a 2 x 2 multirun and its aggregation: the GPU column of a cross-hardware table"),
    "rapl": Step(40, "a CPU job with RAPL beside the same job estimated (only where RAPL is readable)"),
    # Asked for by name only: the steps above run what these tests check, at the GPU check's sizes.
    "pytest": Step(60, "the tests marked cuda", default=False),
}
DEFAULT_STEPS = tuple(name for name, step in STEPS.items() if step.default)
DEFAULT_BUDGET_S = sum(STEPS[name].limit_s for name in DEFAULT_STEPS)


@dataclass(frozen=True)
class Plan:
    steps: tuple[str, ...]  # in run order
    budget_s: float

    def limit_s(self, step: str) -> float:
        return STEPS[step].limit_s

    def describe(self) -> str:
        rows = [f"  {i}. {name:<10} <= {self.limit_s(name):3.0f} s  {STEPS[name].proves}" for i, name in
                enumerate(self.steps, 1)]  # fmt: skip
        total = sum(self.limit_s(name) for name in self.steps)
        return "\n".join(
            [f"gpu check: {len(self.steps)} steps, their limits add up to {total:.0f} s; "
             f"budget {self.budget_s:.0f} s (a step gets its limit or what is left, whichever is less)",
             *rows]
        )  # fmt: skip


def choose(steps: str | None, budget_s: float | None) -> Plan:
    """The steps named (comma-separated, run in the order above; None: the default plan) within
    `budget_s` (default: the sum of their limits)."""
    names = list(DEFAULT_STEPS) if steps is None else [name for name in steps.split(",") if name]
    unknown = [name for name in names if name not in STEPS]
    if unknown or not names:
        raise ValueError(
            f"--steps {steps!r}: {'unknown step(s) ' + ', '.join(unknown) if unknown else 'no step named'}; "
            f"allowed: {', '.join(STEPS)} (comma-separated, run in that order; default: "
            f"{','.join(DEFAULT_STEPS)})"
        )
    chosen = tuple(name for name in STEPS if name in names)
    if budget_s is not None and budget_s <= 0:
        raise ValueError(f"--budget-s {budget_s:g}: must be a positive number of seconds")
    return Plan(chosen, budget_s if budget_s is not None else sum(STEPS[name].limit_s for name in chosen))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--budget-s", type=float, help="all steps together (default: the sum of their limits)"
    )
    parser.add_argument("--steps", help=f"a comma-separated subset of {','.join(STEPS)}")


def main() -> None:
    parser = argparse.ArgumentParser(description="Print the GPU check's plan (or refuse a bad one).")
    add_arguments(parser)
    parser.add_argument("--cpu", action="store_true", help="ignored here: the plan is the same")
    args, _ = parser.parse_known_args()
    try:
        print(choose(args.steps, args.budget_s).describe(), flush=True)
    except ValueError as error:
        parser.exit(2, f"gpu check: error: {error}\n")


if __name__ == "__main__":
    main()
