"""Pool members: each a conf/model option, fitted on the train split and temperature-scaled on
validation A, answering calibrated class probabilities for a batch of flat pixel rows.

Temperature scaling (Guo et al., 2017) divides a member's logits by one scalar T fitted to minimise
the negative log-likelihood on validation A. It leaves every prediction unchanged and only makes a
member's confidences mean what they say, so one threshold grid serves all members. scikit-learn
members expose probabilities, not logits: their log-probabilities (clipped at CLIP) stand in, which
is exact for a logistic regression and a smoothing knob for trees, whose leaves are often pure. An
estimator without probabilities (an SVC without Platt scaling, which would fit it five more times)
gives its one-vs-rest decision scores, which temperature scaling turns into calibrated probabilities.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

from ecopipe.config import CONFIG_DIR, ConfigError, Framework, ModelConfig, Task
from ecopipe.workloads.sklearn import ESTIMATORS, fitted_dtype, fitted_values

CLIP = 1e-6  # floor of a scikit-learn probability before its log: a zero would be an infinite logit
TEMPERATURE_BOUNDS = (0.05, 20.0)
CLASSIFICATION = (Task.tabular_classification, Task.image_classification)


def member_config(name: str) -> ModelConfig:
    """A conf/model option composed into the typed ModelConfig schema, so a bad member YAML fails here."""
    path = CONFIG_DIR / "model" / f"{name}.yaml"
    if not path.exists():
        allowed = ", ".join(sorted(p.stem for p in path.parent.glob("*.yaml")))
        raise ConfigError(f"pool member {name!r} is not a conf/model option; available: {allowed}.")
    options = OmegaConf.load(path)
    options.pop("defaults", None)  # an option's Hydra defaults (its task's data set) are not the model's
    try:
        cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), options))
    except OmegaConfBaseException as error:
        raise ConfigError(f"pool member {name!r} ({path}) does not fit the model schema: {error}") from error
    assert isinstance(cfg, ModelConfig)
    if cfg.task not in CLASSIFICATION:
        raise ConfigError(f"pool member {name!r} is a {cfg.task.value} model; a pool needs classifiers.")
    return cfg


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The T minimising the NLL of softmax(logits / T) on held-out rows (searched on log T)."""

    def nll(log_t: float) -> float:
        return float(-log_softmax(logits / np.exp(log_t), axis=1)[np.arange(len(y)), y].mean())

    low, high = np.log(TEMPERATURE_BOUNDS)
    return float(np.exp(minimize_scalar(nll, bounds=(low, high), method="bounded").x))


class Member(ABC):
    """One fitted model of the pool; `proba` is what strategies call, inside the measured window."""

    def __init__(self, cfg: ModelConfig, classes: int) -> None:
        self.cfg, self.classes = cfg, classes
        self.temperature = 1.0

    @property
    def name(self) -> str:
        return self.cfg.name

    @abstractmethod
    def fit(self, x: np.ndarray, y: np.ndarray) -> None: ...

    @abstractmethod
    def logits(self, x: np.ndarray) -> np.ndarray:
        """(rows, classes) scores whose softmax is the member's probability."""

    @property
    @abstractmethod
    def parameters(self) -> int: ...

    @property
    @abstractmethod
    def dtype(self) -> str: ...

    def calibrate(self, x: np.ndarray, y: np.ndarray) -> None:
        self.temperature = fit_temperature(self.logits(x), y)

    def proba(self, x: np.ndarray) -> np.ndarray:
        """Calibrated class probabilities, column c = class c."""
        if not len(x):
            return np.empty((0, self.classes), dtype=np.float64)
        return softmax(self.logits(x) / self.temperature, axis=1)


class SklearnMember(Member):
    def __init__(self, cfg: ModelConfig, classes: int, seed: int) -> None:
        super().__init__(cfg, classes)
        if cfg.architecture not in ESTIMATORS:
            raise ConfigError(
                f"pool member {cfg.name}: architecture {cfg.architecture} is not a supported "
                f"scikit-learn estimator; allowed: {', '.join(ESTIMATORS)}."
            )
        estimator_cls = ESTIMATORS[cfg.architecture]
        params = dict(cfg.params)
        if "random_state" in estimator_cls().get_params():
            params.setdefault("random_state", seed)
        self.estimator: Any = estimator_cls(**params)
        self.scores_only = not hasattr(self.estimator, "predict_proba")
        if self.scores_only and not hasattr(self.estimator, "decision_function"):
            raise ConfigError(
                f"pool member {cfg.name}: {cfg.architecture} gives neither class probabilities nor "
                "decision scores; a selection strategy needs one of them."
            )

    def fit(self, x: np.ndarray, y: np.ndarray) -> None:
        self.estimator.fit(x, y)
        if not np.array_equal(self.estimator.classes_, np.arange(self.classes)):
            raise ValueError(f"{self.name} saw classes {self.estimator.classes_}, not 0..{self.classes - 1}")

    def logits(self, x: np.ndarray) -> np.ndarray:
        if self.scores_only:
            return np.asarray(self.estimator.decision_function(x), dtype=np.float64)
        return np.log(np.clip(self.estimator.predict_proba(x), CLIP, 1.0))

    @property
    def parameters(self) -> int:
        return fitted_values(self.estimator)

    @property
    def dtype(self) -> str:
        return fitted_dtype(self.estimator)


_TORCH_PARAMS = {
    "MLP": {"hidden", "epochs", "lr", "batch_size", "weight_decay", "threads"},
    "SmallCNN": {"channels", "epochs", "lr", "batch_size", "weight_decay", "threads"},
}
# Pool members are tiny: like the scikit-learn members they run on one CPU thread unless their
# params say otherwise. On a shared CPU, PyTorch's default intra-op threads made one small-CNN call at
# batch 64 13x slower (52 ms against 4 ms, measured on this project's 2-vCPU CI machine under load).
DEFAULT_THREADS = 1


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """PyTorch's intra-op threads set to `count` for the block only (a few microseconds each way)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _network(cfg: ModelConfig, image_shape: tuple[int, int, int], classes: int) -> Any:
    import torch.nn as nn

    unknown = set(cfg.params) - _TORCH_PARAMS[cfg.architecture]
    if unknown:
        raise ConfigError(
            f"pool member {cfg.name}: unknown params {sorted(unknown)}; allowed: "
            f"{sorted(_TORCH_PARAMS[cfg.architecture])}."
        )
    channels, height, width = image_shape
    if cfg.architecture == "MLP":
        layers: list[nn.Module] = []
        width_in = channels * height * width
        for hidden in cfg.params.get("hidden", [128]):
            layers += [nn.Linear(width_in, hidden), nn.ReLU()]
            width_in = hidden
        return nn.Sequential(*layers, nn.Linear(width_in, classes))
    c1, c2 = cfg.params.get("channels", [16, 32])
    return nn.Sequential(
        nn.Unflatten(1, image_shape),
        nn.Conv2d(channels, c1, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(c2 * (height // 4) * (width // 4), classes),
    )


class TorchMember(Member):
    """A PyTorch MLP or small CNN trained with Adam on the train split; inference on `device`."""

    def __init__(
        self, cfg: ModelConfig, classes: int, seed: int, image_shape: tuple[int, int, int], device: str
    ) -> None:
        super().__init__(cfg, classes)
        if cfg.architecture not in _TORCH_PARAMS:
            raise ConfigError(
                f"pool member {cfg.name}: torch architecture {cfg.architecture} is unknown; "
                f"allowed: {', '.join(_TORCH_PARAMS)}."
            )
        self.seed, self.device, self.image_shape = seed, device, image_shape
        self.threads = int(cfg.params.get("threads", DEFAULT_THREADS))
        self.net: Any = None

    def fit(self, x: np.ndarray, y: np.ndarray) -> None:
        import torch

        torch.manual_seed(self.seed)
        p = self.cfg.params
        self.net = _network(self.cfg, self.image_shape, self.classes).to(self.device)
        optimiser = torch.optim.Adam(
            self.net.parameters(), lr=p.get("lr", 3e-3), weight_decay=p.get("weight_decay", 0.0)
        )
        loss_fn = torch.nn.CrossEntropyLoss()
        xs = torch.from_numpy(x).to(self.device)
        ys = torch.from_numpy(y).to(self.device)
        generator = torch.Generator().manual_seed(self.seed)
        batch = int(p.get("batch_size", 64))
        self.net.train()
        with torch_threads(self.threads):
            for _ in range(int(p.get("epochs", 10))):
                order = torch.randperm(len(xs), generator=generator).to(self.device)
                for start in range(0, len(xs), batch):
                    rows = order[start : start + batch]
                    optimiser.zero_grad()
                    loss_fn(self.net(xs[rows]), ys[rows]).backward()
                    optimiser.step()
        self.net.eval()

    def logits(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode(), torch_threads(self.threads):
            return self.net(torch.from_numpy(x).to(self.device)).float().cpu().numpy()

    @property
    def parameters(self) -> int:
        return int(sum(p.numel() for p in self.net.parameters()))

    @property
    def dtype(self) -> str:
        return str(next(self.net.parameters()).dtype).removeprefix("torch.")


def build_member(
    cfg: ModelConfig, classes: int, seed: int, image_shape: tuple[int, int, int], device: str
) -> Member:
    if cfg.framework is Framework.sklearn:
        return SklearnMember(cfg, classes, seed)
    if cfg.framework is Framework.torch:
        return TorchMember(cfg, classes, seed, image_shape, device)
    raise ConfigError(
        f"pool member {cfg.name}: framework {cfg.framework.value} cannot join a pool; "
        "use sklearn or torch models."
    )
