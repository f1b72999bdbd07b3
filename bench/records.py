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
    op: str  # gemm | gemv | prefill_attention | decode_attention | copy | matmul
    impl: str  # triton | torch
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

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Record))
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
    """Records from a CSV written by `RecordWriter`; columns it does not know are ignored."""
    with Path(path).open(newline="") as file:
        rows = list(csv.DictReader(file))
    missing = [c for c in COLUMNS if rows and c not in rows[0]]
    if missing:
        raise ValueError(f"{path}: missing columns {', '.join(missing)}")
    return [Record(**{n: _parse(n, row[n]) for n in COLUMNS if n in row}) for row in rows]


def replace(record: Record, **changes) -> Record:
    return dataclasses.replace(record, **changes)
