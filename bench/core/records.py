"""One record per measurement, and the CSV file they are written to row by row.

The `Record` dataclass is the schema: its field order is the column order. A row is flushed as
soon as it is measured, so a run that dies midway leaves a valid CSV of what finished.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from dataclasses import dataclass, fields
from pathlib import Path

STATUSES = ("ok", "skipped", "failed")


@dataclass
class Record:
    """Predicted vs measured for one (case, implementation); empty fields are None."""

    case: str  # stable id of the shape, shared by every implementation of it
    op: str  # an op of kernels.spec (gemm, gemv, ...) | copy | matmul | read | launch | gate
    impl: str  # a registered implementation (triton, torch, sdpa_flash, a plugin's, ...)
    dtype: str
    batch: int | None = None
    seq: int | None = None  # sequence (prefill) or context (decode) length
    m: int | None = None
    n: int | None = None
    k: int | None = None
    heads: int | None = None
    kv_heads: int | None = None
    head_dim: int | None = None
    flops: float | None = None
    bytes: float | None = None
    intensity: float | None = None
    predicted_s: float | None = None  # on the measured roof
    predicted_datasheet_s: float | None = None
    bound: str | None = None  # compute | memory | latency, on the measured roof
    measured_s: float | None = None  # median GPU time per call
    p20_s: float | None = None
    p80_s: float | None = None
    samples: int | None = None
    error: float | None = None  # measured / predicted - 1
    achieved_tflops: float | None = None
    achieved_gbps: float | None = None
    roof_fraction: float | None = None  # roofline ceiling time (no launch) / measured time
    max_abs_err: float | None = None
    sm_clock_mhz: float | None = None
    power_w: float | None = None
    temp_c: float | None = None
    clock_event_reasons: str | None = None
    nvml_dram_gbps: float | None = None
    nvml_tensor_util: float | None = None
    status: str = "ok"
    reason: str = ""
    gpu: str = ""
    driver: str = ""
    torch: str = ""
    triton: str = ""
    commit: str = ""
    timestamp: str = ""
    # Beyond the required columns.
    method: str = ""  # events | graph
    rel_err: float | None = None
    sm_clock_min_mhz: float | None = None
    throttled: bool | None = None
    nvml_sm_occupancy: float | None = None
    sweep: str = ""
    # The implementation's declared launch plan (theory.plan.LaunchPlan), where it gives one.
    launches: int | None = None  # kernels one call launches
    partial_bytes: float | None = None  # bytes of partial results passed between them
    plan: str = ""  # e.g. "2 kernels: gemv grid 128x4x1 tile 4x512x... split 4; sum_splits ..."
    plan_source: str = ""  # declared | observed
    # The tiered model (theory.tiers), where the run was calibrated: the prediction at each
    # tier; the top tier's seconds by term; measured - predicted; the error of the measured-roof
    # roofline that `error` meant before the tiers; whether the time beat the T1 roof by > 2%.
    predicted_t0_s: float | None = None
    predicted_t1_s: float | None = None
    predicted_t2_s: float | None = None
    predicted_t3_s: float | None = None
    predicted_t4_s: float | None = None
    predicted_t5_s: float | None = None
    predicted_t6_s: float | None = None
    time_launch_s: float | None = None
    time_fixed_s: float | None = None
    time_writeback_s: float | None = None
    time_memory_s: float | None = None
    time_compute_s: float | None = None
    time_exp_s: float | None = None
    time_alu_s: float | None = None
    residual_s: float | None = None
    error_roofline: float | None = None
    roof_violation: bool | None = None
    roofbench: str = ""  # roofbench's version (`commit` is its source revision)
    # A baseline built from several runs (`roofbench baseline`): how many runs measured the
    # case, and the spread of their medians (max / min - 1): the noise between sessions.
    sessions: int | None = None
    session_spread: float | None = None
    gpus: int | None = None  # ranks a collective ran over (roofbench comm)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Record))
# Columns appended after the first committed runs: a file without them still reads (they take
# their defaults), so older results keep loading and comparing.
APPENDED = (
    "launches",
    "partial_bytes",
    "plan",
    "plan_source",
    *(f"predicted_t{i}_s" for i in range(7)),
    *(f"time_{t}_s" for t in ("launch", "fixed", "writeback", "memory", "compute", "exp", "alu")),
    "residual_s",
    "error_roofline",
    "roof_violation",
    "roofbench",
    "sessions",
    "session_spread",
    "gpus",
)
_TYPES = {f.name: f.type for f in fields(Record)}


def _parse(name: str, text: str):
    """A CSV cell back to its field's type ('' is None for optional fields)."""
    kind = _TYPES[name]
    if text == "":
        return None if "None" in kind else ""
    if kind.startswith("int"):
        return int(float(text))
    if kind.startswith("float"):
        return float(text)
    if kind.startswith("bool"):
        return text == "True"
    return text


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


class RecordWriter:
    """Appends records to a CSV file, one flushed and fsynced row at a time."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._file = self.path.open("a", newline="")
        self._csv = csv.writer(self._file)
        if new:
            self._csv.writerow(COLUMNS)
            self._flush()

    def write(self, record: Record) -> None:
        self._csv.writerow(_cell(getattr(record, name)) for name in COLUMNS)
        self._flush()

    def _flush(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_records(path: str | os.PathLike) -> list[Record]:
    """Records from a CSV written by `RecordWriter`; columns it does not know are ignored.

    A file that is not such a CSV (another file, a directory, a cell that does not parse)
    raises ValueError naming the file and the row.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not a records CSV")
    try:
        with path.open(newline="", encoding="utf-8") as file:
            rows = list(csv.DictReader(file))
    except (UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"{path}: not a records CSV ({err})") from None
    missing = [c for c in COLUMNS if rows and c not in rows[0] and c not in APPENDED]
    if missing:
        raise ValueError(f"{path}: missing columns {', '.join(missing)}")
    records = []
    for line, row in enumerate(rows, 2):
        try:
            records.append(
                Record(**{n: _parse(n, row[n]) for n in COLUMNS if row.get(n) is not None})
            )
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path} row {line}: {err}") from None
    return records


def drop_partial_row(path: str | os.PathLike) -> str | None:
    """Cut a last row a killed writer left without its newline; returns what was dropped (None
    when the file ends cleanly), so that appended rows never glue onto a cut one."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return None
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return None
    cut = data.rfind(b"\n") + 1
    with path.open("r+b") as file:
        file.truncate(cut)
    return data[cut:].decode("utf-8", "replace")


def replace(record: Record, **changes) -> Record:
    return dataclasses.replace(record, **changes)


def progress_line(record: Record) -> str:
    """One line per finished measurement, for the console."""
    head = f"{record.case} {record.impl}"
    if record.status != "ok":
        return f"{head}: {record.status} ({record.reason})"
    flag = " THROTTLED" if record.throttled else ""
    return (
        f"{head}: {record.measured_s * 1e6:.1f} us, predicted {record.predicted_s * 1e6:.1f} us "
        f"({record.error:+.1%}), {record.achieved_tflops:.1f} TFLOP/s, "
        f"{record.achieved_gbps:.0f} GB/s, {record.roof_fraction:.0%} of roof{flag}"
    )
