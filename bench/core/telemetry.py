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
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from roofbench.bench.core.nvml_facts import (
    GPM_LEAD_S,
    GPM_METRICS,
    GPM_MIN_WINDOW_S,
    SAMPLE_INTERVAL_S,
    DeviceInfo,
    Sample,
    TelemetrySummary,
    decode_reasons,
    dram_gbps,
    summarize,
)
from roofbench.theory.hardware import theoretical_bandwidth_gbps

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
