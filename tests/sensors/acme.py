"""A GPU vendor this machine lacks, added as any vendor is: one module behind EnergySensor, whose
`discover` goes in discovery.VENDORS (test_vendors.py adds it there without editing the package).

Its "driver" is a folder per card under ROOT, holding the card's energy counter (mJ) and power (mW).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ecopipe.sensors.base import Component, EnergySensor, Found, Request, SensorUnavailable, Source

ROOT = Path("/nonexistent/acme")  # a test points it at its cards


class AcmeGpuSensor(EnergySensor):
    component = Component.GPU
    source = Source.FAKE  # never a measurement: the vendor is made up
    resolution_s = 0.0

    def __init__(self, card: Path, index: int) -> None:
        if not card.is_dir():
            raise SensorUnavailable(f"no Acme card at {card}")
        self.card, self.device = card, f"gpu{index}"
        self._origin_mj = 0

    def _energy_mj(self) -> int:
        return int((self.card / "energy_mj").read_text())

    def open(self) -> None:
        self._origin_mj = self._energy_mj()

    def read_joules(self) -> float:
        return (self._energy_mj() - self._origin_mj) / 1000.0

    def probe_args(self) -> dict[str, object]:
        return {"card": str(self.card)}

    @classmethod
    def power_reader(cls, card: str) -> Callable[[], float]:
        return lambda: int((Path(card) / "power_mw").read_text()) / 1000.0


def discover(request: Request, found: Found) -> None:
    """An Acme sensor for each requested GPU that has a card and that no vendor before covers."""
    for index in request.gpu_indices:
        if not found.covers(Component.GPU, f"gpu{index}") and (ROOT / f"acme{index}").is_dir():
            found.sensors.append(AcmeGpuSensor(ROOT / f"acme{index}", index))
