"""The tiered model's part of summary.md, and the "where the time goes" plot.

- The calibration: each constant with its method, spread, clock and power.
- Per op and implementation, the median and p90 |measured / predicted - 1| at every tier: how
  much of the gap each term explains.
- Roof violations: records faster than the T1 roof by more than 2% (the roof is then wrong).
- The rows the model misses most, with the term each one most likely lacks.
- `where_time_goes_figure`: per op, for each implementation, the mean share of the measured time
  each term takes, and the residual (what no term explains), as stacked bars.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from roofbench.bench.core.records import Record
from roofbench.bench.core.text import fmt, markdown_table, median, pct, quantile
from roofbench.theory.plan import LaunchPlan
from roofbench.theory.tiers import TERMS, TIERS

WORST_LISTED = 12
# Under this measured time a residual is most likely the fixed cost (the study in DESIGN: the
# model's p90 came from kernels under ~30 us).
SHORT_KERNEL_S = 30e-6
TERM_COLORS = {
    "launch": "#7f7f7f",
    "fixed": "#bcbd22",
    "writeback": "#8c564b",
    "memory": "#1f77b4",
    "compute": "#d62728",
    "exp": "#ff7f0e",
    "alu": "#9467bd",
    "residual": "#ffffff",
}
UNITS = {"B/s": (1e-9, "GB/s"), "FLOP/s": (1e-12, "TFLOP/s"), "s": (1e6, "us")}


def tiered(records: Sequence[Record]) -> list[Record]:
    return [r for r in records if r.status == "ok" and r.measured_s and r.predicted_t6_s]


def tier_error(record: Record, tier: int) -> float | None:
    predicted = getattr(record, f"predicted_t{tier}_s")
    return record.measured_s / predicted - 1 if predicted else None


def calibration_section(doc: dict | None) -> list[str]:
    lines = ["## Calibration", ""]
    if not doc:
        return lines + ["No calibration in this run: the tiered model was not applied."]
    device = doc.get("device", {})
    lines += [
        f"{device.get('name', '?')} (driver {device.get('driver', '?')}, max SM clock "
        f"{device.get('max_sm_clock_mhz', '?')} MHz), measured {doc.get('created', '?')} in "
        f"{fmt(doc.get('wall_time_s'), '.0f')} s.",
        "",
    ]
    rows = []
    for name, c in doc.get("constants", {}).items():
        scale, unit = UNITS.get(c["unit"], (1.0, c["unit"]))
        rows.append(
            [
                name,
                f"{c['value'] * scale:.4g} {unit}",
                str(c.get("samples", "")),
                pct(c.get("spread")),
                fmt(c.get("sm_clock_mhz"), ".0f"),
                fmt(c.get("power_w"), ".0f"),
                c["method"],
            ]
        )
    headers = ["constant", "value", "samples", "p20..p80 spread", "SM MHz", "max W", "method"]
    lines += markdown_table(headers, rows)
    for step, error in (doc.get("errors") or {}).items():
        lines.append(f"- probe `{step}` failed: {error}")
    return lines


def tier_table(records: Sequence[Record]) -> list[str]:
    lines = ["## The tiered model: |error| at each tier", ""]
    rows_in = tiered(records)
    if not rows_in:
        return lines + ["No record carries the tiers (no calibration, or nothing measured)."]
    lines += [
        "median / p90 of |measured / predicted - 1|. T0 datasheet roofline; T1 read/write roofs; "
        "T2 + fixed cost and the events flush's write-back; T3 + declared launches and "
        "partials; T4 + power (burst vs sustained peak); T5 + tiles, waves, exp2; T6 + declared "
        "ALU per score.",
        "",
    ]
    groups: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for r in rows_in:
        groups[(r.op, r.impl)].append(r)
    rows = []
    for (op, impl), group in sorted(groups.items()):
        cells = [op, impl, str(len(group))]
        for tier in range(len(TIERS)):
            errors = [abs(e) for r in group if (e := tier_error(r, tier)) is not None]
            cells.append(f"{pct(median(errors))} / {pct(quantile(errors, 0.9))}")
        rows.append(cells)
    return lines + markdown_table(["op", "impl", "cases", *TIERS], rows)


def violations_section(records: Sequence[Record]) -> list[str]:
    lines = ["## Roof violations", ""]
    bad = [r for r in records if r.roof_violation]
    if not bad:
        return lines + ["None: no measured time beat the T1 roof it is predicted on by > 2%."]
    lines.append("Faster than the roof by more than 2% (the roof is measured too low):")
    for r in bad:
        lines.append(f"- `{r.case}` {r.impl}: {pct(r.roof_fraction - 1)} over the roof")
    return lines


def main_programs(record: Record) -> int:
    """Programs of the main kernel of the record's plan (0 when no grid was declared)."""
    try:
        plan = LaunchPlan.parse(record.plan or "")
    except (ValueError, TypeError):
        return 0
    return plan.main.programs if plan is not None else 0


def missing_term(record: Record, sms: int = 0) -> str:
    """The term a row most likely lacks, from where its time went, the residual's sign and the
    grid of its plan against the GPU's `sms`."""
    if record.residual_s is not None and record.residual_s < 0:
        terms = {t: getattr(record, f"time_{t}_s") or 0.0 for t in TERMS}
        largest = max(terms, key=terms.__getitem__)
        return f"over-predicted: the {largest} term charges more than the kernel pays"
    programs = main_programs(record)
    if record.bound != "compute" and 0 < programs < sms and record.residual_s is not None:
        return (
            f"{record.residual_s * 1e6:.1f} us more: its main kernel runs {programs} programs on "
            f"{sms} SMs (the bandwidth of few programs)"
        )
    if record.measured_s < SHORT_KERNEL_S and record.residual_s is not None:
        return (
            f"fixed cost: {record.residual_s * 1e6:.1f} us more than the launches and the "
            "probed fixed cost per kernel (a kernel under 30 us)"
        )
    if not record.plan:
        return "no declared launch plan (vendor kernel): launches, tiles, split-K unknown"
    if record.bound == "compute":
        return "compute: the kernel runs its tensor cores below the modelled rate"
    if record.bound == "latency":
        return "fixed cost: more than the launches and the probed fixed cost per kernel"
    return "memory: more traffic than compulsory, or below the read/write roofs"


def worst_section(records: Sequence[Record], sms: int = 0) -> list[str]:
    lines = ["## Rows the model misses most (top tier)", ""]
    rows_in = sorted(tiered(records), key=lambda r: abs(r.error or 0), reverse=True)
    if not rows_in:
        return lines + ["None."]
    rows = [
        [
            f"`{r.case}`",
            r.impl,
            fmt(r.measured_s, ".3g", 1e6),
            fmt(r.predicted_s, ".3g", 1e6),
            f"{r.error:+.1%}",
            r.bound or "",
            missing_term(r, sms),
        ]
        for r in rows_in[:WORST_LISTED]
    ]
    headers = ["case", "impl", "measured us", "predicted us", "error", "bound", "likely missing"]
    return lines + markdown_table(headers, rows)


def sections(records: Sequence[Record], calibration_doc: dict | None) -> list[list[str]]:
    return [
        calibration_section(calibration_doc),
        tier_table(records),
        violations_section(records),
        worst_section(
            records, int(((calibration_doc or {}).get("calibration") or {}).get("sms", 0))
        ),
    ]


def shares(records: Sequence[Record]) -> dict[tuple[str, str], dict[str, float]]:
    """Per (op, impl), the mean over cases of each term's share of the measured time, and the
    residual's (1 - predicted / measured): the shares of one case sum to 1."""
    groups: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for r in tiered(records):
        groups[(r.op, r.impl)].append(r)
    out = {}
    for key, group in groups.items():
        mean = {}
        for term in TERMS:
            mean[term] = sum((getattr(r, f"time_{term}_s") or 0.0) / r.measured_s for r in group)
            mean[term] /= len(group)
        mean["residual"] = sum(1 - r.predicted_s / r.measured_s for r in group) / len(group)
        out[key] = mean
    return out


def where_time_goes_figure(records: Sequence[Record]) -> Figure:
    """One panel per op: a stacked bar per implementation of the terms' shares of the measured
    time; the residual is drawn hatched (above 1 when the model over-predicts)."""
    data = shares(records)
    ops = sorted({op for op, _ in data})
    fig = Figure(figsize=(4.2 * max(1, len(ops)), 4.6))
    if not ops:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no tiered records to plot", transform=ax.transAxes, ha="center")
        return fig
    for i, op in enumerate(ops, 1):
        ax = fig.add_subplot(1, len(ops), i)
        impls = sorted(impl for o, impl in data if o == op)
        for x, impl in enumerate(impls):
            bottom, first = 0.0, x == 0 and i == 1
            for term in TERMS:
                value = data[(op, impl)][term]
                ax.bar(x, value, bottom=bottom, color=TERM_COLORS[term], edgecolor="k",
                       label=term if first else None, lw=0.5)  # fmt: skip
                bottom += value
            residual = data[(op, impl)]["residual"]
            # Under-predicted: the unexplained time tops the stack up to 1. Over-predicted: the
            # stack passes 1, and the part above it is what the model charges too much.
            base, hatch = (bottom, "//") if residual >= 0 else (1.0, "xx")
            label = ("unexplained" if residual >= 0 else "over-charged") if first else None
            ax.bar(x, abs(residual), bottom=base, color="none", edgecolor="k", hatch=hatch,
                   lw=0.5, label=label)  # fmt: skip
        ax.set_xticks(range(len(impls)), impls, rotation=30, ha="right", fontsize=8)
        ax.set_title(op, fontsize=10)
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.set_ylabel("mean share of the measured time" if i == 1 else "")
    fig.legend(loc="lower center", ncol=len(TERMS) + 1, fontsize=8, bbox_to_anchor=(0.5, -0.12))
    fig.suptitle(
        "Where the time goes (top tier): // time no term explains, xx time the model over-charges"
    )
    return fig


def where_time_goes_plot(records: Sequence[Record], path: str | os.PathLike) -> Path:
    path = Path(path)
    where_time_goes_figure(records).savefig(path, format="png", dpi=110, bbox_inches="tight")
    return path
