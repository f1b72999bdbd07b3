"""`summary.md`: one run's records held against its roofs, as Markdown for people.

Sections: the run (GPU, versions, time span, sweep), the two roofs and the measured ceilings, the
error of each (op, implementation) against the measured roof, our kernels against the reference,
the GEMM ridge (measured vs predicted M), NVML against timed bandwidth, throttling, and the cases
that were skipped or failed.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime

import numpy as np

from roofbench.bench.core.nvml_facts import THROTTLE_REASONS, decode_reasons
from roofbench.bench.core.records import Record
from roofbench.bench.core.text import NONE, fmt, markdown_table, median, pct, quantile
from roofbench.bench.sweep import ncu_report, tiers_report
from roofbench.theory import ops
from roofbench.theory.analysis import RIDGE_TIME_FACTOR, measured_ridge_m, predicted_ridge_m
from roofbench.theory.roofline import Roof

DEFAULT_BASELINE = "torch"  # the baseline of an op whose run recorded none
KERNEL_OPS = ("gemm", "gemv", "prefill_attention", "decode_attention")
CEILING_OPS = ("copy", "matmul")
LINEAR_OPS = ("gemm", "gemv")

MAX_LISTED = 20  # skipped/failed lines printed before "... and N more"


def _op_order(op: str) -> tuple[int, str]:
    known = KERNEL_OPS + CEILING_OPS
    return (known.index(op) if op in known else len(known), op)


def _measured(record: Record) -> bool:
    return record.status == "ok" and record.measured_s is not None and record.measured_s > 0


# ----------------------------------------------------------------------------- run and roofs


def _values(records: Sequence[Record], name: str) -> str:
    """The distinct non-empty values of one field, most common first."""
    counts = Counter(getattr(r, name) for r in records if getattr(r, name))
    return ", ".join(value for value, _ in counts.most_common()) or NONE


def _parse_time(text: str) -> datetime | None:
    try:
        # Python 3.10 does not read a trailing "Z".
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _time_span(records: Sequence[Record]) -> str:
    stamps = sorted({r.timestamp for r in records if r.timestamp})
    if not stamps:
        return NONE
    times = [_parse_time(s) for s in stamps]
    try:
        if None not in times:
            first, last = min(times), max(times)
            return f"{first.isoformat()} to {last.isoformat()} ({last - first})"
    except TypeError:  # naive and aware timestamps mixed: fall back to the text
        pass
    return f"{stamps[0]} to {stamps[-1]}"


def _run_section(records: Sequence[Record]) -> list[str]:
    return [
        f"- GPU: {_values(records, 'gpu')}",
        f"- driver: {_values(records, 'driver')}; torch: {_values(records, 'torch')}; "
        f"triton: {_values(records, 'triton')}",
        f"- commit: {_values(records, 'commit')}",
        f"- time: {_time_span(records)}",
        f"- sweep: {_values(records, 'sweep')}",
        f"- records: {len(records)}",
    ]


def _roof_row(name: str, roof: Roof | None, datasheet: Roof | None) -> list[str]:
    if roof is None:
        return [name] + [NONE] * 5
    peak_share = bw_share = None
    if datasheet is not None:
        peak_share = roof.peak_flops / datasheet.peak_flops
        bw_share = roof.bandwidth_bytes_per_s / datasheet.bandwidth_bytes_per_s
    return [
        name,
        fmt(roof.peak_flops, ".1f", 1e-12) + f" ({pct(peak_share)})",
        fmt(roof.bandwidth_bytes_per_s, ".0f", 1e-9) + f" ({pct(bw_share)})",
        fmt(roof.ridge, ".0f"),
        fmt(roof.launch_s, ".1f", 1e6),
        roof.source,
    ]


def _roofs_section(datasheet: Roof | None, measured: Roof | None, ceilings) -> list[str]:
    lines = ["## Roofs", ""]
    headers = ["roof", "peak TFLOP/s (of datasheet)", "GB/s (of datasheet)", "ridge FLOP/byte"]
    headers += ["launch floor (us)", "source"]
    rows = [
        _roof_row("datasheet", datasheet, datasheet),
        _roof_row("measured", measured, datasheet),
    ]
    lines += markdown_table(headers, rows)
    lines += ["", *_ceiling_lines(ceilings, datasheet)]
    return lines


def _ceiling_lines(ceilings, datasheet: Roof | None) -> list[str]:
    """Each measured ceiling, as a share of the datasheet figure of the same kind.

    `ceilings` is a dict or an object with the same names as attributes; absent keys are skipped.
    """
    bandwidth_gbps = datasheet.bandwidth_bytes_per_s / 1e9 if datasheet else None
    peak_tflops = datasheet.peak_flops / 1e12 if datasheet else None
    known = {
        "copy_gbps": ("copy", "GB/s", bandwidth_gbps),
        "read_gbps": ("read", "GB/s", bandwidth_gbps),
        "matmul_tflops": ("matmul", "TFLOP/s", peak_tflops),
    }
    lines = []
    for key, (name, unit, reference) in known.items():
        value = _ceiling(ceilings, key)
        if value is None:
            continue
        share = f" ({pct(value / reference)} of datasheet)" if reference else ""
        lines.append(f"- measured {name}: {fmt(value, '.1f')} {unit}{share}")
    launch_s = _ceiling(ceilings, "launch_s")
    if launch_s is not None:
        lines.append(f"- measured launch floor: {fmt(launch_s, '.2f', 1e6)} us")
    return lines or ["- no measured ceilings"]


def _ceiling(ceilings, key: str) -> float | None:
    if ceilings is None:
        return None
    if isinstance(ceilings, Mapping):
        return ceilings.get(key)
    return getattr(ceilings, key, None)


# ----------------------------------------------------------------------------- accuracy, speed-up


def _accuracy_section(records: Sequence[Record]) -> list[str]:
    groups: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for r in records:
        if r.op not in CEILING_OPS:
            groups[(r.op, r.impl)].append(r)
    headers = ["op", "impl", "ok", "skipped", "failed", "median abs error", "p90 abs error"]
    headers += ["median roof fraction", "median TFLOP/s", "median GB/s"]
    rows = []
    for (op, impl), group in sorted(groups.items(), key=lambda kv: (_op_order(kv[0][0]), kv[0])):
        status = Counter(r.status for r in group)
        timed = [r for r in group if _measured(r)]
        errors = [abs(r.error) for r in timed if r.error is not None]
        rows.append(
            [
                op,
                impl,
                status["ok"],
                status["skipped"],
                status["failed"],
                pct(median(errors)),
                pct(quantile(errors, 0.9)),
                pct(median(r.roof_fraction for r in timed)),
                fmt(median(r.achieved_tflops for r in timed), ".1f"),
                fmt(median(r.achieved_gbps for r in timed), ".0f"),
            ]
        )
    lines = ["## Measured vs predicted", ""]
    if not rows:
        return lines + ["No kernel records."]
    lines += [
        "error = measured / predicted - 1, against the top tier of the tiered model where the "
        "run was calibrated (else the measured roof's roofline); roof fraction = roofline time "
        "/ measured time.",
        "",
    ]
    return lines + markdown_table(headers, rows)


def baseline_names(
    records: Sequence[Record], baselines: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The baseline implementation of each op in `records`: as the run recorded it
    (`baselines`), else as the registry declares it, else `torch`."""
    from roofbench.kernels import catalog

    names = {}
    for op in {r.op for r in records if r.op not in CEILING_OPS}:
        name = (baselines or {}).get(op)
        if name is None:
            try:
                found = catalog.baseline(op)
            except KeyError:  # an op this installation does not know (a plugin's)
                found = None
            name = found.name if found else DEFAULT_BASELINE
        names[op] = name
    return names


def speedups(
    records: Sequence[Record], baselines: Mapping[str, str] | None = None
) -> dict[tuple[str, str], list[float]]:
    """Per (op, implementation), baseline time / its time over each case both measured
    (> 1: faster than the baseline)."""
    names = baseline_names(records, baselines)
    times: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for r in records:
        if _measured(r) and r.op not in CEILING_OPS:
            times[(r.op, r.case)][r.impl] = r.measured_s
    ratios: dict[tuple[str, str], list[float]] = defaultdict(list)
    for (op, _), by_impl in times.items():
        base = by_impl.get(names[op])
        if base is None:
            continue
        for impl, t in by_impl.items():
            if impl != names[op]:
                ratios[(op, impl)].append(base / t)
    return dict(ratios)


def _speedup_section(records: Sequence[Record], baselines: Mapping[str, str] | None) -> list[str]:
    lines = ["## Every implementation vs the baseline", ""]
    ratios = speedups(records, baselines)
    if not ratios:
        return lines + ["No case was measured with both an implementation and its baseline."]
    lines += [
        "speed-up = baseline time / implementation time over the cases both measured; > 1: "
        "faster than the baseline.",
        "",
    ]
    names = baseline_names(records, baselines)
    rows = [
        [op, impl, names[op], len(r), fmt(median(r), ".2f"), fmt(min(r), ".2f"), fmt(max(r), ".2f")]
        for (op, impl), r in sorted(ratios.items(), key=lambda kv: (_op_order(kv[0][0]), kv[0]))
    ]
    headers = ["op", "impl", "baseline", "matched cases", "median speed-up", "min", "max"]
    return lines + markdown_table(headers, rows)


def linear_series(records: Sequence[Record]) -> dict[tuple[int, int, str, str], list[Record]]:
    """GEMM/GEMV records grouped by weight shape and implementation: (n, k, dtype, impl) -> by M."""
    series: dict[tuple[int, int, str, str], list[Record]] = defaultdict(list)
    for r in records:
        if r.op in LINEAR_OPS and None not in (r.m, r.n, r.k):
            series[(r.n, r.k, r.dtype, r.impl)].append(r)
    return {key: sorted(rs, key=lambda r: r.m) for key, rs in series.items()}


def _median_time_by_m(series: Sequence[Record]) -> dict[int, float]:
    by_m: dict[int, list[float]] = defaultdict(list)
    for r in series:
        if _measured(r):
            by_m[r.m].append(r.measured_s)
    return {m: float(np.median(ts)) for m, ts in by_m.items()}


def _swept_predicted_m(ms: Sequence[int], n: int, k: int, dtype: str, roof: Roof) -> int | None:
    return next((m for m in ms if ops.gemm(m, n, k, dtype).intensity >= roof.ridge), None)


def _ridge_section(records: Sequence[Record], roof: Roof | None, roof_name: str) -> list[str]:
    lines = ["## GEMM ridge: where time stops being flat in M", ""]
    series = {key: rs for key, rs in linear_series(records).items() if len({r.m for r in rs}) > 1}
    if not series:
        return lines + ["No GEMM/GEMV sweep over M."]
    lines += [
        f"Measured ridge M: the smallest swept M whose median time exceeds {RIDGE_TIME_FACTOR}x "
        "the time at the smallest swept M (memory- and launch-bound linears take about the same "
        "time for every M, so the first clear rise marks the switch to compute). Predicted ridge "
        f"M: the smallest M whose GEMM intensity reaches the {roof_name} roof's ridge "
        f"({fmt(roof.ridge if roof else None, '.0f')} FLOP/byte), i.e. where predicted compute "
        "time overtakes memory time; shown as the first swept M and as the exact M.",
        "",
    ]
    headers = ["n", "k", "dtype", "impl", "M swept", "time at smallest M (us)", "measured ridge M"]
    headers += ["predicted ridge M (swept)", "predicted ridge M (exact)"]
    rows = []
    for (n, k, dtype, impl), rs in sorted(series.items()):
        ms = sorted({r.m for r in rs})
        times = _median_time_by_m(rs)
        measured = measured_ridge_m(times)
        if measured is None:
            measured_text = f"> {max(times)}" if len(times) > 1 else NONE
        else:
            measured_text = str(measured)
        swept, exact = _predicted_ms(ms, n, k, dtype, roof)
        first = times[min(times)] if times else None
        rows.append(
            [n, k, dtype, impl, f"{ms[0]}..{ms[-1]} ({len(ms)})", fmt(first, ".1f", 1e6)]
            + [measured_text, swept, exact]
        )
    return lines + markdown_table(headers, rows)


def _predicted_ms(ms: Sequence[int], n: int, k: int, dtype: str, roof: Roof | None):
    """(first swept M at the ridge, exact M at the ridge) as text."""
    if roof is None:
        return NONE, NONE
    try:
        swept = _swept_predicted_m(ms, n, k, dtype, roof)
        exact = predicted_ridge_m(n, k, dtype, roof)
    except ValueError:  # a dtype theory does not know
        return NONE, NONE
    swept_text = f"> {ms[-1]}" if swept is None else str(swept)
    return swept_text, "never" if exact is None else str(exact)


# ----------------------------------------------------------------------------- NVML, throttling


def _nvml_section(records: Sequence[Record]) -> list[str]:
    lines = ["## NVML DRAM bandwidth vs timed bandwidth", ""]
    paired = [
        r
        for r in records
        if _measured(r) and r.nvml_dram_gbps is not None and (r.achieved_gbps or 0) > 0
    ]
    if not paired:
        return lines + ["No record has both an NVML DRAM reading and a timed bandwidth."]
    lines += [
        "ratio = NVML DRAM GB/s / timed GB/s (compulsory bytes / time). Above 1: the kernel moved "
        "more than the compulsory bytes. Below 1 on short kernels: NVML averages their traffic "
        "over a longer sampling window.",
        "",
    ]
    by_op: dict[str, list[Record]] = defaultdict(list)
    for r in paired:
        by_op[r.op].append(r)
    rows = [
        [
            op,
            len(rs),
            fmt(median(r.nvml_dram_gbps for r in rs), ".0f"),
            fmt(median(r.achieved_gbps for r in rs), ".0f"),
            fmt(median(r.nvml_dram_gbps / r.achieved_gbps for r in rs), ".2f"),
        ]
        for op, rs in sorted(by_op.items(), key=lambda kv: _op_order(kv[0]))
    ]
    headers = ["op", "records", "median NVML GB/s", "median timed GB/s", "median ratio"]
    lines += markdown_table(headers, rows)
    for r in by_op.get("copy", []):
        lines.append(
            f"\ncopy `{r.case}`: timed {fmt(r.achieved_gbps, '.0f')} GB/s, NVML "
            f"{fmt(r.nvml_dram_gbps, '.0f')} GB/s, ratio {r.nvml_dram_gbps / r.achieved_gbps:.3f}"
        )
    return lines


def clock_reasons(text: str | None) -> list[str]:
    """Reason names from a stored clock-event field: an NVML mask (hex or decimal) or names."""
    names: list[str] = []
    for token in re.split(r"[\s,;|+]+", (text or "").strip()):
        if not token or token.lower() == "none":
            continue
        try:
            names += decode_reasons(int(token, 0))
        except ValueError:
            names.append(token)
    return names


def _throttle_section(records: Sequence[Record]) -> list[str]:
    lines = ["## Throttling", ""]
    timed = [r for r in records if _measured(r)]
    if not timed:
        return lines + ["No measurements."]
    throttled = sum(1 for r in timed if r.throttled)
    reasons = Counter()
    capped = 0
    for r in timed:
        names = set(clock_reasons(r.clock_event_reasons))
        capped += bool(names & THROTTLE_REASONS)
        reasons.update(names)
    clocks = [c for r in timed for c in (r.sm_clock_min_mhz, r.sm_clock_mhz) if c is not None]
    listed = ", ".join(f"{name} ({count})" for name, count in reasons.most_common()) or NONE
    return lines + [
        f"- measurements: {len(timed)}; marked throttled: {throttled}; "
        f"with a power or thermal clock-event reason: {capped}",
        f"- reasons seen (measurements): {listed}",
        f"- lowest SM clock seen: {fmt(min(clocks) if clocks else None, '.0f')} MHz",
    ]


def _problems_section(records: Sequence[Record]) -> list[str]:
    lines = ["## Skipped and failed", ""]
    problems = [r for r in records if r.status != "ok"]
    if not problems:
        return lines + ["None."]
    problems.sort(key=lambda r: (r.status, _op_order(r.op), r.case, r.impl))
    for r in problems[:MAX_LISTED]:
        lines.append(f"- {r.status}: `{r.case}` {r.op} {r.impl} {r.dtype}: {r.reason or NONE}")
    if len(problems) > MAX_LISTED:
        lines.append(f"- ... and {len(problems) - MAX_LISTED} more")
    return lines


# ----------------------------------------------------------------------------- the document


def summarize(
    records: Sequence[Record],
    datasheet_roof: Roof | None,
    measured_roof: Roof | None,
    ceilings: Mapping | object | None = None,
    note: str = "",
    baselines: Mapping[str, str] | None = None,
    calibration: dict | None = None,
    ncu: Sequence | None = None,
) -> str:
    """The Markdown of `summary.md` for one run; `note` is shown first (e.g. "predictions only").

    `ceilings` holds copy_gbps, read_gbps, matmul_tflops and launch_s, as a dict or as attributes
    (`bench.core.ceilings.Ceilings`); any that is missing is left out. `baselines`: op -> the
    implementation the others are compared against (default: the registry's). `calibration`:
    the run's calibration document, for the tiered model's sections. `ncu`: the kernels
    `run --ncu` profiled (bench.sweep.ncu.NcuKernel).
    """
    records = list(records)
    lines = ["# roofbench summary", ""]
    if note:
        lines += [f"> {note}", ""]
    sections = [
        _run_section(records),
        _roofs_section(datasheet_roof, measured_roof, ceilings),
        _accuracy_section(records),
        *tiers_report.sections(records, calibration),
        _speedup_section(records, baselines),
        _ridge_section(
            records,
            measured_roof or datasheet_roof,
            "measured" if measured_roof else "datasheet",
        ),
        _nvml_section(records),
        ncu_report.section(records, ncu or []),
        _throttle_section(records),
        _problems_section(records),
    ]
    for section in sections:
        lines += [*section, ""]
    return "\n".join(lines)
