"""NVIDIA GPU energy through NVML: the total-energy counter, else integrated instantaneous power.

pynvml (nvidia-ml-py) is imported lazily here and nowhere else, so the package imports and runs on
machines without it. Every NVML failure becomes a SensorUnavailable carrying a one-line explanation;
`NvmlUnavailable` marks failures that no other NVML sensor can get round (no library, no driver).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from ecopipe.sensors.base import Component, EnergySensor, Found, Request, SensorUnavailable, Source

log = logging.getLogger(__name__)

# Assumed refresh period of the energy counter and the power fields: 100 ms. An assumption, not a
# measurement: this project has never run on a GPU, and NVML's reference gives no refresh period. For
# how coarse the readings are, Yang et al., "Part-time Power Measurements: nvidia-smi's Lack of
# Attention" (arXiv:2312.02741, SC24), report that on A100 and H100 only 25% of the runtime is sampled.
NVML_REFRESH_S = 0.1


class NvmlUnavailable(SensorUnavailable):
    """NVML itself cannot be used (pynvml missing, no library, no driver): no NVML sensor will work."""


def trapezoid_joules(times: Sequence[float], watts: Sequence[float]) -> float:
    """Energy in joules of a power trace (seconds, watts) by the trapezoid rule; 0 for < 2 samples."""
    if len(times) != len(watts):
        raise ValueError(f"{len(times)} times but {len(watts)} power samples")
    joules = 0.0
    for i in range(1, len(times)):
        dt = times[i] - times[i - 1]
        if dt < 0:
            raise ValueError(f"times go backwards at sample {i}: {times[i - 1]} -> {times[i]}")
        joules += dt * (watts[i] + watts[i - 1]) / 2.0
    return joules


def import_pynvml() -> ModuleType:
    try:
        import pynvml
    except ImportError as err:
        raise NvmlUnavailable("pynvml (package nvidia-ml-py) is not installed") from err
    return pynvml


def _explain(nv: ModuleType, err: Exception, index: int, what: str) -> SensorUnavailable:
    """Turn an NVMLError into a SensorUnavailable whose message says what to do about it."""
    code = getattr(err, "value", None)
    if code in (nv.NVML_ERROR_LIBRARY_NOT_FOUND, nv.NVML_ERROR_DRIVER_NOT_LOADED):
        return NvmlUnavailable(f"NVML not usable ({err}): no NVIDIA driver on this machine?")
    if code == nv.NVML_ERROR_NO_PERMISSION:
        return SensorUnavailable(f"gpu{index}: {what}: permission denied by NVML ({err})")
    if code in (nv.NVML_ERROR_INVALID_ARGUMENT, nv.NVML_ERROR_NOT_FOUND):
        return SensorUnavailable(f"gpu{index}: {what}: no such GPU index ({err})")
    if code in (nv.NVML_ERROR_NOT_SUPPORTED, nv.NVML_ERROR_FUNCTION_NOT_FOUND):
        return SensorUnavailable(f"gpu{index}: {what}: not supported by this GPU/driver ({err})")
    return SensorUnavailable(f"gpu{index}: {what}: {type(err).__name__}: {err}")


def field_value(fv: Any) -> float:
    """The number inside an nvmlFieldValue_t, whatever its declared C type."""
    member = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}
    return float(getattr(fv.value, member[int(fv.valueType)]))


class _NvmlDevice:
    """One reference on NVML (nvmlInit is ref-counted) plus the handle of one GPU."""

    def __init__(self, index: int) -> None:
        self.nv = import_pynvml()
        self.index = index
        try:
            self.nv.nvmlInit()
        except self.nv.NVMLError as err:
            raise _explain(self.nv, err, index, "nvmlInit") from err
        try:
            self.handle = self.nv.nvmlDeviceGetHandleByIndex(index)
        except self.nv.NVMLError as err:
            self.close()
            raise _explain(self.nv, err, index, "nvmlDeviceGetHandleByIndex") from err
        self._instant: bool | None = None  # decided by the first power read

    @property
    def instant(self) -> bool:
        """Whether power_w() reads the instantaneous field (False: the 1-s average); after one read."""
        return bool(self._instant)

    def close(self) -> None:
        if getattr(self, "_closed", False):
            return
        self._closed = True
        with contextlib.suppress(self.nv.NVMLError):  # shutting down is best effort
            self.nv.nvmlShutdown()

    def call(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(self.handle, *args)
        except self.nv.NVMLError as err:
            raise _explain(self.nv, err, self.index, what) from err

    def _instant_w(self, field: int) -> float:
        fv = self.call("power instant field", self.nv.nvmlDeviceGetFieldValues, [field])[0]
        if fv.nvmlReturn != self.nv.NVML_SUCCESS:  # per-field status: the call itself succeeded
            raise _explain(self.nv, self.nv.NVMLError(fv.nvmlReturn), self.index, "power instant field")
        return field_value(fv) / 1000.0

    def power_w(self) -> float:
        """Instantaneous board power in W: the POWER_INSTANT field, else nvmlDeviceGetPowerUsage.

        nvmlDeviceGetPowerUsage is a 1-second average on Ampere (except GA100) and newer GPUs, Hopper
        H100 included (NVML reference for nvmlDeviceGetPowerUsage), so a window integrated from it carries
        energy over from the previous phase; it is used only when the instant field is missing
        (decided once, at the first read), with a warning.
        """
        field = getattr(self.nv, "NVML_FI_DEV_POWER_INSTANT", None)
        if self._instant is None:
            try:
                watts = self._instant_w(field) if field is not None else None
            except SensorUnavailable:
                watts = None
            self._instant = watts is not None
            if watts is not None:
                return watts
            log.warning(
                "gpu%d: NVML_FI_DEV_POWER_INSTANT unavailable; using nvmlDeviceGetPowerUsage, "
                "a 1-s average on some GPUs (energy leaks across window edges)",
                self.index,
            )
        if self._instant:
            return self._instant_w(field)
        return self.call("nvmlDeviceGetPowerUsage", self.nv.nvmlDeviceGetPowerUsage) / 1000.0


class _NvmlSensor(EnergySensor):
    """What both NVML sources share: one GPU, and the sampler's trace of its instantaneous power."""

    component = Component.GPU
    resolution_s = NVML_REFRESH_S
    _dev: _NvmlDevice

    def probe_args(self) -> dict[str, object]:
        return {"index": self._dev.index}

    @classmethod
    def power_reader(cls, index: int) -> Callable[[], float]:
        """Instantaneous board power of one GPU in W (raises SensorUnavailable)."""
        return _NvmlDevice(index).power_w


class NvmlCounterSensor(_NvmlSensor):
    """The GPU's own energy counter (nvmlDeviceGetTotalEnergyConsumption, mJ since the driver loaded;
    Volta and newer, per the NVML reference).

    Read only at the window edges (what one read costs has not been measured by this project). Raises
    SensorUnavailable from the constructor when NVML, the device or the counter is missing, so
    discovery can fall back.
    """

    source = Source.NVML_COUNTER

    def __init__(self, index: int) -> None:
        self.device = f"gpu{index}"
        self._dev = _NvmlDevice(index)
        try:
            self._read_mj()  # probe now: pre-Volta GPUs answer NotSupported
        except SensorUnavailable:
            self._dev.close()
            raise
        self._origin_mj: int | None = None

    def _read_mj(self) -> int:
        return int(self._dev.call("energy counter", self._dev.nv.nvmlDeviceGetTotalEnergyConsumption))

    def open(self) -> None:
        self._origin_mj = self._read_mj()

    def read_joules(self) -> float:
        if self._origin_mj is None:
            raise RuntimeError(f"{self!r} read before open()")
        return (self._read_mj() - self._origin_mj) / 1000.0

    def power_watts(self) -> float | None:
        try:
            return self._dev.power_w()
        except SensorUnavailable:
            return None

    def close(self) -> None:
        self._dev.close()


class NvmlPowerPollingSensor(_NvmlSensor):
    """Fallback: a daemon thread polls instantaneous power every `period_s` and integrates it.

    Power comes from NVML_FI_DEV_POWER_INSTANT where the driver has it (source nvml_power_polling),
    else nvmlDeviceGetPowerUsage (a 1-s average on some GPUs, see _NvmlDevice.power_w; source
    nvml_avg_power_polling). read_joules() takes one more sample at the
    call so the integral ends exactly at the window edge. Under bursty load a polled integral can miss
    what happens between the GPU's own power samples (Yang et al., arXiv:2312.02741, report that on
    A100 and H100 only 25% of the runtime is sampled); this project has not measured the error itself.
    The counter is preferred wherever it exists.
    """

    source = Source.NVML_POWER_POLLING

    def __init__(
        self, index: int, period_s: float = 0.02, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        if period_s <= 0:
            raise ValueError(f"period_s must be > 0, got {period_s}")
        self.device = f"gpu{index}"
        self.period_s = period_s
        self._clock = clock
        self._dev = _NvmlDevice(index)
        try:
            self._dev.power_w()  # probe: fails here rather than inside the thread
        except SensorUnavailable:
            self._dev.close()
            raise
        # The probe decided which field feeds the integral: the 1-s average gets its own label.
        self.source = Source.NVML_POWER_POLLING if self._dev.instant else Source.NVML_AVG_POWER_POLLING
        self._lock = threading.Lock()  # orders samples between the thread and read_joules()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last: tuple[float, float] | None = None  # (t, W) of the latest sample
        self._joules = 0.0
        self._error: SensorUnavailable | None = None

    def _sample(self) -> float:
        with self._lock:  # held through the power read too, so samples stay in order (read cost not measured)
            watts = self._dev.power_w()
            now = self._clock()
            if self._last is not None:
                self._joules += trapezoid_joules((self._last[0], now), (self._last[1], watts))
            self._last = (now, watts)
            return self._joules

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self._sample()
            except SensorUnavailable as err:  # e.g. GPU lost: surface it at the next read
                log.warning("%s: power polling stopped: %s", self.device, err)
                self._error = err
                return

    def open(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self!r} is already open")
        self._joules, self._last, self._error = 0.0, None, None
        self._stop.clear()
        self._sample()  # the origin sample, taken synchronously at open
        self._thread = threading.Thread(target=self._run, name=f"nvml-poll-{self.device}", daemon=True)
        self._thread.start()

    def read_joules(self) -> float:
        if self._thread is None:
            raise RuntimeError(f"{self!r} read before open()")
        if self._error is not None:
            raise self._error
        return self._sample()

    def power_watts(self) -> float | None:
        last = self._last
        return last[1] if last is not None else None

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5 * self.period_s + 1.0)
            self._thread = None
        self._dev.close()


def nvml_device_info(index: int) -> dict[str, Any]:
    """State of one GPU for the environment record; a field the GPU does not support is None.

    Keys: index, name, driver, power_limit_w, temperature_c, sm_clock_mhz, pstate ("P0"...),
    other_pids (compute/graphics processes on the device other than this one). Raises
    SensorUnavailable when NVML or the device is unusable.
    """
    dev = _NvmlDevice(index)
    nv, h = dev.nv, dev.handle

    def first(*getters: Callable[[], Any]) -> Any:
        for get in getters:
            try:
                return get()
            except (nv.NVMLError, AttributeError):  # NotSupported, or too old a binding/driver
                continue
        return None

    def text(value: Any) -> Any:
        return value.decode() if isinstance(value, bytes) else value

    try:
        limit_mw = first(lambda: nv.nvmlDeviceGetEnforcedPowerLimit(h))
        pstate = first(lambda: nv.nvmlDeviceGetPerformanceState(h))
        unknown_pstate = getattr(nv, "NVML_PSTATE_UNKNOWN", 32)
        procs = [
            p.pid
            for getter in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses")
            for p in (first(lambda g=getter: getattr(nv, g)(h)) or [])
        ]
        return {
            "index": index,
            "name": text(first(lambda: nv.nvmlDeviceGetName(h))),
            "driver": text(first(nv.nvmlSystemGetDriverVersion)),
            "power_limit_w": limit_mw / 1000.0 if limit_mw is not None else None,
            "temperature_c": first(
                lambda: nv.nvmlDeviceGetTemperatureV(h, nv.NVML_TEMPERATURE_GPU),
                lambda: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU),
            ),
            "sm_clock_mhz": first(lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)),
            "pstate": None if pstate in (None, unknown_pstate) else f"P{pstate}",
            "other_pids": sorted({pid for pid in procs if pid != os.getpid()}),
        }
    finally:
        dev.close()


class NvmlTelemetry:
    """Utilisation, memory, temperature and SM clock of one GPU, read by the sampler thread.

    Kept apart from the energy sensors: these fields describe the window (throttling, a busy
    neighbour), they never enter an energy figure.
    """

    def __init__(self, index: int) -> None:
        self._dev = _NvmlDevice(index)
        self.prefix = f"gpu{index}"

    def read(self) -> dict[str, float | None]:
        nv, h = self._dev.nv, self._dev.handle

        def value(get: Callable[[], Any]) -> Any:
            try:
                return get()
            except nv.NVMLError:
                return None

        util = value(lambda: nv.nvmlDeviceGetUtilizationRates(h))
        memory = value(lambda: nv.nvmlDeviceGetMemoryInfo(h))
        return {
            f"{self.prefix}.util_pct": None if util is None else float(util.gpu),
            f"{self.prefix}.memory_used_mb": None if memory is None else memory.used / 2**20,
            f"{self.prefix}.temperature_c": value(
                lambda: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)
            ),
            f"{self.prefix}.sm_clock_mhz": value(lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)),
            f"{self.prefix}.pstate": value(lambda: nv.nvmlDeviceGetPerformanceState(h)),
            f"{self.prefix}.processes": value(lambda: len(nv.nvmlDeviceGetComputeRunningProcesses(h))),
        }

    def close(self) -> None:
        self._dev.close()


SENSORS = {Source.NVML_COUNTER: NvmlCounterSensor, Source.NVML_POWER_POLLING: NvmlPowerPollingSensor}


def _gpu_sensor(index: int, sources: Sequence[Source]) -> EnergySensor | None:
    """The first of `sources` (NVML counter, power polling) that works on this GPU, or None (warned)."""
    for position, source in enumerate(sources):
        last = position + 1 == len(sources)
        then = "GPU energy NOT measured" if last else f"falling back to {sources[position + 1].value}"
        try:
            return SENSORS[source](index)
        except NvmlUnavailable as err:  # no library/driver: every NVML sensor would fail the same way
            log.warning("gpu%d: %s; GPU energy NOT measured for this device", index, err)
            return None
        except Exception as err:  # SensorUnavailable, or anything a driver/binding mismatch throws
            log.warning("gpu%d: %s unavailable (%s); %s", index, source.value, err, then)
    return None


def discover(request: Request, found: Found) -> None:
    """The best of the requested NVML sources on each GPU that no vendor before covers."""
    for index in request.gpu_indices:
        if found.covers(Component.GPU, f"gpu{index}"):
            continue
        gpu = _gpu_sensor(index, request.gpu_sources)
        if gpu is not None:
            gpu.whole_gpu = request.whole_gpu
            found.sensors.append(gpu)
