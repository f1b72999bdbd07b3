"""A collective's record: the theory half from theory.comm, then the measurement and the
telemetry of every GPU. The columns are the kernel sweep's (bench.core.records), read this way:

- `bytes` is the message size S as nccl-tests prints it, `flops` the additions a reducing
  collective does per rank, `gpus` the ranks;
- `predicted_s` is on the calibrated link (the datasheet's when there is no calibration),
  `predicted_datasheet_s` on the datasheet link; `bound` is `latency` or `link`;
- `achieved_gbps` is nccl-tests' algbw (S / time) and `roof_fraction` is busbw over the link
  bandwidth the prediction used, so busbw = roof_fraction x that bandwidth (also printed in the
  summary); `plan` names the algorithm the theory picked, its steps and bytes per link.
"""

from __future__ import annotations

import dataclasses
import statistics

from roofbench.bench.comm.cases import CommCase
from roofbench.bench.core.records import Record
from roofbench.bench.core.sampling import TimingStats
from roofbench.theory import comm

PROBE_BYTES = 2**28  # the large calibration probe: 256 MiB, or the sweep's largest if smaller
MIN_PROBE_BYTES = 4096


def probe_size(largest_bytes: int) -> int:
    """The large send/recv probe: 256 MiB, or the sweep's largest message when that is smaller
    (but never under 4 KiB, so the two probes differ in bytes)."""
    return max(MIN_PROBE_BYTES, min(PROBE_BYTES, largest_bytes))


def _prediction(case: CommCase, link: comm.Link | None) -> comm.CommPrediction | None:
    if link is None or case.ranks < 2 or case.refuses():
        return None
    return comm.predict(case.collective, case.ranks, case.size_bytes, link)


def comm_record(
    case: CommCase,
    backend: str,
    identity: dict,
    calibrated: comm.Link | None,
    datasheet: comm.Link | None,
) -> Record:
    """The theory half of a case's record."""
    on_datasheet = _prediction(case, datasheet)
    chosen = _prediction(case, calibrated) or on_datasheet
    flops = comm.reduce_flops(case.collective, case.ranks, case.size_bytes, case.dtype)
    plan = ""
    if chosen is not None:
        plan = (
            f"{chosen.algorithm} {case.collective} over {case.ranks} ranks: {chosen.steps} steps, "
            f"{chosen.wire_bytes:.0f} B over each link"
        )
    return Record(
        case=case.id,
        op=case.op,
        impl=backend,
        dtype=case.dtype,
        flops=flops,
        bytes=float(case.size_bytes),
        intensity=flops / case.size_bytes,
        predicted_s=chosen.time_s if chosen else None,
        predicted_datasheet_s=on_datasheet.time_s if on_datasheet else None,
        bound=chosen.bound if chosen else None,
        plan=plan,
        plan_source="theory" if plan else "",
        gpus=case.ranks,
        **{k: identity[k] for k in _IDENTITY if k in identity},
    )


_IDENTITY = ("gpu", "driver", "torch", "triton", "commit", "timestamp", "sweep", "roofbench")


def busbw_bytes_per_s(record: Record) -> float:
    """nccl-tests' bus bandwidth of a measured record."""
    collective = record.op.removeprefix("comm_")
    return comm.busbw_bytes_per_s(collective, record.gpus, record.bytes, record.measured_s)


def _telemetry_fields(summaries: list) -> dict:
    """Every GPU's NVML window in one record: median of the GPUs' median SM clocks, the lowest
    clock, the highest power and temperature, every clock-event reason, throttled if any was."""
    got = [(i, s) for i, s in enumerate(summaries) if s is not None and s.samples]
    if not got:
        return {}
    clocks = [s.median_sm_clock_mhz for _, s in got if s.median_sm_clock_mhz is not None]
    mins = [s.min_sm_clock_mhz for _, s in got if s.min_sm_clock_mhz is not None]
    powers = [s.max_power_w for _, s in got if s.max_power_w is not None]
    temps = [s.max_temperature_c for _, s in got if s.max_temperature_c is not None]
    reasons = sorted({r for _, s in got for r in s.reasons})
    verdicts = [s.throttled for _, s in got if s.throttled is not None]
    throttled = [f"GPU {i}: {s.throttle_reason}" for i, s in got if s.throttled]
    fields = {
        "sm_clock_mhz": statistics.median(clocks) if clocks else None,
        "sm_clock_min_mhz": min(mins) if mins else None,
        "power_w": max(powers) if powers else None,
        "temp_c": max(temps) if temps else None,
        "clock_event_reasons": "|".join(reasons),
        "throttled": any(verdicts) if verdicts else None,
    }
    if throttled:
        fields["reason"] = "throttled: " + "; ".join(throttled)
    return fields


def fill_measurement(
    record: Record, case: CommCase, stats: TimingStats, summaries: list, link: comm.Link | None
) -> Record:
    """Measured time, algbw, busbw's share of `link` (the one the prediction used), error, and
    the GPUs' telemetry."""
    measured_s = stats.median_s
    if not measured_s > 0:
        return dataclasses.replace(record, status="failed", reason="timer returned no time")
    changes = {
        "measured_s": measured_s,
        "p20_s": stats.p20_s,
        "p80_s": stats.p80_s,
        "samples": stats.samples,
        "method": stats.method,
        "achieved_tflops": record.flops / measured_s / 1e12,
        "achieved_gbps": comm.algbw_bytes_per_s(case.size_bytes, measured_s) / 1e9,
    }
    if record.predicted_s:
        changes["error"] = measured_s / record.predicted_s - 1
    if link is not None and case.ranks > 1:
        busbw = comm.busbw_bytes_per_s(case.collective, case.ranks, case.size_bytes, measured_s)
        changes["roof_fraction"] = busbw / link.bandwidth_bytes_per_s
    return dataclasses.replace(record, **changes, **_telemetry_fields(summaries))
