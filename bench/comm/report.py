"""A comm run's `summary.md` and `comm.png`, from its records.csv and run.json (what
`roofbench report FOLDER` rebuilds for a comm run).

The summary: the run (GPUs, backend, the environment the ranks ran in, the datasheet and the
calibrated link), then per collective the median and p90 |error| of the prediction, busbw at
1 GiB (or the largest size measured) against the theory's, and a table of every size (time,
algbw, busbw, predicted busbw, error); then what was skipped or failed. The plot: busbw against
message size, measured (solid) and predicted (dashed), one colour per collective.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from matplotlib.figure import Figure

from roofbench.bench.comm.records import busbw_bytes_per_s
from roofbench.bench.core.identity import read_meta
from roofbench.bench.core.records import Record, read_records
from roofbench.bench.core.text import NONE, fmt, markdown_table, median, pct, quantile
from roofbench.theory import comm

GIB = 2**30


def run_kind(folder: Path) -> str | None:
    """run.json's `kind` (comm, tp; None for a kernel sweep or an unreadable file)."""
    try:
        meta = json.loads((Path(folder) / "run.json").read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return meta.get("kind") if isinstance(meta, dict) else None


def is_comm_run(folder: Path) -> bool:
    """Whether run.json says `folder` is a comm run."""
    return run_kind(folder) == "comm"


def read_run(folder: Path) -> tuple[dict, list[Record]]:
    """(run.json, the records) of a comm or tp run; ValueError when either cannot be read or
    there are no records (a report then writes nothing)."""
    folder = Path(folder)
    meta = read_meta(folder)
    records = read_records(folder / "records.csv")
    if not records:
        raise ValueError(f"{folder}/records.csv holds no records: nothing to report")
    return meta, records


def _measured(r: Record) -> bool:
    return r.status == "ok" and (r.measured_s or 0) > 0


def predicted_busbw_bytes_per_s(r: Record) -> float | None:
    if not r.predicted_s or not r.gpus or r.gpus < 2:
        return None
    return comm.busbw_bytes_per_s(r.op.removeprefix("comm_"), r.gpus, r.bytes, r.predicted_s)


def size_text(size_bytes: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size_bytes >= scale:
            return f"{size_bytes / scale:g} {unit}"
    return f"{size_bytes:g} B"


def progress(r: Record) -> str:
    """One console line per finished case."""
    head = f"{r.case} {r.impl}"
    if r.status != "ok":
        return f"{head}: {r.status} ({r.reason})"
    text = f"{head}: {r.measured_s * 1e6:.1f} us, algbw {r.achieved_gbps:.3g} GB/s"
    if r.gpus and r.gpus > 1:
        text += f", busbw {busbw_bytes_per_s(r) / 1e9:.3g} GB/s"
    if r.predicted_s:
        text += f", predicted {r.predicted_s * 1e6:.1f} us ({r.error:+.1%})"
    return text


def _link_line(name: str, doc: dict | None) -> str:
    if not doc:
        return f"- {name}: {NONE}"
    if "bandwidth_bytes_per_s" in doc:
        gbps, alpha = doc["bandwidth_bytes_per_s"] / 1e9, doc["alpha_s"]
    elif "link_gbps" in doc:
        gbps, alpha = doc["link_gbps"], doc["alpha_s"]
    else:
        return f"- {name}: {doc.get('skipped') or doc.get('error') or NONE}"
    source = doc.get("source") or doc.get("method") or ""
    return f"- {name}: alpha {alpha * 1e6:.2f} us per step, {gbps:.1f} GB/s each way ({source})"


def _run_lines(meta: dict, records: list[Record]) -> list[str]:
    env = ", ".join(f"{k}={v}" for k, v in (meta.get("environment") or {}).items())
    return [
        f"- GPU: {meta.get('gpu', NONE)}; ranks: {meta.get('gpus', NONE)} "
        f"({meta.get('local_world_size', NONE)} per host); backend: {meta.get('backend', NONE)}",
        f"- torch {meta.get('torch', NONE)}; roofbench {meta.get('roofbench', NONE)}, "
        f"commit {meta.get('commit', NONE)}; sweep {meta.get('sweep', NONE)}",
        f"- environment of every rank: {env or NONE}",
        _link_line("datasheet link", meta.get("datasheet_link")),
        _link_line("calibrated link", meta.get("link_calibration")),
        f"- records: {len(records)}; timing: "
        + ", ".join(sorted({r.method for r in records if r.method}) or [NONE])
        + " (a sample is back-to-back calls, the slowest rank's time)",
    ]


def _headline(op: str, rows: list[Record]) -> str:
    """busbw at 1 GiB (or the largest size measured) against the theory's."""
    at = [r for r in rows if r.bytes == GIB] or rows[-1:]
    r = at[0]
    if not r.gpus or r.gpus < 2:
        return f"- {op}: one rank, no bus bandwidth"
    predicted = predicted_busbw_bytes_per_s(r)
    text = f"- {op} at {size_text(r.bytes)}: busbw {busbw_bytes_per_s(r) / 1e9:.3g} GB/s"
    if predicted:
        text += f", predicted {predicted / 1e9:.3g} GB/s ({r.error:+.1%} in time)"
    return text


def _op_section(op: str, rows: list[Record]) -> list[str]:
    errors = [abs(r.error) for r in rows if r.error is not None]
    lines = [f"## {op}", "", _headline(op, rows)]
    if errors:
        lines.append(
            f"- |error| of the predicted time: median {pct(median(errors))}, "
            f"p90 {pct(quantile(errors, 0.9))} over {len(errors)} sizes"
        )
    table = []
    for r in rows:
        predicted = predicted_busbw_bytes_per_s(r)
        table.append(
            [
                size_text(r.bytes),
                fmt(r.measured_s, ".2f", 1e6),
                fmt(r.achieved_gbps, ".3g"),
                fmt(busbw_bytes_per_s(r) / 1e9 if r.gpus and r.gpus > 1 else None, ".3g"),
                fmt(predicted / 1e9 if predicted else None, ".3g"),
                fmt(r.predicted_s, ".2f", 1e6),
                pct(r.error) if r.error is not None else NONE,
                r.bound or NONE,
            ]
        )
    headers = ["size", "time (us)", "algbw GB/s", "busbw GB/s", "predicted busbw", "predicted (us)"]
    lines += ["", *markdown_table(headers + ["error", "bound"], table), ""]
    return lines


def summarize(records: list[Record], meta: dict) -> str:
    by_op: dict[str, list[Record]] = defaultdict(list)
    for r in sorted(records, key=lambda r: (r.op, r.bytes or 0)):
        if _measured(r):
            by_op[r.op].append(r)
    lines = ["# roofbench comm", "", *_run_lines(meta, records), ""]
    for op, rows in by_op.items():
        lines += _op_section(op, rows)
    problems = [r for r in records if r.status != "ok"]
    if problems:
        lines += ["## Skipped and failed", ""]
        lines += [f"- {r.status}: `{r.case}`: {r.reason or NONE}" for r in problems]
        lines.append("")
    wall = meta.get("wall_time_s")
    if wall is not None:
        lines.append(f"The run took {wall:.0f} s of wall time.")
    return "\n".join(lines) + "\n"


def busbw_figure(records: list[Record]) -> Figure:
    fig = Figure(figsize=(8, 5))
    ax = fig.add_subplot()
    series: dict[str, list[Record]] = defaultdict(list)
    for r in sorted(records, key=lambda r: r.bytes or 0):
        if _measured(r) and r.gpus and r.gpus > 1:
            series[r.op].append(r)
    for i, (op, rows) in enumerate(sorted(series.items())):
        color = f"C{i}"
        xs = [r.bytes for r in rows]
        ax.plot(xs, [busbw_bytes_per_s(r) / 1e9 for r in rows], "o-", color=color, label=op)
        predicted = [(r.bytes, predicted_busbw_bytes_per_s(r)) for r in rows]
        predicted = [(x, y / 1e9) for x, y in predicted if y]
        if predicted:
            ax.plot(*zip(*predicted, strict=True), "--", color=color, label=f"{op} (theory)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("message size S (bytes)")
    ax.set_ylabel("bus bandwidth (GB/s)")
    gpus = sorted({r.gpus for r in records if r.gpus})
    ax.set_title(f"Collectives over {', '.join(map(str, gpus)) or '?'} ranks")
    ax.grid(True, which="both", alpha=0.3)
    if series:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "nothing measured over 2 or more ranks", transform=ax.transAxes)
    return fig


def write_report(folder: Path) -> None:
    """summary.md and comm.png; ValueError (nothing written) when the records or run.json
    cannot be read or hold nothing."""
    folder = Path(folder)
    meta, records = read_run(folder)
    text = summarize(records, meta)
    (folder / "summary.md").write_text(text)
    busbw_figure(records).savefig(folder / "comm.png", dpi=120, bbox_inches="tight")
