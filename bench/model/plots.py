"""The plots of a `roofbench model` run: TTFT and TBT against length, throughput against
latency, naive recomputation against KV-cached decode (predicted dashed, measured per backend)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from roofbench.bench.core.records import Record
from roofbench.bench.core.text import fmt
from roofbench.bench.model.index import (
    RecordIndex,
    configs_of,
    measured_s,
    naive_series,
    predicted_s,
)
from roofbench.bench.model.points import slug
from roofbench.bench.model.step_report import LABELS, StepPoint, run_calibration, step_points
from roofbench.theory.analysis import fit_exponent
from roofbench.theory.step import BREAKDOWN

MARKERS = {"triton": "o", "torch": "^"}


def _palette(count: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(i / max(1, count - 1) * 0.9) for i in range(count)]


def _line(ax, xs: Sequence[float], ys: Sequence[float | None], **style) -> bool:
    """Plot the points whose y is known; False when there are none."""
    kept = [(x, y) for x, y in zip(xs, ys, strict=True) if y]
    if kept:
        ax.plot(*zip(*kept, strict=True), **style)
    return bool(kept)


def _predicted_style(color, label: str | None = None) -> dict:
    return {"ls": "--", "marker": ".", "color": color, "label": label}


def _measured_style(impl: str, color, label: str | None = None) -> dict:
    return {"ls": "-", "lw": 0.8, "marker": MARKERS.get(impl, "s"), "color": color, "label": label}


def _log_axes(ax, xlabel: str, ylabel: str, title: str, extra: Sequence[Line2D] = ()) -> None:
    """Log-log axes with plain-number tick labels, a grid and a legend."""
    from matplotlib.ticker import FuncFormatter

    def labels(axis, minor: bool) -> FuncFormatter:
        """Plain numbers; on an axis under 1.5 decades minor ticks too (only 2, 3 and 5 x 10^k
        unless it spans under half a decade)."""

        def label(value: float, _pos) -> str:
            if minor:
                low, high = axis.get_view_interval()
                mantissa = round(value / 10 ** math.floor(math.log10(value) + 1e-9))
                if high > 30 * low or (high > 3 * low and mantissa not in (2, 3, 5)):
                    return ""
            return f"{value:g}"

        return FuncFormatter(label)

    ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel=ylabel, title=title)
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(labels(axis, minor=False))
        axis.set_minor_formatter(labels(axis, minor=True))
    ax.grid(True, which="both", alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()
    ax.legend(handles=[*handles, *extra], fontsize=7)


def _style_key(index: RecordIndex) -> list[Line2D]:
    """Legend entries for the line styles: predicted, and one per measured backend."""
    key = [Line2D([], [], color="k", ls="--", marker=".", label="predicted")]
    return key + [Line2D([], [], **_measured_style(i, "k", f"measured {i}")) for i in index.impls]


def _ms_list(values: Iterable[float | None]) -> list[float | None]:
    return [v * 1e3 if v else None for v in values]


def curve_figure(index: RecordIndex, model: str, op: str, xlabel: str, title: str) -> Figure:
    """Time vs length, one colour per batch: predicted dashed, measured per backend marker."""
    fig = Figure(figsize=(7.5, 5))
    ax = fig.add_subplot()
    shapes = index.shapes(model, op)
    batches = sorted({b for b, _ in shapes})
    for color, batch in zip(_palette(len(batches)), batches, strict=True):
        seqs = [n for b, n in shapes if b == batch]
        pred = [predicted_s(index.any(model, op, batch, n)) for n in seqs]
        _line(ax, seqs, _ms_list(pred), **_predicted_style(color, f"batch {batch}"))
        for impl in index.impls:
            got = [measured_s(index.get(model, op, impl, batch, n)) for n in seqs]
            _line(ax, seqs, _ms_list(got), **_measured_style(impl, color))
    _log_axes(ax, xlabel, "milliseconds", title, _style_key(index))
    return fig


def throughput_figure(index: RecordIndex, model: str) -> Figure:
    """Throughput (batch / TBT) vs TBT, one colour per context, batch growing along each line."""
    fig = Figure(figsize=(7.5, 5))
    ax = fig.add_subplot()
    shapes = index.shapes(model, "tbt")
    contexts = sorted({c for _, c in shapes})
    for color, context in zip(_palette(len(contexts)), contexts, strict=True):
        batches = [b for b, c in shapes if c == context]
        pred = [predicted_s(index.any(model, "tbt", b, context)) for b in batches]
        rate = [b / t for b, t in zip(batches, pred, strict=True)]
        _line(ax, _ms_list(pred), rate, **_predicted_style(color, f"context {context}"))
        for impl in index.impls:
            got = [measured_s(index.get(model, "tbt", impl, b, context)) for b in batches]
            kept = [(b, t) for b, t in zip(batches, got, strict=True) if t]
            if not kept:
                continue
            xs, ys = [t * 1e3 for _, t in kept], [b / t for b, t in kept]
            ax.plot(xs, ys, **_measured_style(impl, color))
            if impl == index.impls[0]:
                for (b, _), x, y in zip(kept, xs, ys, strict=True):
                    ax.annotate(
                        str(b), (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points"
                    )
    title = f"{model}: throughput vs latency (numbers: batch)"
    _log_axes(ax, "TBT (ms)", "tokens/s across the batch", title, _style_key(index))
    return fig


def naive_figure(index: RecordIndex, model: str) -> Figure:
    """Time per token vs N, naive and cached, log-log, fitted slopes in the legend."""
    fig = Figure(figsize=(7.5, 5))
    ax = fig.add_subplot()
    colors = {"naive": "tab:red", "cached": "tab:blue"}
    for impl in [None, *index.impls]:
        for key, (lengths, times) in naive_series(index, model, impl).items():
            slope = fmt(fit_exponent(lengths, times), ".2f")
            label = f"{key} {impl or 'predicted'} (slope {slope})"
            style = (
                _predicted_style(colors[key], label)
                if impl is None
                else _measured_style(impl, colors[key], label)
            )
            _line(ax, lengths, _ms_list(times), **style)
    title = f"{model}: naive recomputation vs KV-cached decode (batch 1)"
    _log_axes(ax, "tokens N", "ms per generated token", title)
    return fig


STEP_PLOT = "where_decode_step_goes.png"


def step_shares(points: Sequence[StepPoint], model: str, impl: str) -> list[tuple[str, dict]]:
    """Per measured decode step of `model` on `impl` (by batch, then context): each breakdown
    term's seconds as a share of the measured time, and "unexplained" (measured - predicted,
    over measured; negative where the prediction is over)."""
    chosen = [
        p
        for p in points
        if p.record.op == "tbt"
        and p.record.impl == impl
        and p.prediction
        and p.measured_s
        and p.record.case.split("/")[0] == model
    ]
    out = []
    for p in sorted(chosen, key=lambda p: (p.record.batch, p.record.seq)):
        shares = {t: p.prediction.breakdown[t] / p.measured_s for t in BREAKDOWN}
        shares["unexplained"] = 1 - p.prediction.time_s / p.measured_s
        out.append((f"b{p.record.batch} c{p.record.seq}", shares))
    return out


def step_figure(points: Sequence[StepPoint], model: str) -> Figure:
    """Where a decode step goes: per backend, stacked bars of the predicted terms as shares of
    the measured time, the unexplained rest hatched on top (1 = the measured time). A backend
    whose step is not declared (torch.compile's) has no panel; with none declared, one empty
    panel says so."""
    impls = list(
        dict.fromkeys(p.record.impl for p in points if p.record.op == "tbt" and p.prediction)
    )
    fig = Figure(figsize=(11, 2.2 + 2.6 * max(1, len(impls))))
    colors = dict(zip(BREAKDOWN, _palette(len(BREAKDOWN)), strict=True))
    for row, impl in enumerate(impls or [""]):
        ax = fig.add_subplot(max(1, len(impls)), 1, row + 1)
        bars = step_shares(points, model, impl)
        xs = range(len(bars))
        bottom = [0.0] * len(bars)
        for term in BREAKDOWN:
            heights = [shares[term] for _, shares in bars]
            ax.bar(xs, heights, bottom=bottom, color=colors[term], label=LABELS[term], width=0.8)
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        rest = [max(0.0, shares["unexplained"]) for _, shares in bars]
        ax.bar(
            xs,
            rest,
            bottom=bottom,
            color="none",
            edgecolor="grey",
            hatch="//",
            width=0.8,
            label="unexplained",
        )
        ax.axhline(1.0, color="k", lw=0.6)
        ax.set_xticks(list(xs), [label for label, _ in bars], rotation=90, fontsize=6)
        ax.set_ylabel("share of measured TBT")
        title = f"on {impl}: where a decode step goes" if impl else ": no step declared"
        ax.set_title(f"{model} {title} (kernel by kernel)", fontsize=9)
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def write_plots(folder: Path, records: Sequence[Record], meta: dict) -> list[Path]:
    index = RecordIndex(records)
    model = slug(configs_of(meta)["base"].name)
    suffix = "" if index.measured else " (predicted only)"
    figures = {
        "ttft.png": curve_figure(
            index, model, "ttft", "prompt tokens", f"{model}: TTFT vs prompt length{suffix}"
        ),
        "tbt.png": curve_figure(
            index, model, "tbt", "context tokens", f"{model}: TBT vs context{suffix}"
        ),
        "throughput_latency.png": throughput_figure(index, model),
        "naive_vs_cached.png": naive_figure(index, model),
    }
    cal = run_calibration(meta)
    if cal is not None and index.measured:
        figures[STEP_PLOT] = step_figure(step_points(records, meta, cal), model)
    for name, fig in figures.items():
        fig.savefig(folder / name, format="png", dpi=110, bbox_inches="tight")
    return [folder / name for name in figures]
