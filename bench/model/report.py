"""The report of a `roofbench model` run: model_summary.md (and, through `bench.model.plots`,
its plots).

Built from a run folder's model_records.csv and run.json only, so `write_report` can rebuild
them after the fact. The analysis (growth exponents, the memory-bound batch, full-depth
estimates) comes from `theory.analysis`; every prediction from `theory.llm`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from roofbench.bench.core.identity import read_meta
from roofbench.bench.core.records import Record, read_records
from roofbench.bench.core.text import NONE, fmt, markdown_table
from roofbench.bench.model.gate import GATE_SHAPES, GATE_TOLERANCE
from roofbench.bench.model.index import (
    RecordIndex,
    configs_of,
    measured_s,
    model_of,
    naive_series,
    predicted_s,
    roof_of,
)
from roofbench.bench.model.measure import GRAPH_BELOW_S
from roofbench.bench.model.points import DTYPE, PHASES, RECORDS_CSV, SUMMARY_MD, phase, slug
from roofbench.bench.model.step_report import run_calibration, step_section
from roofbench.kernels.llama import FOLDED, FUSED
from roofbench.theory import llm
from roofbench.theory.analysis import (
    FIT_UPPER_FRACTION,
    KNEE_FACTOR,
    compute_bound_batch,
    fit_exponent,
    full_depth_estimate,
    layer_share,
    memory_bound_batch,
    predicted_knee_batch,
)
from roofbench.theory.llm import ModelConfig


def _ms(value: float | None) -> str:
    return fmt(value, ".3g", 1e3)


def _signed_pct(value: float | None) -> str:
    return NONE if value is None else f"{value:+.1%}"


def summarize(records: Sequence[Record], meta: dict) -> str:
    """model_summary.md from a run's records and run.json."""
    index = RecordIndex(records)
    configs = configs_of(meta)
    lines = [f"# {meta['model']} end to end on {meta.get('gpu', 'unknown GPU')}", ""]
    if meta.get("note"):
        lines += [f"**{meta['note']}**", ""]
    model = slug(configs["base"].name)
    sections = [
        _run_section(meta, configs),
        _gate_section(records),
        _error_section(index),
        _step_section(records, meta),
        _phase_table(index, model, "ttft", "TTFT (prefill)", "prompt"),
        _phase_table(index, model, "tbt", "TBT (decode step)", "context"),
        _floor_section(index, meta, configs["base"]),
        _naive_section(index, configs["base"]),
        _knee_section(index, meta, configs["base"]),
        _mha_section(index, configs),
        _full_depth_section(index, meta, configs),
        _problems_section(records),
    ]
    for section in sections:
        # One blank line after each section, so a table never runs into the next heading.
        lines += section + ([""] if section and section[-1] != "" else [])
    return "\n".join(lines)


def pdl_line(meta: dict) -> str:
    """How the fused decoder's kernels were launched (run.json's `fused_pdl`, and from the
    runs that first recorded them, `fused_pdl_attention` and `fused_one_kernel_attention`)."""
    how = "as programmatic dependents" if meta["fused_pdl"] else "in stream order (no PDL)"
    which = "GEMVs"
    batch = meta.get("fused_pdl_attention")
    if meta["fused_pdl"] and batch:
        which += f" (and from batch {batch} its rotary + KV append and decode attention kernels)"
    line = f"- The fused decoder's {which} were launched {how}."
    one = meta.get("fused_one_kernel_attention")
    if one:
        line += (
            f" From batch {one} its decode step ran rotary, the KV append and attention (with"
            " the slices' combine) as one kernel."
        )
    return line


def _run_section(meta: dict, configs: dict[str, ModelConfig]) -> list[str]:
    base = configs["base"]
    roof, which = roof_of(meta)
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
    if "fused_pdl" in meta and {FUSED, FOLDED} & set(meta.get("backends", ())):
        lines.append(pdl_line(meta))
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


def _error_section(index: RecordIndex) -> list[str]:
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


def _step_section(records: Sequence[Record], meta: dict) -> list[str]:
    """The kernel-by-kernel tier, in runs whose run.json carries a calibration."""
    cal = run_calibration(meta)
    return step_section(records, meta, cal) if cal is not None else []


def _phase_table(index: RecordIndex, model: str, op: str, title: str, length: str) -> list[str]:
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


FLOOR_BATCH_MAX = 16  # decode steps at or under this batch are held to the byte floor


def _floor_section(index: RecordIndex, meta: dict, config: ModelConfig) -> list[str]:
    """Measured TBT over `theory.llm.decode_floor_s` (the step's bytes at the calibrated read
    roof) for the decode steps of batch <= FLOOR_BATCH_MAX, per backend."""
    cal = run_calibration(meta)
    model = slug(config.name)
    shapes = [(b, c) for b, c in index.shapes(model, "tbt") if b <= FLOOR_BATCH_MAX]
    if cal is None or not shapes or not index.impls:
        return []
    headers = ["batch", "context", "floor ms"] + [f"{impl} x floor" for impl in index.impls]
    rows = []
    for batch, context in shapes:
        floor = llm.decode_floor_s(config, context, batch, cal.read_bytes_per_s, DTYPE)
        row = [str(batch), str(context), _ms(floor)]
        for impl in index.impls:
            time_s = measured_s(index.get(model, "tbt", impl, batch, context))
            row.append(NONE if time_s is None else f"{time_s / floor:.3f}")
        rows.append(row)
    return [
        "## Decode step against its byte floor",
        "",
        f"Floor: the weights and KV cache one step moves at the calibrated read roof "
        f"({cal.read_bytes_per_s / 1e9:.0f} GB/s), no launch or fixed cost charged; "
        "measured TBT / floor per backend (1.000 would be a step that only streams its bytes).",
        "",
        *markdown_table(headers, rows),
    ]


def _naive_section(index: RecordIndex, config: ModelConfig) -> list[str]:
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
        "",
        *markdown_table(headers, points),
    ]


def _knee_section(index: RecordIndex, meta: dict, config: ModelConfig) -> list[str]:
    model = slug(config.name)
    context = meta["sweep_spec"]["knee_context"]
    batches = sorted(b for b, c in index.shapes(model, "tbt") if c == context)
    if not batches:
        return []
    roof, which = roof_of(meta)
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
        "",
        f"Theory on the {which} roof, over every batch: the rule gives {every}; the decode step "
        f"turns compute-bound at batch {bound} (ridge {roof.ridge:.0f} FLOP/byte).",
        "",
    ]


def _mha_section(index: RecordIndex, configs: dict[str, ModelConfig]) -> list[str]:
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
        "",
        *markdown_table(headers, rows),
    ]


def _full_depth_section(
    index: RecordIndex, meta: dict, configs: dict[str, ModelConfig]
) -> list[str]:
    if not meta.get("depth_reduced"):
        return []
    base, full = configs["base"], configs["full"]
    roof, _ = roof_of(meta)
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


def write_report(folder: str | Path) -> None:
    """model_summary.md and the plots from the folder's model_records.csv and run.json."""
    from roofbench.bench.model.plots import write_plots

    folder = Path(folder)
    meta = read_meta(folder)
    if "configs" not in meta:
        raise ValueError(f"{folder}/run.json is not a model run's description")
    path = folder / RECORDS_CSV
    records = read_records(path) if path.exists() else []
    if path.exists() and not records:
        raise ValueError(f"{path} holds no records: nothing to report")
    (folder / SUMMARY_MD).write_text(summarize(records, meta))
    write_plots(folder, records, meta)
