"""CPU package and DRAM energy from Linux RAPL (powercap sysfs), Intel and AMD (kernel >= 5.8).

Layout: /sys/class/powercap/intel-rapl:N is package N; intel-rapl:N:M are its subzones (core, uncore,
dram). core and uncore are *inside* the package figure, so only package (CPU) and dram (RAM) are
used: summing them would count energy twice. intel-rapl-mmio:* mirrors the package and psys covers
the whole platform: both are skipped for the same reason.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ecopipe.sensors.base import Component, EnergySensor, Found, Request, SensorUnavailable, Source

log = logging.getLogger(__name__)

POWERCAP_ROOT = "/sys/class/powercap"
RAPL_SET_ASIDE = "RAPL set aside on request (monitor.rapl=false)"
# A package drawing this much would wrap its counter fastest; no CPU package draws 1 kW (an assumed
# bound). One counter range at that power is the longest span between two reads that still tells a
# single wrap from two: ~65 s for AMD's ~65 kJ range, ~262 s for Intel's ~262 kJ.
PEAK_PACKAGE_W = 1000.0
GUARD_PERIOD_MAX_S = 60.0
_PACKAGE_RE = re.compile(r"intel-rapl:(\d+)")
_SUBZONE_RE = re.compile(r"intel-rapl:(\d+):(\d+)")


def counter_delta(prev: int, cur: int, max_range: int) -> int:
    """Energy (uJ) between two reads of a counter that wraps to 0 after `max_range`.

    At most one wrap between reads is detectable: read at least once per max_range / peak power
    (tens of minutes on usual packages). The kernel does not publish the exact modulus; taking
    max_range for it errs by at most one energy unit (~61 uJ) per wrap.
    """
    if cur >= prev:
        return cur - prev
    if max_range <= 0 or prev > max_range:
        raise ValueError(f"counter went {prev} -> {cur} with max_energy_range_uj={max_range}")
    return max_range - prev + cur


def _read_text(path: Path) -> str:
    return path.read_text().strip()


def _permission_message(path: Path) -> str:
    return (
        f"cannot read {path}: permission denied. Since Linux 5.10 RAPL energy_uj is readable by root "
        "only (CVE-2020-8694). Run as root, or grant read access until reboot with "
        "`sudo chmod a+r /sys/class/powercap/intel-rapl:*/energy_uj "
        "/sys/class/powercap/intel-rapl:*:*/energy_uj` (a udev rule makes it permanent)"
    )


class RaplSensor(EnergySensor):
    """One RAPL zone: a package (component CPU) or its dram subzone (component RAM).

    Accumulates counter deltas across wraps, so read_joules() is monotonic while open. The job reads
    only at window edges, and a window longer than one counter range would silently lose a range: so
    while open, a daemon thread reads the counter every half of the safe span (see PEAK_PACKAGE_W; one
    sysfs read per 30-60 s costs the workload nothing). A span between reads longer than the safe
    one (the thread starved) is counted in `unverified_spans` and warned about: that window's energy
    may miss whole ranges.
    """

    source = Source.RAPL
    resolution_s = 0.001  # RAPL updates about every millisecond
    whole_machine = True  # a package counts every process that runs on it

    def __init__(
        self,
        zone_path: str | Path,
        clock: Callable[[], float] = time.perf_counter,
        guard_period_s: float | None = None,
    ) -> None:
        self.zone = Path(zone_path)
        self._clock = clock
        self._energy_file = self.zone / "energy_uj"
        try:
            name = _read_text(self.zone / "name")
            self.max_range_uj = int(_read_text(self.zone / "max_energy_range_uj"))
            self._prev = int(_read_text(self._energy_file))  # probe: permission fails here
        except PermissionError as err:
            raise SensorUnavailable(_permission_message(self._energy_file)) from err
        except (OSError, ValueError) as err:
            raise SensorUnavailable(f"RAPL zone {self.zone} unreadable: {err}") from err
        sub = _SUBZONE_RE.fullmatch(self.zone.name)
        if name == "dram" and sub:
            self.component, self.device = Component.RAM, f"dram-{sub.group(1)}"
        elif name.startswith("package"):
            self.component, self.device = Component.CPU, name
        else:
            raise ValueError(f"{self.zone} is a {name!r} zone: only package and dram zones are used")
        self._lock = threading.Lock()  # the guard thread and the window edges both read
        self._total_uj = 0
        self._opened = False
        self._last_power: tuple[float, int] | None = None  # (t, total uJ) at the last power_watts()
        self.safe_span_s = self.max_range_uj / 1e6 / PEAK_PACKAGE_W
        self.guard_period_s = guard_period_s or min(max(self.safe_span_s / 2, 1.0), GUARD_PERIOD_MAX_S)
        self._read_at: float | None = None  # clock time of the latest counter read
        self.unverified_spans = 0
        self._stop = threading.Event()
        self._guard: threading.Thread | None = None

    def _accumulate(self) -> tuple[int, float]:
        """(total uJ since open, clock time of this read)."""
        with self._lock:
            try:
                cur = int(_read_text(self._energy_file))
            except PermissionError as err:
                raise SensorUnavailable(_permission_message(self._energy_file)) from err
            now = self._clock()
            if self._read_at is not None and now - self._read_at > self.safe_span_s:
                self.unverified_spans += 1
                log.warning(
                    "%s: %.0f s between two RAPL reads, longer than one counter range at %g W (%.0f s): "
                    "energy over that span may miss whole wraps",
                    self.label,
                    now - self._read_at,
                    PEAK_PACKAGE_W,
                    self.safe_span_s,
                )
            self._total_uj += counter_delta(self._prev, cur, self.max_range_uj)
            self._prev, self._read_at = cur, now
            return self._total_uj, now

    def poll(self) -> None:
        """One guard read: accumulates the counter so no wrap goes unseen between window edges."""
        self._accumulate()

    def _guard_loop(self) -> None:
        while not self._stop.wait(self.guard_period_s):
            try:
                self.poll()
            except (SensorUnavailable, OSError, ValueError) as err:  # the next edge read raises it again
                log.warning("%s: RAPL guard read failed: %s", self.label, err)

    def open(self) -> None:
        self._read_at = None
        self._accumulate()
        self._total_uj, self._opened, self._last_power = 0, True, None
        self.unverified_spans = 0
        self._stop.clear()
        self._guard = threading.Thread(target=self._guard_loop, name=f"rapl-guard-{self.device}", daemon=True)
        self._guard.start()

    def read_joules(self) -> float:
        if not self._opened:
            raise RuntimeError(f"{self!r} read before open()")
        return self._accumulate()[0] / 1e6

    def probe_args(self) -> dict[str, object]:
        return {"zone": str(self.zone)}

    @classmethod
    def power_reader(cls, zone: str) -> Callable[[], float | None]:
        """The zone's power from counter deltas, in a sensor of the sampler's own."""
        sensor = cls(zone)
        sensor.open()
        return sensor.power_watts

    def power_watts(self) -> float | None:
        if not self._opened:
            return None
        total, now = self._accumulate()
        last, self._last_power = self._last_power, (now, total)
        if last is None or now <= last[0]:
            return None
        return (total - last[1]) / 1e6 / (now - last[0])

    def close(self) -> None:
        self._opened = False
        self._stop.set()
        if self._guard is not None:
            self._guard.join(timeout=1.0)
            self._guard = None


def _subzones(root: Path, package: Path, index: str) -> list[Path]:
    """Subzones of one package: nested in its folder (real sysfs) and/or flat beside it."""
    found: dict[str, Path] = {}
    for folder in (package, root):
        for p in folder.iterdir():
            m = _SUBZONE_RE.fullmatch(p.name)
            if m and m.group(1) == index and p.name not in found:
                found[p.name] = p
    return [found[k] for k in sorted(found, key=lambda n: int(n.rsplit(":", 1)[1]))]


def discover_rapl_zones(
    root: str | Path = POWERCAP_ROOT,
    clock: Callable[[], float] = time.perf_counter,
    unreadable_dram: dict[str, str] | None = None,
) -> list[RaplSensor]:
    """Package zones (CPU) and their dram subzones (RAM); [] when there is no RAPL.

    Raises SensorUnavailable when a package's energy_uj cannot be read (permission denied), so the
    caller can say why it falls back to an estimate. A dram zone that cannot be read is left out
    (its path and why go into `unreadable_dram`): the packages stay measured, only RAM is estimated.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    sensors: list[RaplSensor] = []
    packages = [p for p in root.iterdir() if _PACKAGE_RE.fullmatch(p.name)]
    for pkg in sorted(packages, key=lambda p: int(p.name.split(":")[1])):
        try:
            name = _read_text(pkg / "name")
        except OSError as err:
            log.warning("RAPL zone %s has no readable name (%s): skipped", pkg, err)
            continue
        if not name.startswith("package"):
            log.debug("RAPL zone %s (%s) skipped: it overlaps the package zones", pkg, name)
            continue
        sensors.append(RaplSensor(pkg, clock=clock))
        for sub in _subzones(root, pkg, pkg.name.split(":")[1]):
            try:
                sub_name = _read_text(sub / "name")
            except OSError:
                continue
            if sub_name == "dram":
                try:
                    sensors.append(RaplSensor(sub, clock=clock))
                except SensorUnavailable as err:
                    log.warning("RAPL dram zone %s left out, the package stays measured: %s", sub, err)
                    if unreadable_dram is not None:
                        unreadable_dram[str(sub)] = str(err)
            else:  # core, uncore: already inside the package figure
                log.debug("RAPL subzone %s (%s) skipped: inside the package", sub, sub_name)
    return sensors


def _dram_on_every_package(zones: Sequence[RaplSensor]) -> bool:
    """RAM is measured only where every package has a dram zone: otherwise some memory is left out."""
    packages = sum(z.component is Component.CPU for z in zones)
    return packages > 0 and sum(z.component is Component.RAM for z in zones) == packages


def _readable_rapl(powercap_root: str | Path, unreadable_dram: dict[str, str]) -> list[RaplSensor]:
    try:
        return discover_rapl_zones(powercap_root, unreadable_dram=unreadable_dram)
    except SensorUnavailable as err:
        log.warning("RAPL unusable: %s", err)
        return []


def discover(request: Request, found: Found) -> None:
    """The packages (CPU) and, where every package has one, the dram zones (RAM); what is left to an
    estimate goes into `found` with why: none readable, set aside on request, a dram unreadable."""
    root = request.powercap_root
    unreadable_dram: dict[str, str] = {}
    readable = _readable_rapl(root, unreadable_dram)
    # Set aside only what is there: on a host without RAPL, monitor.rapl=false changes nothing.
    aside_cpu = not request.rapl and any(z.component is Component.CPU for z in readable)
    aside_ram = aside_cpu and _dram_on_every_package(readable)
    zones = readable if request.rapl else []  # never opened: nothing to close
    cpu = [z for z in zones if z.component is Component.CPU]
    ram = [z for z in zones if z.component is Component.RAM]
    found.sensors += cpu
    if aside_cpu:
        found.set_aside[Component.CPU], found.why[Component.CPU] = Source.RAPL.value, RAPL_SET_ASIDE
    elif not cpu:
        found.why[Component.CPU] = f"no readable RAPL package under {root}"

    if ram and _dram_on_every_package(zones):
        found.sensors += ram
        return
    if ram:  # a dram zone on some packages only: the others' memory would be left out
        log.warning(
            "RAPL has a dram zone on %d of %d packages: RAM is estimated rather than half-measured",
            len(ram),
            len(cpu),
        )
    if aside_ram:
        found.set_aside[Component.RAM], found.why[Component.RAM] = Source.RAPL.value, RAPL_SET_ASIDE
        return
    if unreadable_dram:
        found.fallback[Component.RAM] = "RAPL dram unreadable: " + "; ".join(unreadable_dram.values())
    found.why[Component.RAM] = found.fallback.get(Component.RAM) or "no RAPL dram zone"
