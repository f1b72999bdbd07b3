"""The pure half of telemetry: clock-event reason bits, the device facts and samples NVML
gives, and the summary of a window of samples (did the GPU throttle, and why).

No NVML here, so it is tested on the CPU; `bench.core.telemetry` reads the GPU into these.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

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
