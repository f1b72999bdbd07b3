"""Compare two runs case by case and call each a regression, an improvement or noise.

A case is matched by (case, impl, dtype, op). The new run is `slower` only when its median exceeds
the base median by more than the threshold AND the two spreads (p20..p80, or pytest-benchmark's
q1..q3) do not overlap: a shift inside the run-to-run noise is not a regression. `faster` is the
mirror image. Cases in only one run are `missing` (base only) or `new` (new run only).

A case flagged `throttled` in either run (a power or thermal clock-event reason, or a clock drop)
is held to a wider threshold: under a power cap the SM clock a compute-bound kernel gets moves
between batches of samples, so two batches can differ by more than their own p20..p80 spreads.
On an H200 two batches of the same compute-bound GEMM, a second apart, differed by up to 12%
while each batch's p20..p80 was within 1%.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from roofbench.bench.core.records import COLUMNS, Record, read_records

VERDICTS = ("slower", "faster", "same", "missing", "new")
VERDICT_STYLES = {
    "slower": "bold red",
    "faster": "green",
    "same": "",
    "missing": "yellow",
    "new": "cyan",
}

Key = tuple[str, str, str, str]  # (case, impl, dtype, op)

# The default threshold for throttled cases: above the 12% batch-to-batch shift measured on a
# power-capped H200 (see the module docstring).
THROTTLED_THRESHOLD = 0.15


@dataclass(frozen=True)
class Timing:
    """Median time of one case and its spread (low and high quantiles), in seconds."""

    median_s: float
    low_s: float
    high_s: float
    throttled: bool = False

    @classmethod
    def of(cls, record: Record) -> Timing:
        """From a record; a missing spread is taken as zero-width (the median itself)."""
        median = record.measured_s
        low = record.p20_s if record.p20_s is not None else median
        high = record.p80_s if record.p80_s is not None else median
        return cls(median, low, high, bool(record.throttled))


@dataclass(frozen=True)
class Comparison:
    """One matched (or unmatched) case: base and new timings and the verdict."""

    case: str
    impl: str
    dtype: str
    op: str
    base: Timing | None
    new: Timing | None
    verdict: str
    threshold: float | None = None

    @property
    def ratio(self) -> float | None:
        """New median / base median (> 1: the new run is slower)."""
        if self.base is None or self.new is None:
            return None
        return self.new.median_s / self.base.median_s


def parse_threshold(text: str) -> float:
    """A relative threshold from "5%" or "0.05" (both 0.05); ValueError for anything else."""
    raw = text.strip()
    percent = raw.endswith("%")
    try:
        value = float(raw[:-1] if percent else raw)
    except ValueError:
        raise ValueError(f"threshold {text!r} is not a number; write e.g. 5% or 0.05") from None
    if percent:
        value /= 100
    elif value >= 1:
        # "5" more likely means 5% than 500%: refuse to guess.
        raise ValueError(f"threshold {text!r} is ambiguous; write {raw}% or {value / 100:g}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"threshold must be a non-negative finite number, got {text!r}")
    return value


def verdict(base: Timing, new: Timing, threshold: float) -> str:
    """`slower`, `faster` or `same` for one matched case (see the module docstring)."""
    if new.median_s > base.median_s * (1 + threshold) and new.low_s > base.high_s:
        return "slower"
    if base.median_s > new.median_s * (1 + threshold) and base.low_s > new.high_s:
        return "faster"
    return "same"


def _timed(records: list[Record]) -> dict[Key, Record]:
    """Records with a measured time by key; a later record of the same key replaces an earlier."""
    return {
        (r.case, r.impl, r.dtype, r.op): r
        for r in records
        if r.status == "ok" and r.measured_s is not None and r.measured_s > 0
    }


def threshold_for(base: Timing, new: Timing, threshold: float, throttled_threshold: float) -> float:
    """The threshold a matched case is held to: the wider one when either run was throttled."""
    if base.throttled or new.throttled:
        return max(threshold, throttled_threshold)
    return threshold


def compare(
    base_records: list[Record],
    new_records: list[Record],
    threshold: float = 0.05,
    throttled_threshold: float = THROTTLED_THRESHOLD,
) -> list[Comparison]:
    """One comparison per key in either run; base order first, then cases only the new run has.

    Only records with a measured time take part: a case skipped or failed in the new run shows as
    `missing`.
    """
    base, new = _timed(base_records), _timed(new_records)
    result = []
    for key, record in base.items():
        base_timing = Timing.of(record)
        if key in new:
            new_timing = Timing.of(new[key])
            limit = threshold_for(base_timing, new_timing, threshold, throttled_threshold)
            result.append(
                Comparison(
                    *key, base_timing, new_timing, verdict(base_timing, new_timing, limit), limit
                )
            )
        else:
            result.append(Comparison(*key, base_timing, None, "missing"))
    result += [
        Comparison(*key, None, Timing.of(r), "new") for key, r in new.items() if key not in base
    ]
    return result


def exit_code(comparisons: list[Comparison]) -> int:
    """1 when any case got slower, else 0."""
    return int(any(c.verdict == "slower" for c in comparisons))


# ----------------------------------------------------------------------------- loading


def load_results(path: str | os.PathLike) -> list[Record]:
    """Records from a records CSV or from a pytest-benchmark JSON file (told apart by content)."""
    path = Path(path)
    text = path.read_text()
    if text.lstrip().startswith("{"):
        return records_from_benchmark_json(json.loads(text), source=str(path))
    return read_records(path)


def records_from_benchmark_json(data: dict, source: str = "benchmark JSON") -> list[Record]:
    """One record per pytest-benchmark entry.

    The suite stores the record's fields in `extra_info`; the time is the entry's `stats.median`
    and the spread is extra_info's p20_s/p80_s when present, else stats q1/q3. Without a `case`
    in extra_info the benchmark's name stands for it.
    """
    if "benchmarks" not in data:
        raise ValueError(f"{source}: not a pytest-benchmark file (no 'benchmarks' key)")
    records = []
    for bench in data["benchmarks"]:
        info = {k: v for k, v in (bench.get("extra_info") or {}).items() if k in COLUMNS}
        stats = bench["stats"]
        fields = {
            "case": bench["name"],
            "op": "",
            "impl": "",
            "dtype": "",
            **info,
            "measured_s": stats["median"],
            "p20_s": info.get("p20_s", stats.get("q1")),
            "p80_s": info.get("p80_s", stats.get("q3")),
        }
        fields.setdefault("samples", stats.get("rounds"))
        records.append(Record(**fields))
    return records


# ----------------------------------------------------------------------------- rendering


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    for factor, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "us")):
        if value >= factor:
            return f"{value / factor:.3g} {unit}"
    return f"{value / 1e-9:.3g} ns"


def _timing_text(timing: Timing | None) -> str:
    if timing is None:
        return "—"
    return f"{_seconds(timing.median_s)} [{_seconds(timing.low_s)}..{_seconds(timing.high_s)}]"


def summary_line(comparisons: list[Comparison]) -> str:
    """E.g. "3 matched: 1 slower, 0 faster, 2 same; 1 missing, 0 new"."""
    counts = Counter(c.verdict for c in comparisons)
    matched = sum(counts[v] for v in ("slower", "faster", "same"))
    timed = ", ".join(f"{counts[v]} {v}" for v in ("slower", "faster", "same"))
    return f"{matched} matched: {timed}; {counts['missing']} missing, {counts['new']} new"


def render_comparison(comparisons: list[Comparison], console: Console) -> None:
    """A table (case, impl, base, new, ratio, the threshold held to, verdict) and a summary."""
    table = Table(title="base vs new (median [spread])")
    for column in ("case", "impl", "base", "new", "ratio", "limit", "verdict"):
        table.add_column(column, justify="right" if column in ("ratio", "limit") else "left")
    for c in comparisons:
        # Text, not markup: pytest names such as "test_gemm[m1]" hold brackets.
        table.add_row(
            Text(c.case),
            Text(c.impl),
            Text(_timing_text(c.base)),
            Text(_timing_text(c.new)),
            "—" if c.ratio is None else f"{c.ratio:.3f}",
            "—" if c.threshold is None else f"{c.threshold:.0%}",
            Text(c.verdict, style=VERDICT_STYLES[c.verdict]),
        )
    console.print(table)
    console.print(summary_line(comparisons), markup=False)
