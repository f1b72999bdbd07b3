"""bench/records: the CSV schema, row-by-row writing and reading back."""

import csv

import pytest

from roofbench.bench.core.records import COLUMNS, Record, RecordWriter, read_records

REQUIRED = [
    "case",
    "op",
    "impl",
    "dtype",
    "batch",
    "seq",
    "m",
    "n",
    "k",
    "heads",
    "kv_heads",
    "head_dim",
    "flops",
    "bytes",
    "intensity",
    "predicted_s",
    "predicted_datasheet_s",
    "bound",
    "measured_s",
    "p20_s",
    "p80_s",
    "samples",
    "error",
    "achieved_tflops",
    "achieved_gbps",
    "roof_fraction",
    "max_abs_err",
    "sm_clock_mhz",
    "power_w",
    "temp_c",
    "clock_event_reasons",
    "nvml_dram_gbps",
    "nvml_tensor_util",
    "status",
    "reason",
    "gpu",
    "driver",
    "torch",
    "triton",
    "commit",
    "timestamp",
]


def test_the_required_columns_come_first_in_order():
    assert COLUMNS[: len(REQUIRED)] == tuple(REQUIRED)


def test_records_round_trip_with_types_and_empty_fields(tmp_path):
    path = tmp_path / "run" / "records.csv"
    ok = Record(case="c", op="gemv", impl="triton", dtype="bf16", m=1, measured_s=4.2e-5)
    ok.throttled = True
    skipped = Record(
        case="d",
        op="gemm",
        impl="torch",
        dtype="bf16",
        status="skipped",
        reason="out of memory, 9 GB",
    )
    with RecordWriter(path) as writer:
        writer.write(ok)
        writer.write(skipped)
    back = read_records(path)
    assert back[0] == ok
    assert back[1].measured_s is None and back[1].reason == "out of memory, 9 GB"


def test_each_row_is_on_disk_before_the_next_is_measured(tmp_path):
    """A run killed after one row leaves a readable CSV holding that row."""
    path = tmp_path / "records.csv"
    writer = RecordWriter(path)
    writer.write(Record(case="a", op="gemm", impl="torch", dtype="bf16"))
    # Read while the writer is still open, as after a crash.
    with path.open() as file:
        rows = list(csv.reader(file))
    assert rows[0] == list(COLUMNS) and rows[1][0] == "a"
    writer.close()


def test_appending_to_an_existing_file_keeps_one_header(tmp_path):
    path = tmp_path / "records.csv"
    for case in ("a", "b"):
        with RecordWriter(path) as writer:
            writer.write(Record(case=case, op="gemm", impl="torch", dtype="bf16"))
    assert [r.case for r in read_records(path)] == ["a", "b"]


def test_a_bad_status_is_refused():
    with pytest.raises(ValueError, match="status"):
        Record(case="a", op="gemm", impl="torch", dtype="bf16", status="maybe")


def test_a_csv_without_the_schema_is_refused(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("case,op\na,gemm\n")
    with pytest.raises(ValueError, match="missing columns"):
        read_records(path)
