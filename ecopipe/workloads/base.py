"""The contract between the inference stage and any model family.

The stage owns timing and energy; a workload only loads, fits (if it must), runs passes over its
data and scores them. A workload that compares alternatives (a selection pool) is also
`ComparesArms`: `attach_meter` hands over the stage's meter (to price the workload's parts on the
same sensors), `arms` names alternatives the stage measures in the same protocol, interleaved with
the workload's own trials, and `findings` adds metrics, summary lines and files once all is measured.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ecopipe.results import Findings, ModelFacts, PassStats

if TYPE_CHECKING:
    from ecopipe.monitor.energy import EnergyMeter
    from ecopipe.results import InferenceResult


class Workload(ABC):
    device: str = "cpu"
    fits_in_job: bool = False  # `fit` trains the model (a long step the job names)

    @abstractmethod
    def load(self) -> None:
        """Load (or build) the model and the data; metered as the `load` phase."""

    def fit(self) -> bool:
        """Fit the model inside the job when the family needs it; metered as the `fit` phase."""
        return False

    @abstractmethod
    def batches(self) -> Sequence[Any]:
        """The measured data, already batched and on the device."""

    @abstractmethod
    def predict(self, batch: Any) -> Any:
        """Run one batch; return host-side results (their transfer ends the batch's GPU work)."""

    @abstractmethod
    def quality(self, outputs: Sequence[Any]) -> dict[str, float]:
        """Quality of one pass's outputs ({} where weights are random: no quality to report)."""

    @abstractmethod
    def facts(self) -> ModelFacts: ...

    def batch_samples(self, batch: Any) -> int:
        return len(batch)

    def batch_tokens(self, batch: Any, output: Any) -> tuple[int, int]:
        """Tokens in and out of one batch; zero for families without tokens."""
        return 0, 0

    def synchronize(self) -> None:  # noqa: B027 - a no-op is right for CPU workloads
        """Wait for queued device work; a no-op on the CPU."""

    def run_pass(self, keep_outputs: bool = False) -> tuple[PassStats, list[Any]]:
        """One pass over the measured data."""
        samples = tokens_in = tokens_out = 0
        latencies: list[float] = []
        outputs: list[Any] = []
        for batch in self.batches():
            started = time.perf_counter()
            output = self.predict(batch)
            latencies.append(time.perf_counter() - started)
            samples += self.batch_samples(batch)
            batch_in, batch_out = self.batch_tokens(batch, output)
            tokens_in += batch_in
            tokens_out += batch_out
            if keep_outputs:
                outputs.append(output)
        return PassStats(samples, tokens_in, tokens_out, tuple(latencies)), outputs


class ComparesArms(ABC):
    """The hooks of a workload that compares alternatives (a selection study), beside `Workload`."""

    @abstractmethod
    def attach_meter(self, meter: EnergyMeter) -> None:
        """The stage's open meter, handed over before `load`."""

    @abstractmethod
    def arms(self) -> Mapping[str, Workload]:
        """Alternatives measured beside this workload, each in the same trials and windows (loaded and
        fitted with it: the stage only runs their passes and scores them)."""

    @abstractmethod
    def findings(self, result: InferenceResult, folder: Path) -> Findings:
        """Metrics, summary lines and files (under `folder`) from the stage's result."""
