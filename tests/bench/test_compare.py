"""bench/compare.py: verdicts, threshold parsing, loading CSV and pytest-benchmark JSON, output."""

import dataclasses
import io
import json

import pytest
from rich.console import Console

from roofbench.bench.compare import (
    compare,
    exit_code,
    load_results,
    parse_threshold,
    render_comparison,
)
from roofbench.bench.core.records import Record, RecordWriter


def timed(case, median_s, p20_s=None, p80_s=None, impl="triton", op="gemm", dtype="bf16"):
    return Record(
        case=case,
        op=op,
        impl=impl,
        dtype=dtype,
        measured_s=median_s,
        p20_s=p20_s,
        p80_s=p80_s,
    )


def tight(case, median_s, impl="triton"):
    """A time with a +-1% spread."""
    return timed(case, median_s, median_s * 0.99, median_s * 1.01, impl=impl)


BASE = [tight("gemm-m1", 40e-6), tight("gemm-m1", 45e-6, impl="torch"), tight("gemm-m256", 1e-3)]


def verdicts(comparisons):
    return {(c.case, c.impl): c.verdict for c in comparisons}


def test_identical_runs_are_all_same_and_exit_zero():
    comparisons = compare(BASE, list(BASE))
    assert [c.verdict for c in comparisons] == ["same"] * 3
    assert all(c.ratio == pytest.approx(1.0) for c in comparisons)
    assert exit_code(comparisons) == 0


def test_twenty_percent_slower_with_tight_spreads_is_slower_and_exits_one():
    new = [tight("gemm-m1", 48e-6), BASE[1], BASE[2]]
    comparisons = compare(BASE, new, threshold=0.05)
    assert verdicts(comparisons)[("gemm-m1", "triton")] == "slower"
    assert verdicts(comparisons)[("gemm-m1", "torch")] == "same"
    assert comparisons[0].ratio == pytest.approx(1.2)
    assert exit_code(comparisons) == 1


def test_twenty_percent_slower_inside_wide_overlapping_spreads_is_same():
    base = [timed("gemm-m1", 40e-6, 30e-6, 60e-6)]
    new = [timed("gemm-m1", 48e-6, 35e-6, 70e-6)]
    comparisons = compare(base, new)
    assert comparisons[0].verdict == "same"
    assert exit_code(comparisons) == 0


def test_a_throttled_case_is_held_to_the_wider_threshold():
    # 10% slower with tight, disjoint spreads: a regression at 5% unless either run was
    # throttled, where the clock itself moves that much between batches.
    base = [timed("c", 100e-6, 99.9e-6, 100.1e-6)]
    new = [timed("c", 110e-6, 109.9e-6, 110.1e-6)]
    plain = compare(base, new, threshold=0.05, throttled_threshold=0.15)[0]
    assert (plain.verdict, plain.threshold) == ("slower", 0.05)
    for throttled_run in (base, new):
        throttled_run[0] = dataclasses.replace(throttled_run[0], throttled=True)
        held = compare(base, new, threshold=0.05, throttled_threshold=0.15)[0]
        assert (held.verdict, held.threshold) == ("same", 0.15)
        throttled_run[0] = dataclasses.replace(throttled_run[0], throttled=False)
    # Past the wider threshold a throttled case is still a regression.
    worse = [dataclasses.replace(timed("c", 120e-6, 119.9e-6, 120.1e-6), throttled=True)]
    assert compare(base, worse, threshold=0.05, throttled_threshold=0.15)[0].verdict == "slower"
    # The wider threshold never narrows the plain one.
    assert compare(base, worse, threshold=0.25, throttled_threshold=0.15)[0].threshold == 0.25


def test_slower_within_threshold_is_same_even_with_disjoint_spreads():
    base = [timed("c", 100e-6, 99.9e-6, 100.1e-6)]
    new = [timed("c", 103e-6, 102.9e-6, 103.1e-6)]
    assert compare(base, new, threshold=0.05)[0].verdict == "same"
    assert compare(base, new, threshold=0.01)[0].verdict == "slower"


def test_twenty_percent_faster_with_tight_spreads_is_faster_and_exits_zero():
    new = [tight("gemm-m1", 32e-6), BASE[1], BASE[2]]
    comparisons = compare(BASE, new)
    assert verdicts(comparisons)[("gemm-m1", "triton")] == "faster"
    assert exit_code(comparisons) == 0


def test_a_missing_case_fails_closed_unless_allowed():
    new = [BASE[0], tight("decode-s4096", 20e-6)]
    comparisons = compare(BASE, new)
    found = verdicts(comparisons)
    assert found[("gemm-m1", "torch")] == "missing"
    assert found[("gemm-m256", "triton")] == "missing"
    assert found[("decode-s4096", "triton")] == "new"
    assert found[("gemm-m1", "triton")] == "same"
    assert exit_code(comparisons) == 1
    assert exit_code(comparisons, allow_missing=True) == 0


@pytest.mark.parametrize("new", [[], [timed("other-case", 1e-3)]])
def test_nothing_in_common_fails(new):
    comparisons = compare(BASE, new)
    assert exit_code(comparisons) == 1 and exit_code(comparisons, allow_missing=True) == 1


@pytest.mark.parametrize("bad", [0.0, -1e-6, float("nan")])
def test_a_nonsense_time_is_invalid_and_fails(bad):
    record = timed("gemm-m1", 1e-3)
    record.measured_s = bad
    comparisons = compare([BASE[0]], [record])
    assert [c.verdict for c in comparisons] == ["invalid"]
    assert exit_code(comparisons, allow_missing=True) == 1


def test_a_case_listed_twice_is_an_error():
    with pytest.raises(ValueError, match="twice"):
        compare(BASE, [BASE[0], BASE[0]])


def test_matching_uses_dtype_and_op_too():
    base = [timed("c", 1e-3, dtype="bf16"), timed("c", 1e-3, op="gemv")]
    new = [timed("c", 1e-3, dtype="fp16"), timed("c", 1e-3, op="gemv")]
    found = {(c.dtype, c.op): c.verdict for c in compare(base, new)}
    assert found == {("bf16", "gemm"): "missing", ("fp16", "gemm"): "new", ("bf16", "gemv"): "same"}


def test_a_case_that_failed_in_the_new_run_fails_with_its_reason():
    failed = Record(
        case="gemm-m1", op="gemm", impl="triton", dtype="bf16", status="failed", reason="gate: x"
    )
    comparisons = compare([BASE[0]], [failed])
    assert [(c.verdict, c.reason) for c in comparisons] == [("failed", "gate: x")]
    assert exit_code(comparisons, allow_missing=True) == 1


@pytest.mark.parametrize(
    ("text", "value"), [("5%", 0.05), ("0.05", 0.05), (" 12.5% ", 0.125), ("0", 0.0)]
)
def test_parse_threshold_accepts_percent_and_fraction(text, value):
    assert parse_threshold(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["five", "5", "-1%", "%", "", "nan", "5%%"])
def test_parse_threshold_rejects_other_text(text):
    with pytest.raises(ValueError, match="threshold"):
        parse_threshold(text)


def test_records_csv_round_trip(tmp_path):
    path = tmp_path / "records.csv"
    with RecordWriter(path) as writer:
        for record in BASE:
            writer.write(record)
    loaded = load_results(path)
    assert [(r.case, r.impl, r.measured_s) for r in loaded] == [
        (r.case, r.impl, r.measured_s) for r in BASE
    ]
    assert exit_code(compare(BASE, loaded)) == 0


def test_a_run_folder_is_read_through_its_records_file(tmp_path):
    for name in ("records.csv", "model_records.csv"):
        folder = tmp_path / name.split(".")[0]
        folder.mkdir()
        with RecordWriter(folder / name) as writer:
            for record in BASE:
                writer.write(record)
        assert [r.case for r in load_results(folder)] == [r.case for r in BASE]
    with pytest.raises(ValueError, match="a folder without records.csv or model_records.csv"):
        load_results(tmp_path)


def test_a_noisy_case_is_held_to_the_two_spreads_and_an_unsettled_one_is_not_judged():
    # 12% slower with disjoint spreads, the new run's own p20..p80 15% of its median.
    base = [timed("d", 100e-6, 99e-6, 101e-6)]
    held = compare(base, [timed("d", 112e-6, 104e-6, 120.8e-6)], threshold=0.05)[0]
    assert held.verdict == "same" and held.threshold == pytest.approx(0.02 + 0.15)
    assert compare(base, [timed("d", 130e-6, 121e-6, 140.5e-6)])[0].verdict == "slower"
    # 39% slower, the new run's p20..p80 43% of its median (SDPA's flash decode at batch 16,
    # context 8192, unchanged code, two H200 sessions): unsettled, listed, not failing.
    unsettled = compare(base + BASE, [timed("d", 200e-6, 148e-6, 234e-6)] + BASE)
    assert unsettled[0].verdict == "unsettled" and "spans 43%" in unsettled[0].reason
    assert exit_code(unsettled) == 0
    # A settled case keeps the plain threshold.
    settled = compare([tight("t", 100e-6)], [tight("t", 110e-6)], threshold=0.05)[0]
    assert (settled.verdict, settled.threshold) == ("slower", 0.05)


def benchmark_entry(name, median_s, q1_s, q3_s, extra_info):
    """One entry as pytest-benchmark writes it with --benchmark-json."""
    return {
        "group": None,
        "name": name,
        "fullname": f"bench/test_gemm.py::{name}",
        "params": None,
        "param": None,
        "extra_info": extra_info,
        "options": {"disable_gc": False, "timer": "perf_counter", "min_rounds": 5},
        "stats": {
            "min": q1_s * 0.9,
            "max": q3_s * 1.1,
            "mean": median_s,
            "stddev": (q3_s - q1_s) / 2,
            "rounds": 25,
            "median": median_s,
            "iqr": q3_s - q1_s,
            "q1": q1_s,
            "q3": q3_s,
            "iqr_outliers": 0,
            "stddev_outliers": 1,
            "outliers": "1;0",
            "ld15iqr": q1_s,
            "hd15iqr": q3_s,
            "ops": 1 / median_s,
            "total": 25 * median_s,
            "iterations": 1,
        },
    }


def benchmark_file(path, entries):
    data = {
        "machine_info": {"node": "runner", "machine": "x86_64", "python_version": "3.12.0"},
        "commit_info": {"id": "abc123", "dirty": False, "branch": "main"},
        "benchmarks": entries,
        "datetime": "2026-11-21T10:00:00.000000+00:00",
        "version": "5.2.0",
    }
    path.write_text(json.dumps(data, indent=4))
    return path


def test_pytest_benchmark_json_is_matched_through_extra_info(tmp_path):
    info = {"case": "gemm-m1", "impl": "triton", "op": "gemm", "dtype": "bf16", "bound": "memory"}
    base = benchmark_file(
        tmp_path / "base.json",
        [benchmark_entry("test_gemm[gemm-m1-triton]", 40e-6, 39e-6, 41e-6, info)],
    )
    slow = benchmark_file(
        tmp_path / "new.json",
        [benchmark_entry("test_gemm[gemm-m1-triton]", 48e-6, 47e-6, 49e-6, info)],
    )
    base_records = load_results(base)
    assert len(base_records) == 1
    record = base_records[0]
    assert (record.case, record.impl, record.op, record.dtype) == (
        "gemm-m1",
        "triton",
        "gemm",
        "bf16",
    )
    assert (record.measured_s, record.p20_s, record.p80_s) == (40e-6, 39e-6, 41e-6)
    assert record.bound == "memory" and record.samples == 25

    assert exit_code(compare(base_records, load_results(base))) == 0
    comparisons = compare(base_records, load_results(slow))
    assert [c.verdict for c in comparisons] == ["slower"]
    assert exit_code(comparisons) == 1


def test_pytest_benchmark_json_prefers_p20_p80_and_falls_back_to_the_name(tmp_path):
    entries = [
        benchmark_entry("test_a", 1e-3, 0.5e-3, 2e-3, {"p20_s": 0.99e-3, "p80_s": 1.01e-3}),
        benchmark_entry("test_b", 1e-3, 0.9e-3, 1.1e-3, {}),
    ]
    records = load_results(benchmark_file(tmp_path / "b.json", entries))
    assert [r.case for r in records] == ["test_a", "test_b"]
    assert (records[0].p20_s, records[0].p80_s) == (0.99e-3, 1.01e-3)


def test_pytest_benchmark_json_matches_a_records_csv_of_the_same_run(tmp_path):
    info = {"case": "gemm-m1", "impl": "triton", "op": "gemm", "dtype": "bf16"}
    json_path = benchmark_file(
        tmp_path / "r.json", [benchmark_entry("test_gemm", 40e-6, 39.6e-6, 40.4e-6, info)]
    )
    comparisons = compare([BASE[0]], load_results(json_path))
    assert [c.verdict for c in comparisons] == ["same"]


def test_json_without_benchmarks_is_rejected(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('{"results": []}')
    with pytest.raises(ValueError, match="pytest-benchmark"):
        load_results(path)


def test_render_prints_each_case_and_a_summary():
    new = [tight("gemm-m1", 48e-6), tight("test_gemm[m1-triton]", 1e-3)]
    comparisons = compare(BASE, new)
    out = io.StringIO()
    render_comparison(comparisons, Console(file=out, width=200, color_system=None))
    text = out.getvalue()
    assert "test_gemm[m1-triton]" in text  # brackets survive: not read as markup
    assert "1.200" in text and "slower" in text and "missing" in text and "new" in text
    assert (
        "1 matched: 1 slower, 0 faster, 0 same, 0 unsettled; 2 missing, 0 failed, 0 invalid, 1 new"
        in text
    )


def test_a_slowdown_that_came_with_another_plan_says_which():
    base = dataclasses.replace(tight("gemm-m1", 40e-6), plan="1 kernel: gemm grid 128 tile 64x128")
    new = dataclasses.replace(tight("gemm-m1", 56e-6), plan="1 kernel: gemm grid 64 tile 128x128")
    (c,) = compare([base], [new])
    assert c.verdict == "slower"
    assert c.reason == f"plan changed: {base.plan} -> {new.plan}"
    (same,) = compare([base], [dataclasses.replace(new, plan=base.plan)])
    assert same.reason == ""


def test_a_plan_that_only_names_its_mma_kind_now_is_the_same_plan():
    """Plans recorded before the MMA kind was observed lack `mma ...`: not a change of plan."""
    base = dataclasses.replace(tight("gemm-m1", 40e-6), plan="1 kernel: nvjet grid 2x64x1")
    named = dataclasses.replace(base, plan="1 kernel: nvjet grid 2x64x1 mma wgmma")
    (c,) = compare([base], [named])
    assert c.reason == ""
    other = dataclasses.replace(base, plan="1 kernel: nvjet grid 4x64x1 mma wgmma")
    (c,) = compare([base], [other])
    assert c.reason.startswith("plan changed")
    (c,) = compare(
        [named], [dataclasses.replace(base, plan="1 kernel: nvjet grid 2x64x1 mma sync")]
    )
    assert c.reason.startswith("plan changed")  # both name one, and they differ
