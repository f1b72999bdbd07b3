"""bench/baseline.py and compare's noise between sessions: a baseline built from several runs
of unchanged code flags none of them, and still catches a 10% slowdown of one kernel."""

import dataclasses
from pathlib import Path

import pytest

from roofbench.bench.baseline import build
from roofbench.bench.compare import SESSION_FACTOR, compare, exit_code, load_results
from roofbench.bench.core.records import Record

ROOT = Path(__file__).resolve().parents[2]
QUICK_RUNS = [
    ROOT / "results" / "h200" / name / "records.csv"
    for name in ("20261121T132154Z", "20261201T211032Z", "20261201T212724Z")
]
# Quick sweeps of unchanged code on two H200 machines (two cards, two sessions): the runs
# results/h200/baseline.csv is built from; and a run on each machine with the slowed GEMV plugin
# (tests/plugins/slowed_gemv.py: every Triton GEMV call runs ~10% longer).
BASELINE_RUNS = [
    ROOT / "results" / "h200" / name
    for name in (
        "20261202T011653Z",
        "20261202T011736Z",
        "20261202T013329Z",
        "20261202T013434Z",
        "20261202T013512Z",
    )  # fmt: skip
]
SLOWED_RUNS = [
    ROOT / "results" / "h200" / name for name in ("20261202T011818Z", "20261202T013556Z")
]


def rec(case, t, spread=0.01, gpu="G", impl="triton"):
    return Record(case=case, op="gemm", impl=impl, dtype="bf16", measured_s=t,
                  p20_s=t * (1 - spread), p80_s=t * (1 + spread), gpu=gpu)  # fmt: skip


def test_a_baseline_is_the_median_of_medians_with_the_envelope_and_the_session_spread():
    runs = [[rec("a", 1.0), rec("b", 5.0)], [rec("a", 1.1)], [rec("a", 1.05)]]
    (a,) = build(runs)  # b was measured once: no spread between sessions to learn from
    assert a.measured_s == pytest.approx(1.05) and a.sessions == 3
    assert a.session_spread == pytest.approx(1.1 / 1.0 - 1)
    assert a.p20_s == pytest.approx(0.99) and a.p80_s == pytest.approx(1.1 * 1.01)


def test_a_baseline_refuses_mixed_gpus_and_a_single_run():
    with pytest.raises(ValueError, match="different GPUs"):
        build([[rec("a", 1.0)], [rec("a", 1.0, gpu="H")]])
    with pytest.raises(ValueError, match="at least 2"):
        build([[rec("a", 1.0)]])


def test_a_case_is_held_to_its_spread_between_sessions():
    (base,) = build([[rec("a", 1.0, 0.001)], [rec("a", 1.06, 0.001)]])
    assert base.session_spread == pytest.approx(0.06)
    inside = compare([base], [rec("a", base.measured_s * 1.08, 0.001)])
    assert inside[0].verdict == "same"
    assert inside[0].threshold == pytest.approx(SESSION_FACTOR * 0.06)
    beyond = compare([base], [rec("a", base.measured_s * 1.2, 0.001)])
    assert beyond[0].verdict == "slower"


def slowed(records, impl, op, factor):
    return [
        dataclasses.replace(
            r, measured_s=r.measured_s * factor, p20_s=r.p20_s * factor, p80_s=r.p80_s * factor
        )  # fmt: skip
        if r.impl == impl and r.op == op and r.measured_s
        else r
        for r in records
    ]


def test_committed_runs_flag_nothing_against_their_baseline_and_a_slowdown_is_caught():
    runs = [load_results(p) for p in QUICK_RUNS]
    baseline = build(runs)
    for run in runs:
        assert exit_code(compare(baseline, run), allow_missing=True) == 0
    slow = slowed(runs[1], "triton", "decode_attention", 1.10)
    flagged = {c.case for c in compare(baseline, slow) if c.verdict == "slower"}
    decode = {r.case for r in baseline if r.impl == "triton" and r.op == "decode_attention"}
    # Caught on most of its cases (a case whose runs' spreads overlap the slowed one stays
    # "same" by the spread rule), and nothing outside the slowed kernel is flagged.
    assert flagged <= decode and len(flagged) >= 0.75 * len(decode)


def test_each_baseline_run_held_out_flags_nothing_and_the_slowed_gemv_runs_flag_only_it():
    """Leave one out: the baseline of the other runs judges the run left out (another session,
    one of them on another card) and fails none of its cases. The two runs with the slowed
    plugin are flagged on every Triton GEMV case and on nothing else."""
    runs = [load_results(p) for p in BASELINE_RUNS]
    for i, run in enumerate(runs):
        others = build(runs[:i] + runs[i + 1 :])
        assert exit_code(compare(others, run)) == 0, BASELINE_RUNS[i].name
    baseline = build(runs)
    gemv = {r.case for r in baseline if r.impl == "triton" and r.op == "gemv"}
    for path in SLOWED_RUNS:
        verdicts = {(c.case, c.impl): c.verdict for c in compare(baseline, load_results(path))}
        flagged = {key for key, v in verdicts.items() if v != "same"}
        assert flagged == {(case, "triton") for case in gemv}, path.name
        assert {verdicts[(case, "triton")] for case in gemv} == {"slower"}


def test_the_committed_baseline_is_built_from_the_baseline_runs():
    built = build([load_results(p) for p in BASELINE_RUNS])
    committed = load_results(ROOT / "results" / "h200" / "baseline.csv")
    key = lambda r: (r.case, r.impl, r.dtype, r.op)  # noqa: E731
    assert {key(r): r.measured_s for r in committed} == {key(r): r.measured_s for r in built}
