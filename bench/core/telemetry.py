"""NVML telemetry: what the GPU was doing while a kernel was timed.

Three things, all through nvidia-ml-py (module `pynvml`):

- `DeviceInfo`: name, UUID, driver, max clocks, power limit, bus width and the theoretical DRAM
  bandwidth they imply (`theory.hardware.theoretical_bandwidth_gbps`).
- `Telemetry.window()`: a background thread samples SM and memory clocks, power, temperature and
  the clock-event reasons every ~15 ms while a measurement runs; `summary()` says whether the GPU
  throttled (SM clock under 75% of its max, as nvbench counts it, or a power or thermal reason set).
  A datasheet peak is quoted at the boost clock, so a power-capped GEMM must say it was capped.
- `Telemetry.gpm_window(fn)`: GPU Performance Monitoring counters (DRAM bandwidth utilisation,
  tensor-core utilisation, SM occupancy) over a window of at least 100 ms, which GPM needs
  between its two samples; `fn` is repeated to fill it. DRAM utilisation x theoretical bandwidth
  is a bandwidth measured by the hardware, independent of the timer and of our byte counts.

Telemetry never stops a run: without pynvml, without a GPU, or where a query is not supported,
fields are None and a `missing` string says why.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from roofbench.theory.hardware import theoretical_bandwidth_gbps

SAMPLE_INTERVAL_S = 0.015
# nvbench discards samples taken below 75% of the default SM clock as throttled.
SLOW_CLOCK_FRACTION = 0.75
GPM_MIN_WINDOW_S = 0.1
# Work run before the first GPM sample, because the counters lag (see `gpm_window`).
GPM_LEAD_S = 0.2

# Clock-event reason bits: (short name, pynvml constant, bit value NVML documents). The constant
# is used where the installed pynvml has it; the numeric bit otherwise.
REASON_BITS: tuple[tuple[str, str, int], ...] = (
    ("gpu_idle", "nvmlClocksEventReasonGpuIdle", 0x1),
    ("applications_clocks_setting", "nvmlClocksEventReasonApplicationsClocksSetting", 0x2),
    ("sw_power_cap", "nvmlClocksEventReasonSwPowerCap", 0x4),
    ("hw_slowdown", "nvmlClocksEventReasonHwSlowdown", 0x8),
    ("sync_boost", "nvmlClocksEventReasonSyncBoost", 0x10),
    ("sw_thermal_slowdown", "nvmlClocksEventReasonSwThermalSlowdown", 0x20),
    ("hw_thermal_slowdown", "nvmlClocksEventReasonHwThermalSlowdown", 0x40),
    ("hw_power_brake_slowdown", "nvmlClocksEventReasonHwPowerBrakeSlowdown", 0x80),
    ("display_clock_setting", "nvmlClocksEventReasonDisplayClockSetting", 0x100),
)
# Reasons that mean the clock was held down by power or heat (not by idleness or a setting).
THROTTLE_REASONS = frozenset(
    {
        "sw_power_cap",
        "hw_slowdown",
        "sw_thermal_slowdown",
        "hw_thermal_slowdown",
        "hw_power_brake_slowdown",
    }
)

# GPM metrics read in every window: result field -> pynvml constant (all are percentages).
GPM_METRICS: dict[str, str] = {
    "dram_bw_util_pct": "NVML_GPM_METRIC_DRAM_BW_UTIL",
    "any_tensor_util_pct": "NVML_GPM_METRIC_ANY_TENSOR_UTIL",
    "sm_occupancy_pct": "NVML_GPM_METRIC_SM_OCCUPANCY",
}


# --- pure helpers ------------------------------------------------------------------------------


def reason_bits(nvml: Any = None) -> dict[str, int]:
    """Short name -> bit, from `nvml`'s constants where it has them."""
    return {name: getattr(nvml, const, bit) for name, const, bit in REASON_BITS}


def decode_reasons(mask: int, nvml: Any = None) -> tuple[str, ...]:
    """Names of the bits set in a clock-event reason mask; unknown bits as `unknown_0x...`."""
    names, known = [], 0
    for name, bit in reason_bits(nvml).items():
        known |= bit
        if mask & bit:
            names.append(name)
    rest = mask & ~known
    bit = 1
    while rest:
        if rest & bit:
            names.append(f"unknown_{bit:#x}")
            rest &= ~bit
        bit <<= 1
    return tuple(names)


def dram_gbps(util_pct: float | None, theoretical_gbps: float | None) -> float | None:
    """Bandwidth from GPM's DRAM utilisation (percent of the theoretical peak)."""
    if util_pct is None or theoretical_gbps is None:
        return None
    return util_pct / 100 * theoretical_gbps


@dataclass(frozen=True)
class DeviceInfo:
    """What NVML says about the GPU. Fields NVML could not give are None; `missing` says why."""

    name: str | None = None
    uuid: str | None = None
    driver_version: str | None = None
    max_sm_clock_mhz: int | None = None
    max_mem_clock_mhz: int | None = None
    power_limit_w: float | None = None
    bus_width_bits: int | None = None
    theoretical_gbps: float | None = None
    missing: str | None = None


@dataclass(frozen=True)
class Sample:
    """One reading. `time_s` is a host monotonic time; any field NVML refused is None."""

    time_s: float
    sm_clock_mhz: int | None = None
    mem_clock_mhz: int | None = None
    power_w: float | None = None
    temperature_c: int | None = None
    reasons_mask: int | None = None
    reasons: tuple[str, ...] = ()

    @property
    def idle(self) -> bool:
        return "gpu_idle" in self.reasons


@dataclass(frozen=True)
class TelemetrySummary:
    """A window's readings in brief; `throttled` is None when it cannot be told."""

    samples: int = 0
    median_sm_clock_mhz: float | None = None
    min_sm_clock_mhz: int | None = None
    max_sm_clock_mhz: int | None = None
    median_mem_clock_mhz: float | None = None
    max_power_w: float | None = None
    max_temperature_c: int | None = None
    reasons_mask: int | None = None
    reasons: tuple[str, ...] = ()
    throttled: bool | None = None
    throttle_reason: str = ""
    missing: str | None = None


def summarize(
    samples: list[Sample], max_sm_clock_mhz: int | None, nvml: Any = None
) -> TelemetrySummary:
    """Median and extremes over `samples`, the union of reasons, and the throttle verdict.

    Clock figures use the samples where the GPU was busy (no `gpu_idle` reason): an idle GPU
    drops its clock by design, and a window's first and last readings may fall between kernels.
    Throttled = a busy sample's SM clock under 75% of the max SM clock, or any power or thermal
    reason set during the window.
    """
    if not samples:
        return TelemetrySummary(max_sm_clock_mhz=max_sm_clock_mhz, missing="no samples taken")
    busy = [s for s in samples if not s.idle]
    sm = [s.sm_clock_mhz for s in busy or samples if s.sm_clock_mhz is not None]
    mem = [s.mem_clock_mhz for s in busy or samples if s.mem_clock_mhz is not None]
    power = [s.power_w for s in samples if s.power_w is not None]
    temps = [s.temperature_c for s in samples if s.temperature_c is not None]
    masks = [s.reasons_mask for s in samples if s.reasons_mask is not None]
    mask = None
    if masks:
        mask = 0
        for m in masks:
            mask |= m
    reasons = decode_reasons(mask, nvml) if mask is not None else ()

    why = []
    busy_sm = [s.sm_clock_mhz for s in busy if s.sm_clock_mhz is not None]
    if busy_sm and max_sm_clock_mhz:
        lowest = min(busy_sm)
        if lowest < SLOW_CLOCK_FRACTION * max_sm_clock_mhz:
            why.append(
                f"SM clock fell to {lowest} MHz, {lowest / max_sm_clock_mhz:.0%} of max "
                f"{max_sm_clock_mhz} MHz"
            )
    capping = [r for r in reasons if r in THROTTLE_REASONS]
    if capping:
        why.append("clock-event reasons: " + ", ".join(capping))
    known = bool(busy_sm and max_sm_clock_mhz) or mask is not None
    return TelemetrySummary(
        samples=len(samples),
        median_sm_clock_mhz=statistics.median(sm) if sm else None,
        min_sm_clock_mhz=min(sm) if sm else None,
        max_sm_clock_mhz=max_sm_clock_mhz,
        median_mem_clock_mhz=statistics.median(mem) if mem else None,
        max_power_w=max(power) if power else None,
        max_temperature_c=max(temps) if temps else None,
        reasons_mask=mask,
        reasons=reasons,
        throttled=bool(why) if known else None,
        throttle_reason="; ".join(why),
    )


# --- NVML access -------------------------------------------------------------------------------


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _handle(nvml: Any, index: int) -> Any:
    """NVML handle of CUDA device `index`.

    CUDA and NVML may number GPUs differently (CUDA_VISIBLE_DEVICES, CUDA_DEVICE_ORDER), so the
    handle is looked up by the UUID torch reports when it can be, by index otherwise.
    """
    try:
        import torch

        if torch.cuda.is_available():
            uuid = str(torch.cuda.get_device_properties(index).uuid)
            uuid = uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"
            return nvml.nvmlDeviceGetHandleByUUID(uuid)
    except Exception:  # any failure here just means: fall back to the NVML index
        pass
    return nvml.nvmlDeviceGetHandleByIndex(index)


class Telemetry:
    """NVML access for one GPU (CUDA device `index`); use as a context manager or call close().

    `available` is False (and `missing` says why) when pynvml, the driver or the GPU is absent;
    every method then returns empty results instead of raising.
    """

    def __init__(self, index: int = 0, interval_s: float = SAMPLE_INTERVAL_S):
        self.index = index
        self.interval_s = interval_s
        self.missing: str | None = None
        self._nvml: Any = None
        self._handle: Any = None
        self._info: DeviceInfo | None = None
        try:
            import pynvml
        except ImportError:
            self.missing = "nvidia-ml-py (module pynvml) is not installed"
            return
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as err:
            self.missing = f"NVML could not start: {err}"
            return
        try:
            self._handle = _handle(pynvml, index)
        except pynvml.NVMLError as err:
            pynvml.nvmlShutdown()
            self.missing = f"NVML has no GPU {index}: {err}"
            return
        self._nvml = pynvml

    @property
    def available(self) -> bool:
        return self._nvml is not None

    def close(self) -> None:
        if self._nvml is not None:
            with suppress(self._nvml.NVMLError):
                self._nvml.nvmlShutdown()
            self._nvml = None

    def __enter__(self) -> Telemetry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _query(self, name: str, *args: Any) -> Any:
        """`pynvml.<name>(handle, *args)`, or None where NVML refuses or the binding lacks it."""
        try:
            return getattr(self._nvml, name)(self._handle, *args)
        except (self._nvml.NVMLError, AttributeError):
            return None

    def info(self) -> DeviceInfo:
        """Static facts of the GPU (read once, then cached)."""
        if not self.available:
            return DeviceInfo(missing=self.missing)
        if self._info is None:
            nvml = self._nvml
            name = self._query("nvmlDeviceGetName")
            uuid = self._query("nvmlDeviceGetUUID")
            try:
                driver = _text(nvml.nvmlSystemGetDriverVersion())
            except (nvml.NVMLError, AttributeError):
                driver = None
            limit_mw = self._query("nvmlDeviceGetEnforcedPowerLimit")
            if limit_mw is None:
                limit_mw = self._query("nvmlDeviceGetPowerManagementLimit")
            max_mem = self._query("nvmlDeviceGetMaxClockInfo", nvml.NVML_CLOCK_MEM)
            bus = self._query("nvmlDeviceGetMemoryBusWidth")
            self._info = DeviceInfo(
                name=_text(name) if name is not None else None,
                uuid=_text(uuid) if uuid is not None else None,
                driver_version=driver,
                max_sm_clock_mhz=self._query("nvmlDeviceGetMaxClockInfo", nvml.NVML_CLOCK_SM),
                max_mem_clock_mhz=max_mem,
                power_limit_w=limit_mw / 1000 if limit_mw is not None else None,
                bus_width_bits=bus,
                theoretical_gbps=theoretical_bandwidth_gbps(bus, max_mem)
                if bus and max_mem
                else None,
            )
        return self._info

    def sample(self) -> Sample | None:
        """One reading now, or None without NVML."""
        if not self.available:
            return None
        nvml = self._nvml
        power_mw = self._instant_power_mw()
        if power_mw is None:
            power_mw = self._query("nvmlDeviceGetPowerUsage")
        mask = self._query("nvmlDeviceGetCurrentClocksEventReasons")
        return Sample(
            time_s=time.monotonic(),
            sm_clock_mhz=self._query("nvmlDeviceGetClockInfo", nvml.NVML_CLOCK_SM),
            mem_clock_mhz=self._query("nvmlDeviceGetClockInfo", nvml.NVML_CLOCK_MEM),
            power_w=power_mw / 1000 if power_mw is not None else None,
            temperature_c=self._query("nvmlDeviceGetTemperature", nvml.NVML_TEMPERATURE_GPU),
            reasons_mask=mask,
            reasons=decode_reasons(mask, nvml) if mask is not None else (),
        )

    def _instant_power_mw(self) -> int | None:
        """Instantaneous board power in mW, or None where NVML lacks the field.

        nvmlDeviceGetPowerUsage averages over about a second on recent GPUs: seen on an H200,
        it read 452 W with the GPU idle after a burst of copies, when the instant field read
        127 W. A window of tens of milliseconds needs the instant value.
        """
        field_id = getattr(self._nvml, "NVML_FI_DEV_POWER_INSTANT", None)
        if field_id is None:
            return None
        values = self._query("nvmlDeviceGetFieldValues", [field_id])
        if not values or values[0].nvmlReturn != getattr(self._nvml, "NVML_SUCCESS", 0):
            return None
        return values[0].value.uiVal

    @contextmanager
    def window(self) -> Iterator[Window]:
        """Sample in the background for the duration of the `with` block."""
        win = Window(self)
        win.start()
        try:
            yield win
        finally:
            win.stop()

    def gpm_window(
        self,
        fn: Callable[[], object],
        min_s: float = GPM_MIN_WINDOW_S,
        *,
        lead_s: float = GPM_LEAD_S,
        sync: Callable[[], object] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> GpmResult:
        """GPM metrics over repeated calls of `fn` filling at least `min_s` (GPM needs 100 ms).

        `fn` first runs for `lead_s` before the first GPM sample: GPM's counters lag the work.
        Seen on an H200 (a 1 GiB copy that events time at 87.7% of the theoretical bandwidth):
        a 100 ms window begun on an idle GPU read 0% and 45% DRAM utilisation, a 1 s one 75%;
        after 200 ms of the same copy before the first sample, a 100 ms window read 88.0%.
        Calls are queued in batches sized from the time per call so far, synchronizing after
        each batch; the second sample follows the last synchronize. For kernels shorter than
        their host launch the GPU idles between calls, and the utilisations read low.
        """
        missing = self._gpm_missing()
        if missing:
            return GpmResult(missing=missing)
        sync = sync or _cuda_sync
        nvml = self._nvml
        began = clock()
        fn()
        sync()
        per_call_s = max(clock() - began, 1e-7)
        first = second = None
        try:
            first, second = nvml.nvmlGpmSampleAlloc(), nvml.nvmlGpmSampleAlloc()
            _, per_call_s = _repeat_for(fn, lead_s, per_call_s, sync, clock)
            nvml.nvmlGpmSampleGet(self._handle, first)
            began = clock()
            calls, _ = _repeat_for(fn, min_s, per_call_s, sync, clock)
            nvml.nvmlGpmSampleGet(self._handle, second)
            window_s = clock() - began
            values = _gpm_metrics(nvml, first, second)
        except nvml.NVMLError as err:
            return GpmResult(missing=f"GPM sampling failed: {err}")
        finally:
            for gpm_sample in (first, second):
                if gpm_sample is not None:
                    with suppress(nvml.NVMLError):
                        nvml.nvmlGpmSampleFree(gpm_sample)
        util = values.get("dram_bw_util_pct")
        return GpmResult(
            window_s=window_s,
            calls=calls,
            dram_gbps=dram_gbps(util, self.info().theoretical_gbps),
            **values,
        )

    def _gpm_missing(self) -> str | None:
        if not self.available:
            return self.missing
        nvml = self._nvml
        if not hasattr(nvml, "nvmlGpmQueryDeviceSupport"):
            return "this pynvml has no GPM functions"
        try:
            supported = nvml.nvmlGpmQueryDeviceSupport(self._handle).isSupportedDevice
        except nvml.NVMLError as err:
            return f"GPM support query failed: {err}"
        return None if supported else "GPM is not supported on this GPU"


@dataclass(frozen=True)
class GpmResult:
    """GPM metrics over one window (percentages 0-100); None where not read, with `missing`."""

    window_s: float | None = None
    calls: int = 0
    dram_bw_util_pct: float | None = None
    any_tensor_util_pct: float | None = None
    sm_occupancy_pct: float | None = None
    dram_gbps: float | None = None
    missing: str | None = None

    @property
    def per_call_s(self) -> float | None:
        """Host time per call over the window: with the queue kept full, the sustained GPU time."""
        return self.window_s / self.calls if self.window_s and self.calls else None


def _gpm_metrics(nvml: Any, first: Any, second: Any) -> dict[str, float | None]:
    """Read GPM_METRICS from a pair of samples; a metric NVML rejects (or lacks) is None."""
    wanted = {
        key: getattr(nvml, const) for key, const in GPM_METRICS.items() if hasattr(nvml, const)
    }
    request = nvml.c_nvmlGpmMetricsGet_t()
    request.version = nvml.NVML_GPM_METRICS_GET_VERSION
    request.numMetrics = len(wanted)
    request.sample1 = first
    request.sample2 = second
    for i, metric_id in enumerate(wanted.values()):
        request.metrics[i].metricId = metric_id
    nvml.nvmlGpmMetricsGet(request)
    values: dict[str, float | None] = dict.fromkeys(GPM_METRICS)
    for i, key in enumerate(wanted):
        metric = request.metrics[i]
        if metric.nvmlReturn == getattr(nvml, "NVML_SUCCESS", 0):
            values[key] = float(metric.value)
    return values


def _repeat_for(
    fn: Callable[[], object],
    seconds: float,
    per_call_s: float,
    sync: Callable[[], object],
    clock: Callable[[], float],
) -> tuple[int, float]:
    """Call `fn` until `seconds` of host time pass (synchronized); returns (calls, s per call).

    Each batch is sized to fill what is left, with 10% to spare, so the GPU queue stays full
    and there are few synchronizes (each leaves the GPU idle for a launch latency).
    """
    began, calls = clock(), 0
    while (elapsed_s := clock() - began) < seconds:
        batch = max(1, math.ceil(1.1 * (seconds - elapsed_s) / per_call_s))
        for _ in range(batch):
            fn()
        sync()
        calls += batch
        per_call_s = max((clock() - began) / calls, 1e-7)
    return calls, per_call_s


def _cuda_sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


class Window:
    """Readings taken by a background thread every `interval_s`, plus one at each end."""

    def __init__(self, telemetry: Telemetry):
        self.telemetry = telemetry
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._max_sm_clock_mhz: int | None = None
        self._nvml: Any = None

    def _take(self) -> None:
        reading = self.telemetry.sample()
        if reading is not None:
            self.samples.append(reading)

    def _run(self) -> None:
        while not self._stop.wait(self.telemetry.interval_s):
            self._take()

    def start(self) -> None:
        if not self.telemetry.available:
            return
        self._max_sm_clock_mhz = self.telemetry.info().max_sm_clock_mhz
        self._nvml = self.telemetry._nvml
        self._take()
        # A daemon thread: a sampler must never keep the process alive.
        self._thread = threading.Thread(target=self._run, name="roofbench-telemetry", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        self._take()

    def summary(self) -> TelemetrySummary:
        if not self.samples and self.telemetry.missing:
            return TelemetrySummary(missing=self.telemetry.missing)
        return summarize(list(self.samples), self._max_sm_clock_mhz, self._nvml)
