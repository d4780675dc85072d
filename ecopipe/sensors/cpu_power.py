"""What the CPU estimate charges: a leaf, read by discovery's request, the estimate and the report."""

from __future__ import annotations

from dataclasses import dataclass

from ecopipe.cpu_coefficients import CpuPowerCoefficients
from ecopipe.cpu_identity import CpuIdentity


@dataclass(frozen=True)
class CpuPower:
    """What the CPU estimate charges per hardware thread, for which CPU, and the cross-check beside it."""

    identity: CpuIdentity
    coefficients: CpuPowerCoefficients
    tdp_check: str = ""  # the hardware table's TDP per thread for the named model, where it lists one

    @property
    def note(self) -> str:
        c = self.coefficients
        idle, full = c.idle_w, c.full_w
        text = (
            f"{c.label}: {idle[1]:.3g} W per thread idle ({idle[0]:.3g}-{idle[2]:.3g}), "
            f"{full[1]:.3g} W at full load ({full[0]:.3g}-{full[2]:.3g}), SPECpower via CCF"
        )
        return f"{text}; {self.tdp_check}" if self.tdp_check else text
