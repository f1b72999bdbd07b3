"""Compare two runs case by case and call each a regression, an improvement or noise.

A case is matched by (case, impl, dtype, op). The new run is `slower` only when its median exceeds
the base median by more than the case's limit AND the two spreads (p20..p80, or
pytest-benchmark's q1..q3) do not overlap: a shift inside the run-to-run noise is not a
regression. `faster` is the mirror image. A case that moved past its limit while its p20..p80 in
the new run is wider than UNSETTLED_WIDTH of its median is `unsettled`: listed with its ratio,
neither passed nor failed.

Compare fails closed: a case the base measured is `missing` when the new run lacks it or skipped
it, `failed` when it failed there (its correctness gate, say), `invalid` when its time is zero,
negative or not a number; each of these fails the comparison (exit 1) unless `allow_missing` lets
missing ones pass. Cases only the new run has are `new`. A case listed twice in one file is an
error, and two runs of different GPUs are not compared unless asked.

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
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from roofbench.bench.core.records import COLUMNS, Record, read_records

VERDICTS = ("slower", "faster", "same", "unsettled", "missing", "failed", "invalid", "new")
FAILING = ("slower", "missing", "failed", "invalid")
VERDICT_STYLES = {
    "slower": "bold red",
    "faster": "green",
    "same": "",
    "unsettled": "yellow",
    "missing": "yellow",
    "failed": "bold red",
    "invalid": "bold red",
    "new": "cyan",
}
FORMATS = ("table", "markdown", "csv", "json")

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
    session_spread: float = 0.0  # a multi-run baseline's spread of medians between sessions

    @property
    def width(self) -> float:
        """The p20..p80 spread relative to the median: (high - low) / median."""
        return (self.high_s - self.low_s) / self.median_s

    @classmethod
    def of(cls, record: Record) -> Timing:
        """From a record; a missing spread is taken as zero-width (the median itself)."""
        median = record.measured_s
        low = record.p20_s if record.p20_s is not None else median
        high = record.p80_s if record.p80_s is not None else median
        spread = record.session_spread or 0.0
        return cls(median, low, high, bool(record.throttled), spread)


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
    reason: str = ""

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


def _valid_time(record: Record) -> bool:
    t = record.measured_s
    return t is not None and math.isfinite(t) and t > 0


def _by_key(records: list[Record], label: str) -> dict[Key, Record]:
    """Records by key; a key listed twice is an error (ValueError), not "last wins"."""
    out: dict[Key, Record] = {}
    for r in records:
        key = (r.case, r.impl, r.dtype, r.op)
        if key in out:
            raise ValueError(f"{label} lists {r.case} {r.impl} twice")
        out[key] = r
    return out


# A case that moved past its limit while its p20..p80 in the new run spans more than this share of
# its median did not settle: its median is no evidence either way, and it is listed `unsettled`
# (not failing) with its ratio.
# On three H200s, kernels that settle spanned at most 6% (15% for the power-capped 8192^3 matmul
# of the ceilings); SDPA's flash and cuDNN decode at batch 16-64, context 1024-8192 spanned 27-61%
# in some sessions and 1-3% in others, their medians moving by up to 2.4x with unchanged code.
UNSETTLED_WIDTH = 0.2

# A case of a multi-run baseline is held to at least this multiple of its spread between
# sessions (the runs that built it: a new session is one more draw from the same spread).
SESSION_FACTOR = 1.5


def threshold_for(base: Timing, new: Timing, threshold: float, throttled_threshold: float) -> float:
    """The threshold a matched case is held to: the wider one when either run was throttled, at
    least SESSION_FACTOR x the baseline's spread between sessions, and at least the two runs'
    p20..p80 widths added (each relative to its median).

    The last bound is for a kernel whose times do not settle within a run: its median moves by
    about its own spread from one run to the next, so a shift inside the two spreads is not
    evidence. On an H200, SDPA's flash decode at batch 16, context 8192 measured p20..p80
    148..234 us (median 200 us) in one run and 142..145 us (median 144 us) in the baselines,
    with unchanged code; a kernel that settles (width ~1%) is still held to the threshold."""
    limit = max(threshold, throttled_threshold) if base.throttled or new.throttled else threshold
    return max(limit, SESSION_FACTOR * base.session_spread, base.width + new.width)


def plan_change(base: Record, new: Record) -> str:
    """Where both runs recorded a launch plan and they differ (a tuner picked another tile, a
    library another kernel): said beside the verdict, since a time that moved with its plan is
    the choice that changed, not the kernel."""
    if not (base.plan and new.plan):
        return ""
    older, newer = base.plan, new.plan
    if ("mma " in older) != ("mma " in newer):  # a plan recorded before the MMA kind was named
        older, newer = (re.sub(r" mma \w+", "", p) for p in (older, newer))
    if older != newer:
        return f"plan changed: {base.plan} -> {new.plan}"
    return ""


def compare(
    base_records: list[Record],
    new_records: list[Record],
    threshold: float = 0.05,
    throttled_threshold: float = THROTTLED_THRESHOLD,
) -> list[Comparison]:
    """One comparison per case the base measured, then the cases only the new run has.

    A base case that was not measured there (skipped, failed) is no reference and is left out.
    """
    base = {
        k: r
        for k, r in _by_key(base_records, "base").items()
        if r.status == "ok" and _valid_time(r)
    }
    new = _by_key(new_records, "new")
    result = []
    for key, record in base.items():
        base_timing = Timing.of(record)
        other = new.get(key)
        if other is None:
            result.append(Comparison(*key, base_timing, None, "missing", reason="not in new"))
        elif other.status == "failed":
            result.append(Comparison(*key, base_timing, None, "failed", reason=other.reason))
        elif other.status != "ok":
            why = f"{other.status}: {other.reason}"
            result.append(Comparison(*key, base_timing, None, "missing", reason=why))
        elif not _valid_time(other):
            why = f"measured {other.measured_s!r} s"
            result.append(Comparison(*key, base_timing, None, "invalid", reason=why))
        else:
            new_timing = Timing.of(other)
            limit = threshold_for(base_timing, new_timing, threshold, throttled_threshold)
            why = plan_change(record, other)
            verdict_ = verdict(base_timing, new_timing, limit)
            if verdict_ != "same" and new_timing.width > UNSETTLED_WIDTH:
                verdict_ = "unsettled"
                spans = f"p20..p80 spans {new_timing.width:.0%} of the median"
                why = "; ".join(filter(None, [spans, why]))
            result.append(Comparison(*key, base_timing, new_timing, verdict_, limit, reason=why))
    result += [
        Comparison(*key, None, Timing.of(r), "new")
        for key, r in new.items()
        if key not in base and r.status == "ok" and _valid_time(r)
    ]
    return result


def identity(records: list[Record]) -> dict[str, str]:
    """The distinct GPU, driver, torch, triton, roofbench version and commit of a run."""
    fields = ("gpu", "driver", "torch", "triton", "roofbench", "commit")
    return {
        f: ", ".join(sorted({str(getattr(r, f)) for r in records if getattr(r, f, "")})) or "?"
        for f in fields
    }


def check_same_gpu(base: list[Record], new: list[Record], allow: bool) -> None:
    """ValueError when the two runs were measured on different GPUs (unless `allow`)."""
    gpus = [{r.gpu for r in rs if r.gpu and r.status == "ok"} for rs in (base, new)]
    if not allow and gpus[0] and gpus[1] and gpus[0] != gpus[1]:
        raise ValueError(
            f"base ran on {', '.join(sorted(gpus[0]))}, new on {', '.join(sorted(gpus[1]))}: "
            "times of two GPUs are not a regression test (--allow-other-gpu to compare anyway)"
        )


def exit_code(comparisons: list[Comparison], allow_missing: bool = False) -> int:
    """1 when any case got slower, failed, was measured nonsensically or (unless
    `allow_missing`) is missing; also 1 when nothing was compared at all; else 0."""
    failing = [v for v in FAILING if not (allow_missing and v == "missing")]
    compared = any(c.verdict in ("slower", "faster", "same") for c in comparisons)
    return int(any(c.verdict in failing for c in comparisons) or not compared)


# ----------------------------------------------------------------------------- loading


RECORDS_FILES = ("records.csv", "model_records.csv")  # a kernel run's, a model run's


def run_records_file(folder: Path) -> Path:
    """The records file of a run folder; ValueError when it holds none."""
    for name in RECORDS_FILES:
        if (folder / name).is_file():
            return folder / name
    raise ValueError(f"{folder}: a folder without {' or '.join(RECORDS_FILES)}")


def load_results(path: str | os.PathLike) -> list[Record]:
    """Records from a records CSV, a run folder holding one, or a pytest-benchmark JSON file
    (told apart by content); ValueError naming the file for anything else."""
    path = Path(path)
    if path.is_dir():
        path = run_records_file(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: neither a records CSV nor a pytest-benchmark JSON") from None
    if text.lstrip().startswith(("{", "[")):
        try:
            data = json.loads(text)
        except ValueError as err:
            raise ValueError(f"{path}: not JSON ({err})") from None
        return records_from_benchmark_json(data, source=str(path))
    return read_records(path)


def records_from_benchmark_json(data: dict, source: str = "benchmark JSON") -> list[Record]:
    """One record per pytest-benchmark entry.

    The suite stores the record's fields in `extra_info`; the time is the entry's `stats.median`
    and the spread is extra_info's p20_s/p80_s when present, else stats q1/q3. Without a `case`
    in extra_info the benchmark's name stands for it.
    """
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise ValueError(f"{source}: not a pytest-benchmark file (no list of 'benchmarks')")
    records = []
    for bench in data["benchmarks"]:
        if not isinstance(bench, dict) or not isinstance(bench.get("stats"), dict):
            raise ValueError(f"{source}: a benchmark without stats")
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
    """E.g. "4 matched: 1 slower, 0 faster, 2 same, 1 unsettled; 1 missing, 0 failed, 0 invalid,
    0 new"."""
    counts = Counter(c.verdict for c in comparisons)
    judged = ("slower", "faster", "same", "unsettled")
    matched = sum(counts[v] for v in judged)
    timed = ", ".join(f"{counts[v]} {v}" for v in judged)
    rest = ", ".join(f"{counts[v]} {v}" for v in ("missing", "failed", "invalid", "new"))
    return f"{matched} matched: {timed}; {rest}"


def rows(comparisons: list[Comparison]) -> list[dict]:
    """One plain row per comparison (what every format prints)."""
    return [
        {
            "case": c.case,
            "impl": c.impl,
            "base": _timing_text(c.base),
            "new": _timing_text(c.new),
            "ratio": "—" if c.ratio is None else f"{c.ratio:.3f}",
            "limit": "—" if c.threshold is None else f"{c.threshold:.0%}",
            "verdict": c.verdict,
            "reason": c.reason,
        }
        for c in comparisons
    ]


def render_text(comparisons: list[Comparison], fmt: str, header: list[str]) -> str:
    """markdown (a CI step summary, a PR comment), csv or json; case ids are never cut."""
    import csv
    import io

    table = rows(comparisons)
    if fmt == "json":
        return json.dumps({"runs": header, "cases": table, "summary": summary_line(comparisons)})
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(table[0]) if table else ["case"])
        writer.writeheader()
        writer.writerows(table)
        return out.getvalue()
    lines = [f"- {line}" for line in header] + [""]
    columns = ["case", "impl", "base", "new", "ratio", "limit", "verdict", "reason"]
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in table:
        cells = [f"`{row['case']}`"] + [row[c].replace("|", "/") for c in columns[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join([*lines, "", summary_line(comparisons)])


def render_comparison(
    comparisons: list[Comparison], console: Console, header: list[str] = ()
) -> None:
    """A table (case, impl, base, new, ratio, the threshold held to, verdict) and a summary."""
    for line in header:
        console.print(line, markup=False, highlight=False)
    # Text titles: rich would read "[spread]" as markup and drop it.
    table = Table(title=Text("base vs new: median [p20..p80]"))
    for column in ("case", "impl", "base", "new", "ratio", "limit", "verdict"):
        justify = "right" if column in ("ratio", "limit") else "left"
        # Case ids fold onto several lines rather than being cut.
        table.add_column(column, justify=justify, overflow="fold" if column == "case" else None)
    for c in comparisons:
        # Text, not markup: pytest names such as "test_gemm[m1]" hold brackets.
        table.add_row(
            Text(c.case),
            Text(c.impl),
            Text(_timing_text(c.base)),
            Text(_timing_text(c.new)),
            "—" if c.ratio is None else f"{c.ratio:.3f}",
            "—" if c.threshold is None else f"{c.threshold:.0%}",
            Text(
                c.verdict + (f": {c.reason}" if c.reason else ""), style=VERDICT_STYLES[c.verdict]
            ),
        )
    console.print(table)
    console.print(summary_line(comparisons), markup=False)
