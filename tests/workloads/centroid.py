"""A workload family kept outside the package, as a user's would be: a PyTorch nearest-centroid classifier,
fitted in the job (each class's mean row) and answering the class of the nearest mean.

It exists to show that a family is one module and a YAML file per model (`conf/model/centroid.yaml`
beside it, found through `hydra.searchpath`, names this class in `_target_`): no file of ecopipe names it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ecopipe.config import Config, ConfigError, Precision
from ecopipe.hardware import resolve_device
from ecopipe.results import ModelFacts
from ecopipe.workloads.base import Workload
from ecopipe.workloads.tabular import TabularSplit, load_tabular


class NearestCentroid(Workload):
    fits_in_job = True

    def __init__(self, cfg: Config) -> None:
        # Everything a config can get wrong is refused here, before anything loads.
        if cfg.precision.name is not Precision.fp32:
            raise ConfigError(f"precision={cfg.precision.name.value}: {cfg.model.name} runs in fp32 only.")
        self.device = resolve_device(cfg.hardware.device, cpu_only=True)
        self.cfg = cfg
        self.data: TabularSplit | None = None
        self.classes = self.centroids = torch.empty(0)
        self._batches: list[torch.Tensor] = []

    def load(self) -> None:
        self.data = load_tabular(self.cfg.dataset)
        self._batches = list(torch.from_numpy(self.data.x_test).split(self.cfg.batch_size))

    def fit(self) -> bool:
        assert self.data is not None
        x, y = torch.from_numpy(self.data.x_train), torch.from_numpy(self.data.y_train)
        self.classes = torch.unique(y)
        self.centroids = torch.stack([x[y == label].mean(dim=0) for label in self.classes])
        return True

    def batches(self) -> Sequence[torch.Tensor]:
        return self._batches

    def predict(self, batch: torch.Tensor) -> np.ndarray:
        return self.classes[torch.cdist(batch, self.centroids).argmin(dim=1)].numpy()

    def quality(self, outputs: Sequence[np.ndarray]) -> dict[str, float]:
        assert self.data is not None
        predicted = np.concatenate(list(outputs))
        return {"accuracy": float(np.mean(predicted == self.data.y_test[: len(predicted)]))}

    def facts(self) -> ModelFacts:
        values = self.centroids.numel()
        return ModelFacts(values, float(values), str(self.centroids.dtype).removeprefix("torch."), "fitted")
