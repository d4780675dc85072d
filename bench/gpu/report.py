"""The GPU check's report, rewritten after every step: `report.md` (Markdown) and `report.json` (the same
figures), with the steps not yet run listed as such, so a call cut off at any point returns what it
finished."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.gpu.context import replace_file

NOT_RUN_YET = "not run yet"
NO_TIME_LEFT = "not run (no time left in the budget)"


@dataclass
class StepOutcome:
    step: str
    limit_s: float
    status: str = NOT_RUN_YET  # ok | failed (...) | skipped: ... | not run ...
    seconds: float = 0.0
    figures: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.status.startswith("failed")

    @property
    def ran(self) -> bool:
        return not self.status.startswith("not run")


def _value(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _step_lines(step: StepOutcome, base: str) -> list[str]:
    timing = f"{step.seconds} s of {step.limit_s:.0f}" if step.ran else f"limit {step.limit_s:.0f} s"
    lines = [f"## {step.step}: {step.status} ({timing})", ""]
    if step.figures:
        lines += ["| figure | value | unit |", "|---|---:|---|"]
        lines += [f"| {f['name']} | {_value(f['value'])} | {f['unit']} |" for f in step.figures]
        commands = dict.fromkeys(f["command"].replace(base, "$BASE") for f in step.figures if f["command"])
        lines += ["", *(f"- `{c}`" for c in commands)]
    return [*lines, *(f"- {note}" for note in step.notes), ""]


def render(machine: dict[str, str], steps: list[StepOutcome], cpu: bool, base: str, budget_s: float) -> str:
    title = (
        "GPU check: CPU rehearsal (SIMULATED GPU: these figures prove nothing about a GPU)"
        if cpu
        else "GPU check"
    )
    done = [s for s in steps if s.ran]
    lines = [f"# {title}", "", "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in machine.items()), ""]
    lines += [
        f"Written {time.strftime('%Y-%m-%d %H:%M:%S %Z')} after {len(done)} of {len(steps)} steps "
        f"(budget {budget_s:.0f} s); a step listed as '{NOT_RUN_YET}' had not started when this was written.",
        "",
        f"Overrides every job shares, `$BASE`: `{base}`",
        "",
    ]
    for step in steps:
        lines += _step_lines(step, base)
    failed = sum(s.failed for s in steps)
    skipped = sum(s.status.startswith("skipped") for s in steps)
    passed = len(done) - failed - skipped
    lines.append(
        f"**{passed} of {len(steps)} steps passed, {skipped} skipped, {failed} failed, "
        f"{len(steps) - len(done)} not run.**"
    )
    return "\n".join(lines) + "\n"


def write(
    out: Path, machine: dict[str, str], steps: list[StepOutcome], cpu: bool, base: str, budget_s: float
) -> str:
    report = render(machine, steps, cpu, base, budget_s)
    replace_file(out / "report.md", report)
    replace_file(
        out / "report.json",
        json.dumps(
            {"machine": machine, "budget_s": budget_s, "steps": [vars(s) for s in steps]},
            indent=1,
            default=str,
        ),
    )
    return report
