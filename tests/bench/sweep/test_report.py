"""bench/report.py: the Markdown summary of a run, section by section, and the ridge rules."""

import pytest

from roofbench.bench.core.records import Record
from roofbench.bench.sweep.report import (
    MAX_LISTED,
    RIDGE_TIME_FACTOR,
    clock_reasons,
    measured_ridge_m,
    predicted_ridge_m,
    speedups,
    summarize,
)
from roofbench.theory import ops
from roofbench.theory.roofline import Roof

DATASHEET = Roof(989e12, 3.35e12, 4e-6, "datasheet h100-sxm bf16")
MEASURED = Roof(700e12, 3.0e12, 5e-6, "measured")
N, K = 14336, 4096
M_SWEEP = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
RUN = {
    "gpu": "NVIDIA H100 80GB HBM3",
    "driver": "570.86",
    "torch": "2.11.0",
    "triton": "3.6.0",
    "commit": "c1ff251",
    "sweep": "quick",
}


def rec(case, op, impl="triton", **fields):
    return Record(case=case, op=op, impl=impl, dtype="bf16", **{**RUN, **fields})


def linear_time_s(m, impl):
    """Flat at 41 us up to M=128, then rising: the ridge is measured at M=256."""
    flat_s = 41e-6 if impl == "triton" else 45e-6
    return flat_s if m <= 128 else flat_s * m / 128 * 1.5


def linear_records():
    return [
        rec(f"linear-m{m}", "gemv" if m == 1 else "gemm", impl, m=m, n=N, k=K,
            measured_s=linear_time_s(m, impl), timestamp="2026-11-21T10:01:00+00:00")
        for impl in ("triton", "torch")
        for m in M_SWEEP
    ]  # fmt: skip


def attention_records():
    prefill = [
        rec(f"prefill-s{s}", "prefill_attention", measured_s=t, error=e, roof_fraction=f,
            achieved_tflops=a, seq=s, timestamp="2026-11-21T10:00:00+00:00")
        for s, t, e, f, a in (
            (512, 1e-4, 0.1, 0.5, 100.0),
            (4096, 2e-4, -0.2, 0.7, 300.0),
            (32768, 3e-3, 0.3, 0.9, 500.0),
        )
    ]  # fmt: skip
    decode = [
        rec("decode-s4096", "decode_attention", impl, measured_s=t, achieved_gbps=g,
            nvml_dram_gbps=nv, seq=4096, timestamp="2026-11-21T10:05:00+00:00")
        for impl, t, g, nv in (("triton", 40e-6, 2000.0, 2200.0), ("torch", 50e-6, 1600.0, 2000.0))
    ]  # fmt: skip
    return prefill + decode


def telemetry_records():
    copy = rec("copy-2gib", "copy", "torch", measured_s=1e-3, achieved_gbps=3016.0,
               nvml_dram_gbps=3017.5, sm_clock_mhz=1980.0)  # fmt: skip
    hot = [
        rec(f"hot-{i}", "gemm", measured_s=1e-3, throttled=True, clock_event_reasons="0x4",
            sm_clock_mhz=1500.0, sm_clock_min_mhz=1365.0)
        for i in range(2)
    ]  # fmt: skip
    hw = rec("hw", "gemm", measured_s=1e-3, clock_event_reasons="hw_slowdown", sm_clock_mhz=1700.0)
    idle = rec("idle", "gemm", measured_s=1e-3, clock_event_reasons="0x1")  # idle is not capping
    return [copy, *hot, hw, idle]


def problem_records(count):
    return [
        rec(f"bad-{i:02d}", "gemm", status="failed" if i % 2 else "skipped", reason=f"reason {i}")
        for i in range(count)
    ]


def run_records():
    return linear_records() + attention_records() + telemetry_records() + problem_records(3)


def row(text, *first_cells):
    """Cells of the Markdown table row whose first cells are `first_cells`."""
    prefix = "| " + " | ".join(str(c) for c in first_cells) + " |"
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, f"expected one row starting {prefix!r}, found {lines}"
    return [cell.strip() for cell in lines[0].strip("|").split("|")]


def section(text, title):
    """The text of one '## title' section."""
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else None]


@pytest.fixture(scope="module")
def summary():
    ceilings = {"copy_gbps": 3016.0, "matmul_tflops": 700.0, "launch_s": 5.2e-6}
    return summarize(run_records(), DATASHEET, MEASURED, ceilings, note="a test run")


def test_header_names_the_run(summary):
    assert summary.startswith("# roofbench summary\n\n> a test run\n")
    for value in RUN.values():
        assert value in summary
    assert "2026-11-21T10:00:00+00:00 to 2026-11-21T10:05:00+00:00 (0:05:00)" in summary


def test_roofs_and_ceilings_are_shares_of_the_datasheet(summary):
    roofs = section(summary, "Roofs")
    assert row(roofs, "datasheet")[1:5] == ["989.0 (100.0%)", "3350 (100.0%)", "295", "4.0"]
    assert row(roofs, "measured")[1:5] == ["700.0 (70.8%)", "3000 (89.6%)", "233", "5.0"]
    assert "measured copy: 3016.0 GB/s (90.0% of datasheet)" in roofs
    assert "measured matmul: 700.0 TFLOP/s (70.8% of datasheet)" in roofs
    assert "measured launch floor: 5.20 us" in roofs
    assert "measured read" not in roofs  # absent key, absent line


def test_ceilings_may_be_an_object_with_attributes():
    class Ceilings:
        copy_gbps = 3016.0
        launch_s = 5.2e-6

    roofs = section(summarize([], DATASHEET, MEASURED, Ceilings()), "Roofs")
    assert "measured copy: 3016.0 GB/s (90.0% of datasheet)" in roofs
    assert "measured launch floor: 5.20 us" in roofs
    assert "matmul" not in roofs


def test_missing_ceilings_and_roof_do_not_break_the_summary():
    text = summarize(run_records(), DATASHEET, None, None)
    assert "no measured ceilings" in text
    assert row(section(text, "Roofs"), "measured")[1] == "—"
    # the ridge falls back to the datasheet roof and says so
    assert "datasheet roof's ridge (295 FLOP/byte)" in text


def test_error_statistics_per_op_and_impl(summary):
    table = section(summary, "Measured vs predicted")
    cells = row(table, "prefill_attention", "triton")
    # ok, skipped, failed, median |error|, p90 |error|, median roof fraction, TFLOP/s
    assert cells[2:9] == ["3", "0", "0", "20.0%", "28.0%", "70.0%", "300.0"]
    assert row(table, "gemm", "triton")[2:5] == ["13", "2", "1"]
    assert "| copy |" not in table  # ceiling rows are reported with the roofs


def test_speedup_is_baseline_over_each_implementation_on_matched_cases(summary):
    ratios = speedups(run_records())
    assert ratios[("decode_attention", "triton")] == [pytest.approx(50 / 40)]
    # the unmatched gemm rows are left out
    assert len(ratios[("gemm", "triton")]) == len(M_SWEEP) - 1
    assert ("gemm", "torch") not in ratios  # the baseline is not compared with itself
    cells = row(section(summary, "Every implementation vs the baseline"), "decode_attention")
    assert cells[1:5] == ["triton", "torch", "1", "1.25"]


def test_speedups_follow_the_baseline_the_run_recorded():
    records = run_records()
    ratios = speedups(records, baselines={"decode_attention": "triton"})
    assert ratios[("decode_attention", "torch")] == [pytest.approx(40 / 50)]


def test_ridge_measured_where_time_leaves_flat_and_predicted_from_theory(summary):
    table = section(summary, "GEMM ridge")
    exact = predicted_ridge_m(N, K, "bf16", MEASURED)
    swept = next(m for m in M_SWEEP if m >= exact)
    for impl in ("triton", "torch"):
        cells = row(table, N, K, "bf16", impl)
        assert cells[4] == "1..512 (10)"
        assert cells[6:] == ["256", str(swept), str(exact)]
    assert "1.25x" in table


def test_predicted_ridge_m_is_where_gemm_intensity_crosses_the_ridge():
    m = predicted_ridge_m(N, K, "bf16", MEASURED)
    assert ops.gemm(m, N, K, "bf16").intensity >= MEASURED.ridge
    assert ops.gemm(m - 1, N, K, "bf16").intensity < MEASURED.ridge
    # there, predicted compute time has just overtaken memory time
    prediction = MEASURED.predict(ops.gemm(m, N, K, "bf16"))
    assert prediction.compute_s >= prediction.memory_s
    # a weight too small to ever reach the ridge
    assert predicted_ridge_m(64, 64, "bf16", MEASURED) is None


def test_measured_ridge_rule():
    assert measured_ridge_m({1: 40e-6, 64: 41e-6, 128: 49e-6, 256: 60e-6}) == 256
    assert measured_ridge_m({1: 40e-6, 128: 40e-6 * RIDGE_TIME_FACTOR}) is None  # not beyond
    assert measured_ridge_m({8: 40e-6, 16: 41e-6}) is None  # flat throughout
    assert measured_ridge_m({1: 40e-6}) is None


def test_flat_series_is_reported_beyond_the_sweep():
    records = [rec(f"m{m}", "gemm", m=m, n=N, k=K, measured_s=41e-6) for m in (1, 2, 4)]
    table = section(summarize(records, DATASHEET, MEASURED, None), "GEMM ridge")
    assert row(table, N, K, "bf16", "triton")[6] == "> 4"


def test_nvml_ratio_per_op_and_copy_row(summary):
    table = section(summary, "NVML")
    # (2200/2000 + 2000/1600) / 2 = 1.175
    assert row(table, "decode_attention")[1:] == ["2", "2100", "1800", "1.18"]
    assert "copy `copy-2gib`: timed 3016 GB/s, NVML 3018 GB/s, ratio 1.000" in table


def test_throttling_counts_reasons_and_lowest_clock(summary):
    text = section(summary, "Throttling")
    assert "marked throttled: 2; with a power or thermal clock-event reason: 3" in text
    assert "sw_power_cap (2)" in text and "hw_slowdown (1)" in text and "gpu_idle (1)" in text
    assert "lowest SM clock seen: 1365 MHz" in text


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("0x4", ["sw_power_cap"]),
        ("0x0", []),
        ("", []),
        (None, []),
        ("0x44", ["sw_power_cap", "hw_thermal_slowdown"]),
        ("sw_power_cap, hw_slowdown", ["sw_power_cap", "hw_slowdown"]),
        ("0x10000", ["unknown_0x10000"]),
        ("65536", ["unknown_0x10000"]),
    ],
)
def test_clock_reasons(text, names):
    assert clock_reasons(text) == names


def test_skipped_and_failed_are_listed_with_reasons(summary):
    text = section(summary, "Skipped and failed")
    assert "- failed: `bad-01` gemm triton bf16: reason 1" in text
    assert "- skipped: `bad-02` gemm triton bf16: reason 2" in text


def test_long_problem_lists_are_capped_with_a_count():
    text = section(summarize(problem_records(MAX_LISTED + 5), DATASHEET, MEASURED, None), "Skipped")
    assert text.count("\n- failed") + text.count("\n- skipped") == MAX_LISTED
    assert "- ... and 5 more" in text


def test_empty_run_gives_a_summary_that_says_so():
    text = summarize([], DATASHEET, MEASURED, {}, note="no GPU: predictions only")
    assert "> no GPU: predictions only" in text
    assert "No kernel records." in text
    assert "No GEMM/GEMV sweep over M." in text
    assert "No measurements." in text
    assert "## Skipped and failed\n\nNone." in text


def test_predictions_only_run_shows_predicted_ridge_and_no_measured_one():
    records = [
        rec(f"m{m}", "gemm", m=m, n=N, k=K, predicted_s=1e-5, status="skipped", reason="no GPU")
        for m in M_SWEEP
    ]
    text = summarize(records, DATASHEET, MEASURED, None, note="no GPU: predictions only")
    cells = row(section(text, "GEMM ridge"), N, K, "bf16", "triton")
    assert cells[5:7] == ["—", "—"]
    assert cells[8] == str(predicted_ridge_m(N, K, "bf16", MEASURED))
    assert row(section(text, "Measured vs predicted"), "gemm", "triton")[2:6] == [
        "0",
        "10",
        "0",
        "—",
    ]
