"""bench/core/attribution.py: a timed record's tier columns (`fill_tiers`), the roof-violation
rule, the case rebuilt from a record's columns (`case_of`), and `retier` reproducing them."""

import dataclasses
import json
from pathlib import Path

import pytest

from roofbench.bench.core.attribution import VIOLATION, case_of, fill_tiers, retier
from roofbench.bench.core.measure import (
    RunContext,
    base_record,
    declared_plan,
    fill_plan,
    fill_timing,
)
from roofbench.bench.core.sampling import TimingStats
from roofbench.kernels.catalog import get_impl, make_case
from roofbench.theory import tiers
from roofbench.theory.roofline import Roof
from roofbench.theory.tiers import Calibration

MEASURED = Roof(peak_flops=700e12, bandwidth_bytes_per_s=4.2e12, launch_s=1e-6, source="m")
DATASHEET = Roof(peak_flops=989e12, bandwidth_bytes_per_s=4.8e12, launch_s=4e-6, source="d")
CTX = RunContext(DATASHEET, MEASURED, telemetry=None, rule=None, identity={"gpu": "G"})
# One made-up calibration for every test of the tiers (H200-like round figures).
CAL = Calibration.from_dict(
    json.loads(
        (Path(__file__).resolve().parents[2] / "data" / "made_up_calibration.json").read_text()
    )
)
GEMV = make_case("gemv", m=1, n=4096, k=4096)
# The GEMV reads x and W (bf16) and writes y: memory-bound by far (2 FLOP per 2 bytes of W).
READ_BYTES = (4096 + 4096 * 4096) * 2.0
WRITTEN_BYTES = 4096 * 2.0
ROOF_S = READ_BYTES / CAL.read_bytes_per_s + WRITTEN_BYTES / CAL.write_bytes_per_s
TIER_COLUMNS = (
    *(f"predicted_t{i}_s" for i in range(len(tiers.TIERS))),
    *(f"time_{t}_s" for t in tiers.TERMS),
    "predicted_s", "bound", "error", "residual_s", "roof_fraction", "roof_violation",
)  # fmt: skip


def timed(case, impl, measured_s):
    record = fill_plan(base_record(case, impl, CTX), *declared_plan(get_impl(case.op, impl), case))
    stats = TimingStats.from_times([measured_s] * 5, "graph")
    return fill_timing(record, stats, MEASURED)


def tiered(case, impl, measured_s, cal=CAL):
    record = timed(case, impl, measured_s)
    plan = get_impl(case.op, impl).launch_plan(case)
    return fill_tiers(record, case.work(), plan, cal, DATASHEET)


def test_the_top_tier_becomes_the_prediction_and_the_roofline_error_is_kept():
    measured = 20e-6
    before = timed(GEMV, "triton", measured)
    after = tiered(GEMV, "triton", measured)
    # T1 by hand: one graph launch floor plus reads and writes at their own roofs.
    assert after.predicted_t1_s == pytest.approx(CAL.launch_s + ROOF_S)
    assert after.predicted_s == after.predicted_t6_s
    assert after.error == pytest.approx(measured / after.predicted_t6_s - 1)
    assert after.residual_s == pytest.approx(measured - after.predicted_t6_s)
    assert after.error_roofline == before.error
    assert before.error == pytest.approx(measured / before.predicted_s - 1)
    assert after.error != before.error  # the tiers predict otherwise than the plain roof
    assert after.bound == "memory"
    assert after.roof_fraction == pytest.approx(ROOF_S / measured)
    assert after.measured_s == measured  # what was measured is untouched


def test_a_time_beyond_the_roof_by_more_than_two_percent_is_a_violation():
    assert tiered(GEMV, "triton", 2 * ROOF_S).roof_violation is False
    # Within the 2% allowance under the roof: not a violation yet.
    assert tiered(GEMV, "triton", (1 - VIOLATION / 2) * ROOF_S).roof_violation is False
    fast = tiered(GEMV, "triton", 0.5 * ROOF_S)
    assert fast.roof_violation is True and fast.roof_fraction == pytest.approx(2.0)


def test_a_second_tiering_keeps_the_first_roofline_error():
    first = tiered(GEMV, "triton", 20e-6)
    slower = dataclasses.replace(CAL, read_bytes_per_s=CAL.read_bytes_per_s / 2)
    plan = get_impl("gemv", "triton").launch_plan(GEMV)
    second = fill_tiers(first, GEMV.work(), plan, slower, DATASHEET)
    assert second.predicted_t6_s > first.predicted_t6_s and second.error < first.error
    assert second.error_roofline == first.error_roofline


@pytest.mark.parametrize(
    "op,shape",
    [
        ("gemm", {"m": 256, "n": 4096, "k": 1024}),
        ("gemv", {"m": 4, "n": 4096, "k": 4096}),
        ("prefill_attention", {"batch": 2, "heads": 32, "kv_heads": 8, "seq": 2048,
                               "head_dim": 128, "causal": True}),
        ("prefill_attention", {"batch": 1, "heads": 8, "kv_heads": 8, "seq": 512,
                               "head_dim": 64, "causal": False}),
        ("decode_attention", {"batch": 3, "seq": 8192, "heads": 32, "kv_heads": 8,
                              "head_dim": 128}),
    ],
)  # fmt: skip
def test_case_of_rebuilds_the_case_from_the_record(op, shape):
    case = make_case(op, **shape)
    rebuilt = case_of(base_record(case, "torch", CTX))
    assert rebuilt.id == case.id and rebuilt == case


@pytest.mark.parametrize("impl", ["triton", "torch"])
def test_retier_on_the_same_calibration_reproduces_the_tier_columns(impl):
    filled = tiered(GEMV, impl, 20e-6)
    other = tiered(GEMV, impl, 20e-6, dataclasses.replace(CAL, launch_s=9e-6))
    assert other.predicted_t6_s != filled.predicted_t6_s
    # The plan read back from its text, the case rebuilt from its columns.
    for record in (filled, other):
        again = retier(record, CAL, DATASHEET)
        for column in TIER_COLUMNS:
            assert getattr(again, column) == getattr(filled, column), column
    # The torch reference launches cuBLAS and a copy: a second launch floor in T3 onwards,
    # and the copy's own fixed cost for the output it moves.
    assert filled.predicted_t3_s - filled.predicted_t2_s == pytest.approx(
        (filled.launches - 1) * (CAL.launch_s + tiers.fixed_s(WRITTEN_BYTES, CAL))
        + (filled.partial_bytes / 2) * (1 / CAL.read_bytes_per_s + 1 / CAL.write_bytes_per_s)
    )


def test_retier_reads_an_observed_plans_mma_from_its_kernel_names():
    """A committed record's observed plan (its text from before the mma was written) is charged
    mma.sync for FlashAttention 2's kernel where the calibration has the peak; a declared
    plan's kernels are never renamed into one."""
    case = make_case("prefill_attention", batch=1, heads=32, kv_heads=8, seq=4096,
                     head_dim=128, causal=True)  # fmt: skip
    record = dataclasses.replace(
        timed(case, "sdpa_flash", 5e-3),
        plan="1 kernel: flash_fwd_kernel grid 32x1x32 partial 33554432",
        plan_source="observed",
    )
    sync = dataclasses.replace(CAL, mma_sync_flops=0.5 * CAL.matmul_burst_flops)
    plain, slower = retier(record, CAL, DATASHEET), retier(record, sync, DATASHEET)
    assert slower.predicted_t4_s == plain.predicted_t4_s
    assert slower.predicted_t5_s > 1.5 * plain.predicted_t5_s  # compute-bound: ~2x the tensor
    declared = dataclasses.replace(record, plan_source="declared")
    assert retier(declared, sync, DATASHEET).predicted_t5_s == plain.predicted_t5_s
