"""summary.md of a `roofbench tp` run: TTFT and TBT of the split decoder, measured beside
theory.tp's prediction (per-GPU step + two all-reduces per layer + the logits all-gather), and
the median and p90 |error| per phase."""

from __future__ import annotations

from pathlib import Path

from roofbench.bench.comm.report import read_run, run_kind
from roofbench.bench.core.records import Record
from roofbench.bench.core.text import fmt, markdown_table, median, pct, quantile

PHASES = ("ttft", "tbt")


def is_tp_run(folder: Path) -> bool:
    """Whether run.json says `folder` is a `roofbench tp` run."""
    return run_kind(folder) == "tp"


def _row(r: Record) -> list[str]:
    measured = r.measured_s * 1e3 if r.status == "ok" and r.measured_s else None
    predicted = r.predicted_s * 1e3 if r.predicted_s else None
    error = r.error if r.status == "ok" else None
    return [
        f"`{r.case}`", r.op, str(r.batch), str(r.seq), str(r.gpus or ""),
        fmt(measured, ".4g"), fmt(predicted, ".4g"), pct(error) if error is not None else "—",
        r.status if r.status != "ok" else "",
    ]  # fmt: skip


def accuracy_lines(records: list[Record]) -> list[str]:
    rows = []
    for phase in PHASES:
        errors = [
            abs(r.error)
            for r in records
            if r.op == phase and r.status == "ok" and r.error is not None
        ]
        if errors:
            rows.append([phase, str(len(errors)), pct(median(errors)), pct(quantile(errors, 0.9))])
    if not rows:
        return ["No TTFT or TBT was measured against a prediction."]
    return markdown_table(["phase", "points", "median abs error", "p90 abs error"], rows)


def summarize(records: list[Record], meta: dict) -> str:
    points = [r for r in records if r.op in PHASES]
    lines = [
        "# roofbench tp summary",
        "",
        f"- model: {meta.get('model')} ({meta.get('layers')} of {meta.get('full_layers')} "
        f"layers), TP {meta.get('tp')} on {meta.get('gpus')} x {meta.get('gpu')}",
        f"- driver: {meta.get('driver', '?')}; torch: {meta.get('torch')}; roofbench: "
        f"{meta.get('roofbench')} (commit {meta.get('commit')})",
        f"- time: {meta.get('started')} to {meta.get('finished', '?')}",
        "",
        "error = measured / predicted - 1; predicted: the per-GPU step on the datasheet roof plus "
        "the all-reduces and the logits all-gather on the calibrated link (theory.tp).",
        "",
        "## Accuracy",
        "",
        *accuracy_lines(points),
        "",
        "## Points",
        "",
        *markdown_table(
            [
                "case",
                "phase",
                "batch",
                "tokens",
                "gpus",
                "measured ms",
                "predicted ms",
                "error",
                "status",
            ],
            [_row(r) for r in points],
        ),  # fmt: skip
        "",
    ]
    return "\n".join(lines)


def write_report(folder: Path) -> None:
    """summary.md; ValueError (nothing written) when the records or run.json cannot be read or
    hold nothing."""
    folder = Path(folder)
    meta, records = read_run(folder)
    (folder / "summary.md").write_text(summarize(records, meta))
