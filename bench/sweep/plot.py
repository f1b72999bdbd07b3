"""PNG figures of a run: the roofline with every measurement on it, and prefill against decode.

Figures are drawn on `matplotlib.figure.Figure` objects and saved through the Agg canvas, never
through pyplot, so no display is needed and no global backend is switched for the caller.
A run with no measured time (predictions only) is plotted from its predicted times, and says so.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from roofbench.bench.core.records import Record
from roofbench.bench.sweep.report import linear_series
from roofbench.theory.analysis import predicted_ridge_m
from roofbench.theory.roofline import Roof

OP_COLORS = {
    "gemm": "tab:blue",
    "gemv": "tab:cyan",
    "prefill_attention": "tab:red",
    "decode_attention": "tab:orange",
    "copy": "tab:gray",
    "matmul": "black",
}
IMPL_MARKERS = {
    "triton": "o",
    "torch": "^",
    "sdpa_flash": "v",
    "sdpa_cudnn": "D",
    "sdpa_efficient": "P",
}
# Solid lines for this project's kernels and a user's; dashed for the vendor libraries.
VENDOR_PREFIXES = ("torch", "sdpa_")
OTHER_COLOR, OTHER_MARKER = "tab:purple", "D"
ROOF_STYLES = {
    "datasheet": {"ls": ":", "color": "k"},
    "measured": {"ls": "-", "color": "k"},
    "read (burst)": {"ls": "-", "color": "tab:blue"},
    "copy (burst)": {"ls": "--", "color": "tab:blue"},
    "read (sustained)": {"ls": "-.", "color": "tab:red"},
}


def _time_s(record: Record, predicted: bool) -> float | None:
    if not predicted:
        return record.measured_s
    # A predictions-only run has no measured roof: its prediction is the datasheet's.
    return record.predicted_s or record.predicted_datasheet_s


def plotted(records: Sequence[Record]) -> tuple[list[Record], bool]:
    """The records to draw and whether their times are predicted.

    Measured records (status ok, with a time) when the run has any; otherwise every record that is
    not failed and has a predicted time.
    """
    measured = [r for r in records if r.status == "ok" and (r.measured_s or 0) > 0]
    if measured:
        return measured, False
    return [r for r in records if r.status != "failed" and (_time_s(r, True) or 0) > 0], True


def tflops(record: Record, predicted: bool) -> float | None:
    """Achieved (or predicted) TFLOP/s: the record's FLOPs over its time."""
    time_s = _time_s(record, predicted)
    return record.flops / time_s / 1e12 if record.flops and time_s else None


def gbps(record: Record, predicted: bool) -> float | None:
    """Achieved (or predicted) GB/s: the record's compulsory bytes over its time."""
    time_s = _time_s(record, predicted)
    return record.bytes / time_s / 1e9 if record.bytes and time_s else None


def _style(record: Record) -> dict:
    return {
        "color": OP_COLORS.get(record.op, OTHER_COLOR),
        "marker": IMPL_MARKERS.get(record.impl, OTHER_MARKER),
    }


def _gpu_name(records: Sequence[Record]) -> str:
    names = sorted({r.gpu for r in records if r.gpu})
    return ", ".join(names) or "unknown GPU"


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=120, bbox_inches="tight")
    return path


def _legend_handles(ops: Sequence[str], impls: Sequence[str], predicted: bool) -> list[Line2D]:
    """One entry per op (colour) and per implementation (marker), instead of one per pair."""
    suffix = " (predicted)" if predicted else ""
    handles = [
        Line2D([], [], color=OP_COLORS.get(op, OTHER_COLOR), marker="s", ls="", label=op)
        for op in ops
    ]
    handles += [
        Line2D(
            [],
            [],
            color="k",
            marker=IMPL_MARKERS.get(impl, OTHER_MARKER),
            ls="",
            label=impl + suffix,
        )
        for impl in impls
    ]
    return handles


# ----------------------------------------------------------------------------- roofline


def _intensity_range(intensities: Sequence[float], roofs: Sequence[Roof]) -> tuple[float, float]:
    """x range covering the points and a decade either side of every ridge."""
    ridges = [roof.ridge for roof in roofs]
    low = min([*intensities, *ridges]) if intensities or ridges else 1.0
    high = max([*intensities, *ridges]) if intensities or ridges else 1e3
    return low / 10, high * 10


def roofline_figure(
    records: Sequence[Record],
    datasheet_roof: Roof | None,
    measured_roof: Roof | None,
    extra_roofs: dict[str, Roof] | None = None,
) -> Figure:
    """Log-log intensity vs TFLOP/s: the roofs as lines and one point per record."""
    points, predicted = plotted(records)
    points = [r for r in points if (r.intensity or 0) > 0 and tflops(r, predicted)]
    roofs = {"datasheet": datasheet_roof, "measured": measured_roof, **(extra_roofs or {})}
    roofs = {name: roof for name, roof in roofs.items() if roof is not None}

    fig = Figure(figsize=(8, 6))
    ax = fig.add_subplot()
    low, high = _intensity_range([r.intensity for r in points], list(roofs.values()))
    grid = np.geomspace(low, high, 256)
    for name, roof in roofs.items():
        ceiling_tflops = [roof.attainable_flops(i) / 1e12 for i in grid]
        label = (
            f"{name} roof: {roof.peak_flops / 1e12:.0f} TFLOP/s, "
            f"{roof.bandwidth_bytes_per_s / 1e9:.0f} GB/s, ridge {roof.ridge:.0f}"
        )
        style = ROOF_STYLES.get(name, {"ls": ":", "color": "tab:gray"})
        ax.plot(grid, ceiling_tflops, lw=1.2, label=label, **style)
    for r in points:
        style = _style(r)
        face = "none" if predicted else style["color"]
        ax.scatter(
            r.intensity,
            tflops(r, predicted),
            s=28,
            marker=style["marker"],
            facecolors=face,
            edgecolors=style["color"],
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP/byte)")
    ax.set_ylabel("predicted TFLOP/s" if predicted else "achieved TFLOP/s")
    title = f"Roofline: {_gpu_name(records)}"
    ax.set_title(title + (" (predicted, nothing measured)" if predicted else ""))
    ax.grid(True, which="both", alpha=0.3)
    ops = sorted({r.op for r in points})
    impls = sorted({r.impl for r in points})
    roof_handles, _ = ax.get_legend_handles_labels()
    ax.legend(handles=roof_handles + _legend_handles(ops, impls, predicted), fontsize=8)
    if not points:
        ax.text(0.5, 0.5, "no records to plot", transform=ax.transAxes, ha="center")
    return fig


def roofline_plot(
    records: Sequence[Record],
    datasheet_roof: Roof | None,
    measured_roof: Roof | None,
    path: str | os.PathLike,
    extra_roofs: dict[str, Roof] | None = None,
) -> Path:
    """Write the roofline figure as a PNG at `path`; returns the path."""
    return _save(roofline_figure(records, datasheet_roof, measured_roof, extra_roofs), path)


# ----------------------------------------------------------------------------- prefill vs decode


def _series_line(ax, xs, ys, impl: str, color, label: str, predicted: bool) -> None:
    """One implementation's series: solid for ours, dashed for the vendors'; gaps dropped."""
    kept = [(x, y) for x, y in zip(xs, ys, strict=True) if y]
    if not kept:
        return
    xs, ys = zip(*kept, strict=True)
    marker = IMPL_MARKERS.get(impl, OTHER_MARKER)
    ls = "--" if impl.startswith(VENDOR_PREFIXES) else "-"
    face = "none" if predicted else color
    ax.plot(xs, ys, ls=ls, marker=marker, color=color, mfc=face, label=label)


def _empty(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} records", transform=ax.transAxes, ha="center", va="center")


def _linear_panel(ax, records: Sequence[Record], roof: Roof | None, predicted: bool) -> None:
    """GEMM/GEMV TFLOP/s against M per weight shape, with the compute roof and ridge M marked."""
    ax.set_title("GEMM / GEMV: TFLOP/s vs M (tokens)")
    series = linear_series(records)
    shapes = sorted({(n, k, dtype) for n, k, dtype, _ in series})
    colors = dict(zip(shapes, _palette(len(shapes)), strict=True))
    for (n, k, dtype, impl), rs in sorted(series.items()):
        xs = [r.m for r in rs]
        ys = [tflops(r, predicted) for r in rs]
        _series_line(ax, xs, ys, impl, colors[(n, k, dtype)], f"{n}x{k} {impl}", predicted)
    if roof is not None:
        ax.axhline(roof.peak_flops / 1e12, color="k", lw=1, label="compute roof")
        for n, k, dtype in shapes:
            ridge_m = _ridge_or_none(n, k, dtype, roof)
            if ridge_m is not None:
                ax.axvline(ridge_m, color=colors[(n, k, dtype)], ls=":", lw=1)
    if not series:
        _empty(ax, "GEMM/GEMV")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("M (rows = tokens); dotted: predicted ridge M")
    ax.set_ylabel("predicted TFLOP/s" if predicted else "achieved TFLOP/s")


def _ridge_or_none(n: int, k: int, dtype: str, roof: Roof) -> int | None:
    try:
        return predicted_ridge_m(n, k, dtype, roof)
    except ValueError:  # a dtype theory does not know
        return None


def _palette(count: int) -> list:
    return [f"C{i % 10}" for i in range(count)]


def _attention_series(records: Sequence[Record], op: str) -> dict[tuple, list[Record]]:
    """Records of `op` by (batch, heads, kv_heads, head_dim, dtype, impl), ordered by seq."""
    groups: dict[tuple, list[Record]] = defaultdict(list)
    for r in records:
        if r.op == op and r.seq is not None:
            groups[(r.batch, r.heads, r.kv_heads, r.head_dim, r.dtype, r.impl)].append(r)
    return {key: sorted(rs, key=lambda r: r.seq) for key, rs in groups.items()}


def _attention_panel(ax, records, op: str, rate, roof: tuple[str, float] | None, predicted: bool):
    """One attention op's rate against sequence length per head layout, with its roof."""
    groups = _attention_series(records, op)
    shapes = sorted({key[:-1] for key in groups}, key=str)
    colors = dict(zip(shapes, _palette(len(shapes)), strict=True))
    for key, rs in sorted(groups.items(), key=lambda kv: str(kv[0])):
        batch, heads, kv_heads, head_dim, _, impl = key
        label = f"B={batch} {heads}/{kv_heads}x{head_dim} {impl}"
        xs = [r.seq for r in rs]
        _series_line(
            ax, xs, [rate(r, predicted) for r in rs], impl, colors[key[:-1]], label, predicted
        )
    if roof is not None:
        label, value = roof
        ax.axhline(value, color="k", lw=1, label=label)
    if not groups:
        _empty(ax, op.replace("_", " "))
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")


def prefill_vs_decode_figure(records: Sequence[Record], measured_roof: Roof | None) -> Figure:
    """Three panels: linears over M, prefill attention over S, decode attention over context."""
    points, predicted = plotted(records)
    kind = "predicted" if predicted else "achieved"
    fig = Figure(figsize=(18, 5.5))
    linear_ax, prefill_ax, decode_ax = fig.subplots(1, 3)
    _linear_panel(linear_ax, points, measured_roof, predicted)

    peak = bandwidth = None
    if measured_roof is not None:
        peak = ("compute roof", measured_roof.peak_flops / 1e12)
        bandwidth = ("bandwidth roof", measured_roof.bandwidth_bytes_per_s / 1e9)
    _attention_panel(prefill_ax, points, "prefill_attention", tflops, peak, predicted)
    prefill_ax.set_title("Prefill attention: compute-bound, TFLOP/s vs S")
    prefill_ax.set_xlabel("sequence length S")
    prefill_ax.set_ylabel(f"{kind} TFLOP/s")
    _attention_panel(decode_ax, points, "decode_attention", gbps, bandwidth, predicted)
    decode_ax.set_title("Decode attention: memory-bound, GB/s vs context")
    decode_ax.set_xlabel("context length (KV tokens)")
    decode_ax.set_ylabel(f"{kind} GB/s (compulsory bytes / time)")

    for ax in (linear_ax, prefill_ax, decode_ax):
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    title = f"Prefill vs decode: {_gpu_name(records)}"
    fig.suptitle(title + (" (predicted, nothing measured)" if predicted else ""))
    return fig


def prefill_vs_decode_plot(
    records: Sequence[Record], measured_roof: Roof | None, path: str | os.PathLike
) -> Path:
    """Write the prefill-vs-decode figure as a PNG at `path`; returns the path."""
    return _save(prefill_vs_decode_figure(records, measured_roof), path)
