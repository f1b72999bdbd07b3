"""The summary's Nsight Compute section: DRAM traffic per profiled case against the compulsory
bytes, from ncu and from NVML's GPM counters side by side."""

from __future__ import annotations

from collections.abc import Sequence

from roofbench.bench.core.records import Record
from roofbench.bench.core.text import fmt, markdown_table
from roofbench.bench.sweep.ncu import NcuKernel


def gpm_excess(record: Record | None) -> float | None:
    """NVML GPM's DRAM bandwidth over the timed one (compulsory bytes / time), the ratio the
    NVML section of the summary shows (None when GPM did not read)."""
    if record is None or not record.nvml_dram_gbps or not record.achieved_gbps:
        return None
    return record.nvml_dram_gbps / record.achieved_gbps


def section(records: Sequence[Record], kernels: Sequence[NcuKernel]) -> list[str]:
    if not kernels:
        return []
    by_key = {(r.case, r.impl): r for r in records if r.status == "ok"}
    groups: dict[tuple[str, str], list[NcuKernel]] = {}
    for k in kernels:
        groups.setdefault((k.case, k.impl), []).append(k)
    rows = []
    for (case, impl), group in groups.items():
        moved = sum(k.dram_read_bytes + k.dram_write_bytes for k in group)
        compulsory = group[0].compulsory_bytes
        record = by_key.get((case, impl))
        rows.append(
            [
                f"`{case}`",
                impl,
                str(len(group)),
                fmt(sum(k.duration_s for k in group) * 1e6, ".3g"),
                fmt(record.measured_s * 1e6 if record else None, ".3g"),
                fmt(moved / 1e6, ".4g"),
                fmt(compulsory / 1e6, ".4g"),
                fmt(moved / compulsory if compulsory else None, ".3f"),
                fmt(gpm_excess(record), ".3f"),
            ]
        )
    header = ["case", "impl", "kernels", "ncu us", "timed us", "DRAM MB", "compulsory MB",
              "excess (ncu)", "excess (GPM)"]  # fmt: skip
    return [
        "## Nsight Compute cross-check",
        "",
        "Each case profiled once by `ncu --cache-control all --clock-control none` (every kernel "
        "of one call, replayed cold and alone): excess = DRAM bytes read + written / the "
        "compulsory bytes of theory.ops; GPM's excess = NVML's DRAM bandwidth over the timed "
        "window x the measured time / the compulsory bytes.",
        "",
        *markdown_table(header, rows),
    ]
