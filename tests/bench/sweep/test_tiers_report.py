"""bench/sweep/tiers_report.py on a few made-up tiered records: the per-tier error table, the
roof violations, the worst rows, the shares of the measured time, the plot, the calibration."""

from roofbench.bench.core.records import Record
from roofbench.bench.sweep.tiers_report import (
    calibration_section,
    shares,
    tier_table,
    violations_section,
    where_time_goes_plot,
    worst_section,
)
from roofbench.theory.tiers import TERMS

US = 1e-6


def rec(case, op, impl, measured_us, t0_us, terms_us, **fields):
    """A tiered record: T0 given, T1..T6 the sum of the top tier's terms (so the terms explain
    the prediction exactly), error and residual as fill_tiers sets them."""
    t6 = sum(terms_us.values()) * US
    measured = measured_us * US
    tiers = {f"predicted_t{i}_s": t6 for i in range(1, 7)}
    terms = {f"time_{t}_s": terms_us.get(t, 0.0) * US for t in TERMS}
    return Record(
        case=case, op=op, impl=impl, dtype="bf16", measured_s=measured, predicted_s=t6,
        predicted_t0_s=t0_us * US, **tiers, **terms, error=measured / t6 - 1,
        residual_s=measured - t6, plan="1 kernel: k" if impl == "triton" else "",
        bound="compute" if "compute" in terms_us else "memory", **fields,
    )  # fmt: skip


MEM = {"launch": 2, "fixed": 3}
RECORDS = [
    # gemv triton: 10 us each; T0 errors +25%, +100%, -50%; T6 errors +11.1%, -16.7%, 0.
    rec("gemv/a", "gemv", "triton", 10, 8, MEM | {"memory": 4}),
    rec("gemv/b", "gemv", "triton", 10, 5, MEM | {"memory": 7}),
    rec(
        "gemv/c",
        "gemv",
        "triton",
        10,
        20,
        MEM | {"memory": 5},
        roof_violation=True,
        roof_fraction=1.05,
    ),  # fmt: skip
    rec("gemv/a", "gemv", "torch", 20, 10, {"launch": 4, "fixed": 3, "memory": 5}),  # +66.7%
    rec("gemm/a", "gemm", "triton", 100, 50, MEM | {"compute": 60}),  # +53.8%
    rec("gemm/b", "gemm", "triton", 50, 40, MEM | {"compute": 35}, roof_violation=False),  # +25%
    Record(case="gemv/d", op="gemv", impl="triton", dtype="bf16", status="skipped"),
]


def table_rows(lines):
    """The cells of a Markdown table's body rows."""
    body = [line for line in lines if line.startswith("| ")][1:]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in body]


def test_tier_table_has_one_row_per_op_and_impl_with_its_median_error():
    rows = table_rows(tier_table(RECORDS))
    assert [row[:3] for row in rows] == [
        ["gemm", "triton", "2"],
        ["gemv", "torch", "1"],
        ["gemv", "triton", "3"],  # the skipped record is not counted
    ]
    # gemv triton at T0: |error| 0.25, 1.0, 0.5: median 50%; p90 0.5 + 0.8 x 0.5 = 90%.
    assert rows[2][3] == "50.0% / 90.0%"
    # at T6: |error| 1/9, 1/6, 0: median 11.1%.
    assert rows[2][9].startswith("11.1% / ")
    assert rows[1][3] == "100.0% / 100.0%"  # gemv torch: 20 us against 10 us


def test_tier_table_says_so_without_tiered_records():
    assert "No record carries the tiers" in tier_table(RECORDS[-1:])[-1]


def test_violations_list_exactly_the_records_beyond_the_roof():
    lines = violations_section(RECORDS)
    listed = [line for line in lines if line.startswith("- ")]
    assert listed == ["- `gemv/c` triton: 5.0% over the roof"]
    lines = violations_section([r for r in RECORDS if not r.roof_violation])
    assert lines[-1].startswith("None")


def test_worst_rows_come_in_order_of_decreasing_absolute_error():
    rows = table_rows(worst_section(RECORDS))
    order = [(row[0], row[1]) for row in rows]
    assert order == [
        ("`gemv/a`", "torch"),  # +66.7%
        ("`gemm/a`", "triton"),  # +53.8%
        ("`gemm/b`", "triton"),  # +25.0%
        ("`gemv/b`", "triton"),  # -16.7%
        ("`gemv/a`", "triton"),  # +11.1%
        ("`gemv/c`", "triton"),  # 0
    ]
    assert rows[0][4] == "+66.7%" and rows[3][4] == "-16.7%"
    # gemv/b is over-predicted, and memory is its largest term; gemv/a torch (20 us, 8 us
    # under-predicted) is a short kernel: its residual is named the fixed cost.
    assert "over-predicted: the memory term" in rows[3][6]
    assert rows[0][6].startswith("fixed cost: 8.0 us")


def test_shares_of_terms_and_residual_sum_to_one():
    data = shares(RECORDS)
    assert set(data) == {("gemv", "triton"), ("gemv", "torch"), ("gemm", "triton")}
    for key, share in data.items():
        assert abs(sum(share.values()) - 1) < 1e-9, key
    # gemv torch, one case: launch 4 of 20 us, residual 1 - 12 / 20.
    assert abs(data[("gemv", "torch")]["launch"] - 0.2) < 1e-12
    assert abs(data[("gemv", "torch")]["residual"] - 0.4) < 1e-12
    # gemv triton: memory 4, 7, 5 of 10 us: mean 16 / 30.
    assert abs(data[("gemv", "triton")]["memory"] - 16 / 30) < 1e-12


def test_where_time_goes_plot_writes_a_png(tmp_path):
    path = where_time_goes_plot(RECORDS, tmp_path / "w.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_calibration_section_lists_each_constant_in_readable_units():
    doc = {
        "device": {"name": "H200", "driver": "570.1", "max_sm_clock_mhz": 1980},
        "created": "2026-12-01T00:00:00Z",
        "wall_time_s": 42.0,
        "constants": {
            "read_bytes_per_s": {"value": 4.5e12, "unit": "B/s", "method": "fastest of 5",
                                 "samples": 30, "spread": 0.012},
            "launch_s": {"value": 2.5e-6, "unit": "s", "method": "graph"},
        },
        "errors": {"chains": "RuntimeError: boom"},
    }  # fmt: skip
    lines = calibration_section(doc)
    rows = {row[0]: row for row in table_rows(lines)}
    assert set(rows) == {"read_bytes_per_s", "launch_s"}
    assert rows["read_bytes_per_s"][1:4] == ["4500 GB/s", "30", "1.2%"]
    assert rows["launch_s"][1] == "2.5 us"
    assert "H200 (driver 570.1" in "\n".join(lines)
    assert lines[-1] == "- probe `chains` failed: RuntimeError: boom"
    assert "No calibration" in calibration_section(None)[-1]


def test_a_kernel_of_few_programs_is_named_for_its_grid():
    few = rec("decode/a", "decode_attention", "sdpa_cudnn", 10, 2, MEM | {"memory": 1})
    few = Record(**{**few.__dict__, "plan": "1 kernel: cudnn_decode grid 1x8x1"})
    rows = table_rows(worst_section([few], sms=132))
    assert (
        rows[0][6]
        == "4.0 us more: its main kernel runs 8 programs on 132 SMs (the bandwidth of few programs)"
    )
    # Without the GPU's SM count (an uncalibrated run), the short-kernel reading stays.
    assert table_rows(worst_section([few]))[0][6].startswith("fixed cost: 4.0 us")
