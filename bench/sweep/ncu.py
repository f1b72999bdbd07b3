"""`roofbench run --ncu`: Nsight Compute's view of a few cases, beside the timed records.

For the smallest and the largest measured case of each op and implementation, `ncu` runs one
call of it in a fresh process (`bench.sweep.ncu_target`, between cudaProfilerStart and Stop):

    ncu --cache-control all --clock-control none --profile-from-start off --csv
        --print-units base --metrics gpu__time_duration.sum,dram__bytes_read.sum,
        dram__bytes_write.sum python -m roofbench.bench.sweep.ncu_target SPEC

and each kernel's duration and DRAM bytes read and written go to ncu.csv. The cross-check is
excess traffic = DRAM bytes moved / compulsory bytes (theory.ops), beside the same ratio from
NVML's GPM counters (the record's nvml_dram_gbps x measured time / bytes). `--clock-control none`
leaves the clocks as the card runs them; ncu's replay serializes kernels and flushes caches, so
its durations are a kernel alone, cold, not the timed median. Without ncu on PATH: skipped, with
the reason.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from roofbench.bench.core.attribution import shape_of
from roofbench.bench.core.records import Record

METRICS = ("gpu__time_duration.sum", "dram__bytes_read.sum", "dram__bytes_write.sum")
NCU_CSV = "ncu.csv"
TIMEOUT_S = 120


@dataclass
class NcuKernel:
    """One kernel Nsight Compute profiled for one case."""

    case: str
    impl: str
    kernel: str
    duration_s: float
    dram_read_bytes: float
    dram_write_bytes: float
    compulsory_bytes: float


def unavailable() -> str | None:
    """None when ncu is on PATH, else why the cross-check is skipped."""
    return None if shutil.which("ncu") else "ncu (Nsight Compute) is not on PATH"


def pick(records: Sequence[Record], per_impl: int = 2) -> list[Record]:
    """The smallest and largest (by compulsory bytes) measured case of each op and
    implementation: `per_impl` of them (1: the largest)."""
    groups: dict[tuple[str, str], list[Record]] = {}
    for r in records:
        if r.status == "ok" and r.measured_s and r.op in _CASE_OPS:
            groups.setdefault((r.op, r.impl), []).append(r)
    chosen = []
    for group in groups.values():
        group.sort(key=lambda r: (r.bytes, r.case))
        ends = [group[-1], group[0]][: max(1, per_impl)]
        chosen += [r for i, r in enumerate(ends) if r not in ends[:i]]
    return chosen


_CASE_OPS = ("gemm", "gemv", "prefill_attention", "decode_attention")


def command(record: Record, plugins: Sequence[str] = ()) -> list[str]:
    spec = {"op": record.op, "impl": record.impl, "shape": shape_of(record)}
    spec["plugins"] = list(plugins)
    return [
        "ncu", "--cache-control", "all", "--clock-control", "none",
        "--profile-from-start", "off", "--csv", "--print-units", "base",
        "--metrics", ",".join(METRICS),
        sys.executable, "-m", "roofbench.bench.sweep.ncu_target", json.dumps(spec),
    ]  # fmt: skip


def parse(text: str, record: Record) -> list[NcuKernel]:
    """ncu's --csv rows (one per kernel and metric) as one NcuKernel per kernel launch."""
    lines = [line for line in text.splitlines() if line.startswith('"')]
    by_id: dict[str, dict] = {}
    for row in csv.DictReader(io.StringIO("\n".join(lines))):
        kernel = by_id.setdefault(row.get("ID", ""), {"name": row.get("Kernel Name", "")})
        value = (row.get("Metric Value") or "").replace(",", "")
        try:
            kernel[row.get("Metric Name", "")] = float(value)
        except ValueError:
            continue
    out = []
    for kernel in by_id.values():
        if METRICS[0] not in kernel:
            continue
        out.append(
            NcuKernel(
                record.case,
                record.impl,
                kernel["name"][:200],
                kernel[METRICS[0]] * 1e-9,  # nanoseconds in base units
                kernel.get(METRICS[1], 0.0),
                kernel.get(METRICS[2], 0.0),
                record.bytes,
            )
        )
    return out


def run_ncu(
    folder: Path, records: Sequence[Record], console, per_impl: int = 2, plugins=()
) -> list[NcuKernel]:
    """Profile the picked cases; ncu.csv in `folder` (rows appended as each case finishes)."""
    why = unavailable()
    if why:
        console.print(f"[yellow]--ncu skipped: {why}[/]")
        (folder / "ncu_skipped.txt").write_text(why + "\n")
        return []
    picked = pick(records, per_impl)
    path = folder / NCU_CSV
    names = [f.name for f in fields(NcuKernel)]
    rows: list[NcuKernel] = []
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(names)
        for i, record in enumerate(picked, 1):
            console.print(f"ncu {i}/{len(picked)}: {record.case} {record.impl}")
            try:
                done = subprocess.run(
                    command(record, plugins), capture_output=True, text=True, timeout=TIMEOUT_S
                )
            except subprocess.TimeoutExpired:
                console.print(f"[yellow]  ncu timed out after {TIMEOUT_S} s[/]")
                continue
            kernels = parse(done.stdout, record)
            if done.returncode != 0 or not kernels:
                tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
                console.print(f"[yellow]  ncu gave no kernels (rc {done.returncode}): {tail[0]}[/]")
                continue
            for k in kernels:
                writer.writerow([getattr(k, n) for n in names])
            f.flush()
            rows += kernels
    return rows


def read_ncu(folder: Path) -> list[NcuKernel]:
    path = folder / NCU_CSV
    if not path.exists():
        return []
    out = []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            try:
                out.append(
                    NcuKernel(
                        row["case"],
                        row["impl"],
                        row["kernel"],
                        *(
                            float(row[n])
                            for n in (
                                "duration_s",
                                "dram_read_bytes",
                                "dram_write_bytes",
                                "compulsory_bytes",
                            )
                        ),
                    )  # fmt: skip
                )
            except (KeyError, ValueError):
                continue
    return out
