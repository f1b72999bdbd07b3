"""The report of a `roofbench model` run: model_summary.md and its plots.

Built from a run folder's model_records.csv and run.json only, so `write_report` can rebuild
them after the fact. The analysis (growth exponents, the memory-bound batch, full-depth
estimates) comes from `bench.model`; every prediction from `theory.llm`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from roofbench.bench.model import (
    DTYPE,
    FIT_UPPER_FRACTION,
    GATE_SHAPES,
    GATE_TOLERANCE,
    GRAPH_BELOW_S,
    KNEE_FACTOR,
    PHASES,
    RECORDS_CSV,
    SUMMARY_MD,
    compute_bound_batch,
    fit_exponent,
    full_depth_estimate,
    layer_share,
    memory_bound_batch,
    phase,
    predicted_knee_batch,
    slug,
)
from roofbench.bench.records import Record, read_records
from roofbench.bench.report import NONE, fmt, markdown_table
from roofbench.theory.llm import ModelConfig
from roofbench.theory.roofline import Roof

# --- report ------------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return fmt(value, ".3g", 1e3)


def _signed_pct(value: float | None) -> str:
    return NONE if value is None else f"{value:+.1%}"


def predicted_s(record: Record) -> float | None:
    """The prediction on the measured roof, or on the datasheet roof when none was measured."""
    return record.predicted_s if record.predicted_s is not None else record.predicted_datasheet_s


def measured_s(record: Record | None) -> float | None:
    if record is None or record.status != "ok" or not record.measured_s:
        return None
    return record.measured_s


def model_of(record: Record) -> str:
    return record.case.split("/")[0]


class _Index:
    """Records of one run looked up by (model, op, impl, batch, seq)."""

    def __init__(self, records: Sequence[Record]):
        self.records = [r for r in records if r.op in PHASES]
        self.by_key = {(model_of(r), r.op, r.impl, r.batch, r.seq): r for r in self.records}
        self.all_impls = list(dict.fromkeys(r.impl for r in self.records))
        self.measured = any(measured_s(r) for r in self.records)
        # Tables and plots show measured columns only when something was measured.
        self.impls = self.all_impls if self.measured else []

    def get(self, model: str, op: str, impl: str, batch: int, seq: int) -> Record | None:
        return self.by_key.get((model, op, impl, batch, seq))

    def shapes(self, model: str, op: str) -> list[tuple[int, int]]:
        return sorted(
            {(r.batch, r.seq) for r in self.records if model_of(r) == model and r.op == op}
        )

    def any(self, model: str, op: str, batch: int, seq: int) -> Record | None:
        """A record of the shape (any implementation): its prediction is the same for all."""
        for impl in self.all_impls:
            record = self.get(model, op, impl, batch, seq)
            if record is not None:
                return record
        return None


def _configs(meta: dict) -> dict[str, ModelConfig]:
    return {k: ModelConfig(**v) for k, v in meta["configs"].items()}


def _roof(meta: dict) -> tuple[Roof, str]:
    """The roof predictions are on: measured if there is one, else the datasheet's."""
    if meta.get("measured_roof"):
        return Roof(**meta["measured_roof"]), "measured"
    return Roof(**meta["datasheet_roof"]), "datasheet"


def summarize(records: Sequence[Record], meta: dict) -> str:
    """model_summary.md from a run's records and run.json."""
    index = _Index(records)
    configs = _configs(meta)
    lines = [f"# {meta['model']} end to end on {meta.get('gpu', 'unknown GPU')}", ""]
    if meta.get("note"):
        lines += [f"**{meta['note']}**", ""]
    lines += _run_section(meta, configs)
    lines += _gate_section(records)
    lines += _error_section(index)
    lines += _phase_table(index, slug(configs["base"].name), "ttft", "TTFT (prefill)", "prompt")
    lines += _phase_table(index, slug(configs["base"].name), "tbt", "TBT (decode step)", "context")
    lines += _naive_section(index, configs["base"])
    lines += _knee_section(index, meta, configs["base"])
    lines += _mha_section(index, configs)
    lines += _full_depth_section(index, meta, configs)
    lines += _problems_section(records)
    return "\n".join(lines)


def _run_section(meta: dict, configs: dict[str, ModelConfig]) -> list[str]:
    base = configs["base"]
    roof, which = _roof(meta)
    lines = [
        "## Run",
        "",
        f"- Model: {base.name}: {base.num_layers} layers, hidden {base.hidden_size}, "
        f"{base.num_heads} query heads and {base.num_kv_heads} KV heads of {base.head_dim}, "
        f"{base.params / 1e9:.2f} B parameters ({base.weights_bytes(DTYPE) / 1e9:.1f} GB in "
        f"{DTYPE}), random weights.",
        f"- Sweep `{meta['sweep']}`, backends {', '.join(meta['backends'])}; started "
        f"{meta.get('started', NONE)}, wall time {fmt(meta.get('wall_time_s'), '.0f')} s; "
        f"torch {meta.get('torch', NONE)}, triton {meta.get('triton', NONE)}, commit "
        f"{meta.get('commit', NONE)}.",
        f"- Predictions are on the {which} roof: {roof.peak_flops / 1e12:.0f} TFLOP/s, "
        f"{roof.bandwidth_bytes_per_s / 1e9:.0f} GB/s, launch {roof.launch_s * 1e6:.1f} us "
        f"({roof.source}).",
        "- Error = measured / predicted - 1. TBT is timed by replaying one decode step captured "
        f"in a CUDA graph; TTFT and naive steps the same way when predicted under "
        f"{GRAPH_BELOW_S * 1e3:g} ms, else per call with CUDA events (the `method` column).",
    ]
    if meta.get("depth_reduced"):
        lines.append(
            f"- **Depth reduced**: {meta['depth_reason']}. Every prediction below is for the "
            f"same {meta['layers']}-layer model; the last section scales to full depth."
        )
    if meta.get("interrupted"):
        lines.append("- **The run was interrupted**: the records hold what finished before.")
    if meta.get("stopped_early"):
        lines.append(
            f"- Stopped by the time budget ({meta['time_budget_s']:g} s): the remaining points "
            f"are listed as skipped with their predictions."
        )
    return lines + [""]


def _gate_section(records: Sequence[Record]) -> list[str]:
    gates = [r for r in records if r.op == "gate"]
    if not gates:
        return []
    rows = [[model_of(r), r.impl, fmt(r.rel_err, ".2e"), r.status, r.reason or "ok"] for r in gates]
    return [
        "## Correctness gate",
        "",
        "Logits of a prefill and one decode step (batch, tokens: "
        + ", ".join(f"{b}x{n}" for b, n in GATE_SHAPES)
        + f") against the torch backend on the same weights; bf16 tolerance "
        f"{GATE_TOLERANCE['bf16']:g} (relative L2). A failed backend is not timed.",
        "",
        *markdown_table(["model", "backend", "relative error", "status", "reason"], rows),
    ]


def _error_section(index: _Index) -> list[str]:
    groups: dict[tuple[str, str, str], list[float]] = {}
    for r in index.records:
        if measured_s(r) and r.error is not None:
            groups.setdefault((model_of(r), r.impl, r.op), []).append(abs(r.error))
    if not groups:
        return ["## Prediction error", "", "No measured points.", ""]
    rows = [
        [model, impl, op, str(len(errs)), f"{np.median(errs):.1%}", f"{np.quantile(errs, 0.9):.1%}"]
        for (model, impl, op), errs in sorted(groups.items())
    ]
    return [
        "## Prediction error",
        "",
        "|measured / predicted - 1| over the points measured.",
        "",
        *markdown_table(["model", "backend", "phase", "points", "median", "p90"], rows),
    ]


def _phase_table(index: _Index, model: str, op: str, title: str, length: str) -> list[str]:
    shapes = index.shapes(model, op)
    if not shapes:
        return []
    headers = ["batch", length, "predicted ms", "bound"]
    if op == "tbt":
        headers.append("predicted tok/s")
    for impl in index.impls:
        headers += [f"{impl} ms", "error"] + (["tok/s"] if op == "tbt" else ["TFLOP/s"])
    rows = []
    for batch, seq in shapes:
        ref = index.any(model, op, batch, seq)
        row = [str(batch), str(seq), _ms(predicted_s(ref)), ref.bound or NONE]
        if op == "tbt":
            row.append(fmt(batch / predicted_s(ref), ".0f"))
        for impl in index.impls:
            record = index.get(model, op, impl, batch, seq)
            time_s = measured_s(record)
            if time_s is None:
                row += [record.status if record else NONE, NONE, NONE]
                continue
            rate = batch / time_s if op == "tbt" else record.flops / time_s / 1e12
            row += [
                _ms(time_s),
                _signed_pct(record.error),
                fmt(rate, ".0f" if op == "tbt" else ".4g"),
            ]
        rows.append(row)
    note = " Throughput = batch / TBT tokens per second." if op == "tbt" else ""
    return [f"## {title}", "", f"Model {model}.{note}", "", *markdown_table(headers, rows)]


def naive_series(index: _Index, model: str, impl: str | None) -> dict[str, tuple[list, list]]:
    """{"naive", "cached"} -> (lengths, times): measured for `impl`, predicted for None."""
    lengths = [n for b, n in index.shapes(model, "naive_step") if b == 1]
    out = {}
    for key, op in (("naive", "naive_step"), ("cached", "tbt")):
        times = []
        for n in lengths:
            if impl is None:
                ref = index.any(model, op, 1, n)
                times.append(predicted_s(ref) if ref else None)
            else:
                times.append(measured_s(index.get(model, op, impl, 1, n)))
        out[key] = (lengths, times)
    return out


def _naive_section(index: _Index, config: ModelConfig) -> list[str]:
    model = slug(config.name)
    predicted = naive_series(index, model, None)
    lengths = predicted["naive"][0]
    if not lengths:
        return []
    rows = []
    for impl in [None, *index.impls]:
        series = predicted if impl is None else naive_series(index, model, impl)
        naive = fit_exponent(*series["naive"])
        cached = fit_exponent(*series["cached"])
        rows.append([impl or "predicted", fmt(naive, ".2f"), fmt(cached, ".2f")])
    points = []
    for i, n in enumerate(lengths):
        row = [str(n), _ms(predicted["naive"][1][i]), _ms(predicted["cached"][1][i])]
        for impl in index.impls:
            series = naive_series(index, model, impl)
            row += [_ms(series["naive"][1][i]), _ms(series["cached"][1][i])]
        points.append(row)
    upper = max(2, math.ceil(FIT_UPPER_FRACTION * len(lengths)))
    headers = ["N", "naive predicted ms", "cached predicted ms"]
    for impl in index.impls:
        headers += [f"naive {impl} ms", f"cached {impl} ms"]
    return [
        "## Naive recomputation vs KV cache",
        "",
        "Time per generated token at batch 1 after N tokens: `naive_step` recomputes all N "
        "(theory: linear work in N plus attention in N^2), the cached decode step reads N "
        "cached tokens (weights plus a KV read in N). Exponent = slope of log time vs log N "
        f"over the largest {upper} of the {len(lengths)} lengths "
        f"({lengths[-upper]}..{lengths[-1]}).",
        "",
        *markdown_table(["times", "naive exponent", "cached exponent"], rows),
        *markdown_table(headers, points),
    ]


def _knee_section(index: _Index, meta: dict, config: ModelConfig) -> list[str]:
    model = slug(config.name)
    context = meta["sweep_spec"]["knee_context"]
    batches = sorted(b for b, c in index.shapes(model, "tbt") if c == context)
    if not batches:
        return []
    roof, which = _roof(meta)
    refs = [index.any(model, "tbt", b, context) for b in batches]
    rows = [["predicted", str(memory_bound_batch(batches, [predicted_s(r) for r in refs]))]]
    for impl in index.impls:
        times = [measured_s(index.get(model, "tbt", impl, b, context)) for b in batches]
        rows.append([f"measured {impl}", str(memory_bound_batch(batches, times))])
    every = predicted_knee_batch(config, roof, context)
    bound = compute_bound_batch(config, roof, context)
    return [
        "## Batch where decode stops being memory-bound",
        "",
        f"Rule (the same for measured and predicted): the smallest batch of the swept "
        f"{', '.join(map(str, batches))} whose TBT at context {context} exceeds "
        f"{KNEE_FACTOR:g}x the batch-1 TBT (None: no swept batch does). A short context keeps "
        f"the KV cache a small part of the bytes, so the knee is where the weights' reuse "
        f"makes the step compute-bound.",
        "",
        *markdown_table(["times", "batch"], rows),
        f"Theory on the {which} roof, over every batch: the rule gives {every}; the decode step "
        f"turns compute-bound at batch {bound} (ridge {roof.ridge:.0f} FLOP/byte).",
        "",
    ]


def _mha_section(index: _Index, configs: dict[str, ModelConfig]) -> list[str]:
    if "mha" not in configs:
        return []
    base, mha = configs["base"], configs["mha"]
    shapes = index.shapes(slug(mha.name), "tbt")
    kv_rows = [
        [c.name, str(c.num_kv_heads), fmt(c.kv_cache_bytes_per_token(DTYPE) / 1024, ".0f")]
        for c in (base, mha)
    ]
    headers = ["batch", "context", "GQA predicted ms", "MHA predicted ms"]
    for impl in index.impls:
        headers += [f"GQA {impl} ms", f"MHA {impl} ms", "MHA / GQA"]
    rows = []
    for batch, context in shapes:
        gqa_ref = index.any(slug(base.name), "tbt", batch, context)
        mha_ref = index.any(slug(mha.name), "tbt", batch, context)
        row = [str(batch), str(context), _ms(gqa_ref and predicted_s(gqa_ref))]
        row.append(_ms(predicted_s(mha_ref)))
        for impl in index.impls:
            g = measured_s(index.get(slug(base.name), "tbt", impl, batch, context))
            m = measured_s(index.get(slug(mha.name), "tbt", impl, batch, context))
            row += [_ms(g), _ms(m), fmt(m / g if g and m else None, ".2f")]
        rows.append(row)
    return [
        "## MHA vs GQA",
        "",
        "KV-cache bytes per token over all layers (theory: 2 x layers x KV heads x head dim x "
        "2 bytes), and the TBT of the same model with one KV head per query head.",
        "",
        *markdown_table(["model", "KV heads", "KV KiB per token"], kv_rows),
        *markdown_table(headers, rows),
    ]


def _full_depth_section(index: _Index, meta: dict, configs: dict[str, ModelConfig]) -> list[str]:
    if not meta.get("depth_reduced"):
        return []
    base, full = configs["base"], configs["full"]
    roof, _ = _roof(meta)
    model = slug(base.name)
    headers = ["phase", "batch", "N", "layer share", f"predicted ms ({base.num_layers} layers)"]
    headers.append(f"predicted ms ({full.num_layers} layers)")
    for impl in index.impls:
        headers += [f"{impl} ms ({base.num_layers})", f"{impl} scaled ms ({full.num_layers})"]
    rows = []
    for op in PHASES:
        for batch, seq in index.shapes(model, op):
            if batch != 1:
                continue
            share = layer_share(base, roof, op, batch, seq)
            ref = index.any(model, op, batch, seq)
            row = [op, str(batch), str(seq), f"{share:.0%}", _ms(predicted_s(ref))]
            row.append(_ms(phase(full, roof, op, batch, seq).time_s))
            for impl in index.impls:
                time_s = measured_s(index.get(model, op, impl, batch, seq))
                scaled = (
                    full_depth_estimate(time_s, share, base.num_layers, full.num_layers)
                    if time_s
                    else None
                )
                row += [_ms(time_s), _ms(scaled)]
            rows.append(row)
    return [
        f"## Full depth ({full.num_layers} layers), estimated from {base.num_layers}",
        "",
        f"{meta['depth_reason'][0].upper()}{meta['depth_reason'][1:]}. Scaled = measured x "
        f"[(1 - share) + share x {full.num_layers} / {base.num_layers}], where share is the "
        "layers' part of theory's time for the reduced model ((t(2L) - t(L)) / t(L)); the rest "
        "(embedding, LM head, launch) is kept as measured. Predicted at full depth is theory's "
        "for the full model. Batch-1 points only.",
        "",
        *markdown_table(headers, rows),
    ]


def _problems_section(records: Sequence[Record]) -> list[str]:
    bad = [r for r in records if r.status != "ok"]
    if not bad:
        return []
    reasons: dict[tuple[str, str], int] = {}
    for r in bad:
        key = (r.status, re.sub(r"\d+(\.\d+)?", "#", r.reason))
        reasons[key] = reasons.get(key, 0) + 1
    rows = [[status, str(n), reason] for (status, reason), n in sorted(reasons.items())]
    return [
        "## Skipped and failed",
        "",
        "Counted by reason (numbers masked as #).",
        "",
        *markdown_table(["status", "points", "reason"], rows),
    ]


# --- plots -------------------------------------------------------------------------------------

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


def _style_key(index: _Index) -> list[Line2D]:
    """Legend entries for the line styles: predicted, and one per measured backend."""
    key = [Line2D([], [], color="k", ls="--", marker=".", label="predicted")]
    return key + [Line2D([], [], **_measured_style(i, "k", f"measured {i}")) for i in index.impls]


def _ms_list(values: Iterable[float | None]) -> list[float | None]:
    return [v * 1e3 if v else None for v in values]


def curve_figure(index: _Index, model: str, op: str, xlabel: str, title: str) -> Figure:
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


def throughput_figure(index: _Index, model: str) -> Figure:
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


def naive_figure(index: _Index, model: str) -> Figure:
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


def write_plots(folder: Path, records: Sequence[Record], meta: dict) -> list[Path]:
    index = _Index(records)
    model = slug(_configs(meta)["base"].name)
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
    for name, fig in figures.items():
        fig.savefig(folder / name, format="png", dpi=110, bbox_inches="tight")
    return [folder / name for name in figures]


def write_report(folder: str | Path) -> None:
    """model_summary.md and the plots from the folder's model_records.csv and run.json."""
    folder = Path(folder)
    meta = json.loads((folder / "run.json").read_text())
    path = folder / RECORDS_CSV
    records = read_records(path) if path.exists() else []
    (folder / SUMMARY_MD).write_text(summarize(records, meta))
    write_plots(folder, records, meta)
