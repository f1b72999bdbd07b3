"""theory/tiers: each term against hand-computed figures, the tile counts, and the properties of
predict() (tier order, monotonicity, terms, bound) on a small made-up calibration."""

import dataclasses
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roofbench.theory import ops, tiers
from roofbench.theory.ops import OpCost
from roofbench.theory.plan import KernelLaunch, LaunchPlan
from roofbench.theory.roofline import Roof
from roofbench.theory.tiers import Calibration, Work

# One made-up calibration for every test of the tiers (H200-like round figures).
CAL = Calibration.from_dict(
    json.loads(
        (Path(__file__).resolve().parents[1] / "data" / "made_up_calibration.json").read_text()
    )
)
DATASHEET = Roof(989e12, 4.8e12, 4e-6, "datasheet")
IDLE_GAP_S = 50e-6


def plan(*kernels, **kw):
    return LaunchPlan(tuple(kernels), **kw)


GEMM_PLAN = plan(KernelLaunch("gemm", tile=(128, 128, 64)))
SPLITK_PLAN = plan(
    KernelLaunch("gemv", tile=(16, 128, 256), splits=4, partial_bytes=4 * 8192 * 4),
    KernelLaunch("sum_splits", partial_bytes=4 * 8192 * 4),
)
ATTN_PLAN = plan(KernelLaunch("fwd", tile=(128, 64)), alu_ops_per_score=6.0)
SPLITKV_PLAN = plan(
    KernelLaunch("decode", tile=(16, 64), splits=8, partial_bytes=1e6),
    KernelLaunch("combine", partial_bytes=1e6),
    alu_ops_per_score=4.0,
)


def matmul(m, n, k):
    return Work(ops.gemm(m, n, k), kind="matmul", m=m, n=n, k=k)


def prefill(batch, heads, kv_heads, seq, d):
    cost = ops.prefill_attention(batch, heads, kv_heads, seq, d, causal=True)
    return Work(cost, "attention", batch=batch, heads=heads, q_len=seq, kv_len=seq, head_dim=d,
                causal=True)  # fmt: skip


def decode(batch, heads, kv_heads, context, d):
    cost = ops.decode_attention(batch, heads, kv_heads, context, d)
    return Work(cost, "attention", batch=batch, heads=heads, q_len=1, kv_len=context, head_dim=d,
                causal=True)  # fmt: skip


CASES = {
    "gemm": (matmul(4096, 4096, 4096), GEMM_PLAN),
    "gemm-edge-tiles": (matmul(200, 300, 512), GEMM_PLAN),
    "gemv-split-k": (matmul(1, 8192, 8192), SPLITK_PLAN),
    "prefill": (prefill(2, 16, 4, 1024, 128), ATTN_PLAN),
    "decode-split-kv": (decode(8, 32, 8, 4096, 128), SPLITKV_PLAN),
}
METHODS = [("graph", 0.0), ("events", IDLE_GAP_S)]


def predict(work, method="graph", plan=None, gap=0.0):
    return tiers.predict(work, CAL, DATASHEET, method, plan, gap)


# --- the terms ---------------------------------------------------------------------------------


def test_memory_adds_read_and_write_times_and_a_copy_sits_near_the_copy_roof():
    assert tiers.memory_s(1e9, 0, CAL) == pytest.approx(1e9 / 4.5e12)
    assert tiers.memory_s(0, 1e9, CAL) == pytest.approx(1e9 / 4.0e12)
    n = 1 << 30
    assert tiers.memory_s(n, n, CAL) == pytest.approx(2 * n / 4.2e12, rel=0.05)


def test_without_a_probed_curve_the_fixed_cost_is_two_dram_round_trips():
    assert tiers.fixed_s(1e6, CAL) == pytest.approx(3e-6)


CURVE = dataclasses.replace(CAL, fixed_bytes=(1e6, 4e6, 16e6), fixed_excess_s=(2e-6, 3e-6, 5e-6))


@pytest.mark.parametrize(
    "nbytes,expected",
    [(1e3, 2e-6), (1e6, 2e-6), (2e6, 2.5e-6), (4e6, 3e-6), (8e6, 4e-6), (16e6, 5e-6), (1e9, 5e-6)],
)  # fmt: skip
def test_the_fixed_cost_follows_the_probed_curve_in_log_bytes_flat_beyond_it(nbytes, expected):
    # 2 MB sits halfway between 1 and 4 MB in log2 (1, 2, 4): halfway between 2 and 3 us.
    assert tiers.fixed_s(nbytes, CURVE) == pytest.approx(expected, rel=1e-9)


def test_each_kernel_of_a_plan_pays_a_fixed_cost_for_what_it_moves():
    cost = OpCost(flops=0, bytes_=16e6, bytes_written=1e6)
    two = plan(KernelLaunch("main"), KernelLaunch("copy_out", partial_bytes=1e6))
    assert tiers.plan_fixed_s(cost, None, CURVE) == pytest.approx(5e-6)
    assert tiers.plan_fixed_s(cost, two, CURVE) == pytest.approx(5e-6 + 2e-6)


@pytest.mark.parametrize(
    "changes,message",
    [({"fixed_bytes": (1.0,)}, "differ in length"),
     ({"fixed_bytes": (2.0, 1.0), "fixed_excess_s": (1e-6, 1e-6)}, "strictly increasing"),
     ({"fixed_bytes": (1.0,), "fixed_excess_s": (-1.0,)}, "numbers >= 0")],
)  # fmt: skip
def test_a_broken_fixed_curve_is_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(CAL, **changes)


CTA = dataclasses.replace(
    CAL, cta_programs=(8.0, 64.0, 512.0), cta_read_bytes_per_s=(0.4e12, 2.0e12, 4.4e12)
)


PROBE_INFLIGHT = 0.4e12 / 8 * CAL.dram_latency_s  # a probe program's rate alone x latency


@pytest.mark.parametrize(
    "programs,expected",
    [(0, 4.5e12), (1, 0.05e12), (4, 0.2e12), (8, 0.4e12), (16, 0.4e12 + 1.6e12 / 3),
     (64, 2.0e12), (256, 2.0e12 + 2.4e12 * 2 / 3), (512, 4.5e12), (10_000, 4.5e12)],
)  # fmt: skip
def test_the_bandwidth_follows_the_probed_curve_in_bytes_in_flight(programs, expected):
    # Programs keeping what a probe program keeps in flight sit on the probe's curve: below 8
    # programs each streams at its lone rate (50 GB/s); 16 is a third of the way from 8 to 64
    # in log2; from the largest count on, the read roof.
    assert tiers.probe_inflight_bytes(CTA) == pytest.approx(PROBE_INFLIGHT)
    assert tiers.read_bandwidth(programs, CTA, PROBE_INFLIGHT) == pytest.approx(expected, rel=1e-9)
    # Half the programs with twice the bytes in flight each: the same bytes in flight, the same
    # bandwidth (Little's law).
    if programs >= 2 and programs % 2 == 0:
        half = tiers.read_bandwidth(programs // 2, CTA, 2 * PROBE_INFLIGHT)
        assert half == pytest.approx(expected, rel=1e-9)
    assert tiers.read_bandwidth(programs, CAL, PROBE_INFLIGHT) == CAL.read_bytes_per_s  # no probe
    assert tiers.read_bandwidth(programs, CTA) == CTA.read_bytes_per_s  # none declared


def test_a_grid_keeping_few_bytes_in_flight_reads_slower_at_t5_only():
    work = Work(OpCost(flops=0, bytes_=8e6, bytes_written=0.0))
    few = plan(KernelLaunch("gemv", grid=(8, 1), inflight_bytes=PROBE_INFLIGHT))
    extra = 8e6 / 0.4e12 - 8e6 / 4.5e12
    assert tiers.concurrency_s(work.cost, few, CTA) == pytest.approx(extra)
    assert tiers.concurrency_s(work.cost, plan(KernelLaunch("gemv")), CTA) == 0.0  # no grid
    # 8 programs of 64 x the probe's bytes in flight fill the bus like 512 probe programs.
    deep = plan(KernelLaunch("gemv", grid=(8, 1), inflight_bytes=64 * PROBE_INFLIGHT))
    assert tiers.concurrency_s(work.cost, deep, CTA) == pytest.approx(0.0, abs=1e-15)
    undeclared = plan(KernelLaunch("gemv", grid=(8, 1)))  # a library's kernel: no term
    assert tiers.concurrency_s(work.cost, undeclared, CTA) == 0.0
    slow, plain = (tiers.predict(work, cal, DATASHEET, "graph", few) for cal in (CTA, CAL))
    assert slow.tiers["T4"] == pytest.approx(plain.tiers["T4"])
    assert slow.tiers["T5"] - plain.tiers["T5"] == pytest.approx(extra)
    assert slow.terms["memory"] == pytest.approx(plain.terms["memory"] + extra)


def test_a_plans_bytes_in_flight_survive_its_text():
    launch = KernelLaunch("decode_split", (8, 16), (16, 128, 128), 16, 4096.0, 196608.0)
    assert "inflight 196608" in launch.describe()
    assert KernelLaunch.parse(launch.describe()) == launch


def test_a_plans_mma_survives_its_text_and_an_unknown_one_is_refused():
    launch = KernelLaunch("flash_fwd_kernel", (4, 1, 32), (128, 64, 128), mma="sync")
    assert launch.describe().endswith(" mma sync")
    assert KernelLaunch.parse(launch.describe()) == launch
    assert "mma" not in KernelLaunch("gemm").describe()  # not known: not in the text
    with pytest.raises(ValueError, match="mma"):
        KernelLaunch("k", mma="hmma")


def test_the_fixed_curve_survives_a_json_round_trip():
    back = tiers.Calibration.from_dict(json.loads(json.dumps(CURVE.to_dict())))
    assert back == CURVE


@pytest.mark.parametrize(
    "written,method,expected",
    [(0, "events", 1.6e-5), (32e6, "events", 1.6e-5 - 32e6 / 4e12), (64e6, "events", 0.0),
     (80e6, "events", 0.0), (0, "graph", 0.0)],
)  # fmt: skip
def test_writeback_is_what_the_kernels_own_writes_do_not_cover_and_vanishes_under_graph(
    written, method, expected
):
    assert tiers.writeback_s(written, method, CAL) == pytest.approx(expected, abs=1e-18)


def test_partials_are_written_once_and_read_once():
    p = 3e6
    two = plan(KernelLaunch("a", partial_bytes=p), KernelLaunch("b", partial_bytes=p))
    assert tiers.partials_s(two, CAL) == pytest.approx(tiers.memory_s(p, p, CAL))
    assert tiers.partials_s(None, CAL) == 0.0
    assert tiers.partials_s(GEMM_PLAN, CAL) == 0.0
    assert (tiers.launches(None), tiers.launches(two)) == (1, 2)


def test_duty_and_the_compute_rate_between_burst_and_sustained():
    assert tiers.duty(10e-6, "graph", 90e-6) == 1.0
    assert tiers.duty(10e-6, "events", 90e-6) == pytest.approx(0.1)
    assert tiers.compute_rate(0.0, CAL) == pytest.approx(800e12)
    assert tiers.compute_rate(1.0, CAL) == pytest.approx(680e12)
    assert tiers.compute_rate(0.5, CAL) == pytest.approx(740e12)


def test_makespan_of_full_waves_and_of_a_straggler():
    assert tiers.makespan_s([1e-6] * 264, 132) == pytest.approx(2e-6)
    assert tiers.makespan_s([1e-6] * 133, 132) == pytest.approx(2e-6)
    assert tiers.makespan_s([], 132) == 0.0
    assert tiers.makespan_s([50e-6] + [1e-6] * 500, 132) >= 50e-6
    many = [1e-6] * (tiers.MAX_SCHEDULED_ITEMS + 1)
    assert tiers.makespan_s(many, 100) == pytest.approx(len(many) * 1e-6 / 100)


def test_exp_and_alu_on_one_sm():
    assert tiers.exp_s(1e6, CAL) == pytest.approx(1e6 / (16 * 1.98e9))
    assert tiers.alu_s(1e6, 5, CAL) == pytest.approx(5e6 / (128 * 1.98e9))


# The mma.sync peak at 5/8 of the burst matmul peak (500 of 800 TFLOP/s).
SYNC = dataclasses.replace(CAL, mma_sync_flops=500e12)


def with_mma(work_plan, mma):
    kernels = tuple(dataclasses.replace(k, mma=mma) for k in work_plan.kernels)
    return dataclasses.replace(work_plan, kernels=kernels)


def test_tensor_rate_scales_the_duty_rate_by_the_mma_sync_peak_for_mma_sync_only():
    sync, wgmma = with_mma(GEMM_PLAN, "sync"), with_mma(GEMM_PLAN, "wgmma")
    assert tiers.tensor_rate(680e12, sync, SYNC) == pytest.approx(425e12)  # 680 x 500 / 800
    assert tiers.tensor_rate(800e12, sync, SYNC) == pytest.approx(500e12)  # burst: the probe's
    for other in (wgmma, GEMM_PLAN, None):
        assert tiers.tensor_rate(680e12, other, SYNC) == 680e12
    assert tiers.tensor_rate(680e12, sync, CAL) == 680e12  # no probe: no term


def test_a_matmul_known_to_run_mma_sync_computes_at_the_mma_sync_peak_from_t5():
    work = matmul(8192, 8192, 8192)
    sync = plan(KernelLaunch("sm80_xmma_gemm", mma="sync"))
    got = tiers.predict(work, SYNC, DATASHEET, "graph", sync)
    overhead = CAL.launch_s + tiers.fixed_s(work.cost.bytes_, CAL)
    flops = 2.0 * 8192**3
    assert got.tiers["T4"] == pytest.approx(overhead + flops / 680e12, rel=1e-12)
    assert got.tiers["T5"] == pytest.approx(overhead + flops / 425e12, rel=1e-12)
    assert got.terms["compute"] == pytest.approx(flops / 425e12, rel=1e-12)


def _spread_s(work, flops_per_s: float) -> float:
    """Tensor and exp2 time of d=128 attention whose scores spread evenly over every SM: per SM
    its share of scores x 4 d FLOPs at `flops_per_s` / SMs, then one exp2 per score."""
    per_sm_s = tiers.scores(work) * 4 * 128 / (flops_per_s / CAL.sms)
    per_sm_s += tiers.exp_s(tiers.scores(work), CAL)
    return per_sm_s / CAL.sms


def test_attention_known_to_run_mma_sync_pays_its_tensor_time_at_the_mma_sync_peak():
    """The exact pairs spread over every SM: per SM, scores x 4 d FLOPs at the mma.sync rate
    per SM, then one exp2 per score (unchanged)."""
    work = prefill(1, 2, 2, 4096, 128)
    flash = plan(KernelLaunch("flash_fwd_kernel", mma="sync"))
    got = tiers.predict(work, SYNC, DATASHEET, "graph", flash)
    assert got.terms["compute"] + got.terms["exp"] == pytest.approx(
        _spread_s(work, 425e12), rel=1e-9
    )


@pytest.mark.parametrize("method,gap", METHODS)
@pytest.mark.parametrize("case", CASES)
def test_without_a_known_mma_sync_or_the_probe_nothing_changes(case, method, gap):
    work, work_plan = CASES[case]
    before = tiers.predict(work, CAL, DATASHEET, method, work_plan, gap)
    for cal, mma in ((SYNC, ""), (SYNC, "wgmma"), (CAL, "sync")):
        got = tiers.predict(work, cal, DATASHEET, method, with_mma(work_plan, mma), gap)
        assert got == before, (cal.mma_sync_flops, mma)


@given(ratio=st.floats(0.05, 1.0), case=st.sampled_from(sorted(CASES)))
def test_mma_sync_below_the_burst_peak_never_predicts_less_than_wgmma(ratio, case):
    work, work_plan = CASES[case]
    cal = dataclasses.replace(CAL, mma_sync_flops=ratio * CAL.matmul_burst_flops)
    for method, gap in METHODS:
        sync, wgmma = (
            tiers.predict(work, cal, DATASHEET, method, with_mma(work_plan, mma), gap).tiers
            for mma in ("sync", "wgmma")
        )
        assert all(sync[t] == wgmma[t] for t in ("T0", "T1", "T2", "T3", "T4"))
        assert sync["T5"] >= wgmma["T5"] * (1 - 1e-12)
        assert sync["T6"] >= wgmma["T6"] * (1 - 1e-12)
    # At the burst peak itself mma.sync is wgmma.
    same = dataclasses.replace(CAL, mma_sync_flops=CAL.matmul_burst_flops)
    sync, wgmma = (
        tiers.predict(work, same, DATASHEET, "graph", with_mma(work_plan, mma)).tiers
        for mma in ("sync", "wgmma")
    )
    assert sync == pytest.approx(wgmma, rel=1e-12)


# --- tiles -------------------------------------------------------------------------------------


def test_matmul_items_are_whole_tiles_split_over_k():
    work = matmul(200, 300, 512)
    per_item, total = tiers.matmul_items(work, GEMM_PLAN)
    assert per_item == [2.0 * 128 * 128 * 512] * 6
    assert total == pytest.approx(6 * 2 * 128 * 128 * 512)
    split = plan(KernelLaunch("gemm", tile=(128, 128, 64), splits=4))
    per_item, total = tiers.matmul_items(work, split)
    assert per_item == [2.0 * 128 * 128 * 512 / 4] * 24
    assert total == pytest.approx(6 * 2 * 128 * 128 * 512)
    assert tiers.matmul_items(work, None) is None
    assert tiers.matmul_items(work, plan(KernelLaunch("gemm"))) is None


def test_a_stream_k_plan_deals_the_whole_tiles_evenly_over_its_programs():
    work = matmul(200, 300, 512)  # 2 x 3 tiles of 128 x 128
    sk = plan(KernelLaunch("gemm_streamk", (5,), (128, 128, 64), schedule="stream-k"))
    per_item, total = tiers.matmul_items(work, sk)
    assert total == pytest.approx(6 * 2 * 128 * 128 * 512)
    assert per_item == pytest.approx([total / 5] * 5)
    # 6 tiles on 5 SMs: whole tiles take two rounds, stream-K one and a fifth of one
    assert tiers.makespan_s(per_item, 5) == pytest.approx(
        tiers.makespan_s(tiers.matmul_items(work, GEMM_PLAN)[0], 5) * 0.6
    )


def test_causal_attention_tiles_stop_at_the_diagonal():
    work = prefill(1, 2, 2, 256, 64)
    tiled = plan(KernelLaunch("fwd", tile=(128, 64)))
    assert tiers.attention_items(work, tiled) == [128 * 64 * 2.0, 128 * 64 * 4.0] * 2
    # No declared tile: no items to schedule; the exact causal pairs of both heads.
    assert tiers.attention_items(work, None) is None
    assert tiers.scores(work) == 256 * 257 / 2 * 2


@pytest.mark.parametrize("attn_plan", [None, ATTN_PLAN])
def test_decode_executes_one_score_per_cached_key(attn_plan):
    work = decode(3, 4, 4, 1000, 64)
    assert tiers.attention_items(work, attn_plan) is None  # one query: keys spread evenly
    assert tiers.scores(work) == 1000.0 * 12


def test_decode_tiles_hold_a_groups_heads_and_are_computed_whole():
    """FlashAttention 2's decode at batch 16, 32 query / 8 K/V heads: a 128-row tile per K/V
    head holds the group's 4 heads and is computed whole; two splits of the keys each."""
    gqa = dataclasses.replace(decode(16, 32, 8, 8192, 128), kv_heads=8)
    assert gqa.group == 4 and tiers.output_tiles(gqa, 128, 64) == 16 * 8
    flash = plan(KernelLaunch("fwd_splitkv", grid=(1, 2, 128), tile=(128, 64, 128), splits=2))
    items = tiers.attention_items(gqa, flash)
    assert items == [128.0 * 64 * (8192 // (2 * 64))] * (128 * 2)
    assert sum(items) == pytest.approx(32 * tiers.scores(gqa))  # 128 rows for 4 heads
    # The executed tiles cost the tensor cores and the exp unit 32x what the exact pairs do.
    exact = predict(gqa, "graph", None, 0.0)
    tiled = predict(gqa, "graph", flash, 0.0)
    assert tiled.terms["exp"] > 10 * exact.terms["exp"]
    assert tiled.tiers["T5"] > exact.tiers["T5"] and tiled.tiers["T4"] == exact.tiers["T4"]
    # Without K/V heads the decode's tiles are not placed (the keys are spread evenly).
    assert tiers.attention_items(decode(16, 32, 8, 8192, 128), flash) is None


def test_an_undeclared_schedule_spreads_the_scores_over_every_sm():
    """Batch 1 with 2 heads must not run on 2 SMs of 132 when nothing declares so."""
    work = prefill(1, 2, 2, 4096, 128)
    got = predict(work, "graph", None, 0.0)
    expected = _spread_s(work, CAL.matmul_sustained_flops)
    assert got.terms["compute"] + got.terms["exp"] == pytest.approx(expected, rel=1e-9)


# --- predict -----------------------------------------------------------------------------------


@pytest.mark.parametrize("method,gap", METHODS)
@pytest.mark.parametrize("case", CASES)
def test_each_tier_adds_time_where_its_term_only_adds(case, method, gap):
    work, work_plan = CASES[case]
    got = predict(work, method, work_plan, gap)
    t = got.tiers
    assert t["T2"] >= t["T1"]
    assert t["T3"] >= t["T2"]
    assert t["T4"] >= t["T3"]  # sustained < burst in CAL
    if work.kind == "matmul" and tiers.matmul_items(work, work_plan) is not None:
        assert t["T5"] >= t["T4"]
    if work.kind == "attention" and work_plan.alu_ops_per_score > 0:
        assert t["T6"] >= t["T5"]
    assert sum(got.terms.values()) <= t["T6"] * (1 + 1e-12)
    assert set(got.terms) == set(tiers.TERMS)
    cost = work.cost
    roof = max(tiers.memory_s(cost.bytes_read, cost.bytes_written, CAL), cost.flops / 800e12)
    assert got.roof_s == pytest.approx(roof, rel=1e-12)


@pytest.mark.parametrize("case", ["prefill", "decode-split-kv"])
def test_overlapping_the_exponent_never_predicts_more_than_series(case):
    work, series = CASES[case]
    overlapped = plan(*series.kernels, exp_overlapped=True, alu_ops_per_score=6.0)
    series = plan(*series.kernels, alu_ops_per_score=6.0)
    for method, gap in METHODS:
        fast, slow = predict(work, method, overlapped, gap), predict(work, method, series, gap)
        for tier in tiers.TIERS:
            assert fast.tiers[tier] <= slow.tiers[tier]


@pytest.mark.parametrize("case", ["prefill", "decode-split-kv"])
def test_the_exponent_beside_pv_lies_between_full_overlap_and_series(case):
    work, series = CASES[case]
    full = plan(*series.kernels, exp_overlapped=True, alu_ops_per_score=6.0)
    beside = plan(*series.kernels, exp_beside_pv=True, alu_ops_per_score=6.0)
    series = plan(*series.kernels, alu_ops_per_score=6.0)
    for method, gap in METHODS:
        t = [predict(work, method, p, gap).tiers["T6"] for p in (full, beside, series)]
        assert t[0] <= t[1] <= t[2]
    if case == "prefill":  # compute-bound, the exponent a real part of it: strictly between
        method, gap = METHODS[0]
        t = [predict(work, method, p, gap).tiers["T6"] for p in (full, beside, series)]
        assert t[0] < t[1] < t[2]


nonneg = st.floats(0, 1e13)


@given(flops=nonneg, read=nonneg, written=nonneg, more=st.floats(1, 1e12))
def test_more_bytes_or_flops_never_predict_less_time(flops, read, written, more):
    def times(f, r, w, method, gap):
        return predict(Work(ops.OpCost(f, r + w, w)), method, SPLITK_PLAN, gap).tiers

    for method, gap in METHODS:
        base = times(flops, read, written, method, gap)
        for bigger in (times(flops + more, read, written, method, gap),
                       times(flops, read + more, written, method, gap)):  # fmt: skip
            assert all(bigger[tier] >= base[tier] * (1 - 1e-12) for tier in tiers.TIERS)
    # Under events the write-back covers what the kernel's own writes do not: more bytes
    # written never predict less time either.
    for method, gap in METHODS:
        base = times(flops, read, written, method, gap)
        bigger = times(flops, read, written + more, method, gap)
        assert all(bigger[tier] >= base[tier] * (1 - 1e-12) for tier in tiers.TIERS)


def test_a_memory_bound_top_tier_is_launch_fixed_memory_and_writeback():
    work, gemv_plan = CASES["gemv-split-k"]
    got = predict(work, "events", gemv_plan, IDLE_GAP_S)
    assert got.bound == "memory"
    assert got.terms["writeback"] > 0
    parts = ("launch", "fixed", "memory", "writeback")
    assert sum(got.terms[p] for p in parts) == pytest.approx(got.time_s, rel=1e-12)
    assert got.terms["launch"] == pytest.approx(2 * CAL.launch_s)


@pytest.mark.parametrize(
    "work,work_plan,bound,methods",
    [(matmul(1, 8192, 8192), SPLITK_PLAN, "memory", METHODS),
     (matmul(1, 8192, 8192), None, "memory", METHODS),
     (matmul(8192, 8192, 8192), GEMM_PLAN, "compute", METHODS),
     (matmul(8192, 8192, 8192), None, "compute", METHODS),
     # Under events the 16 us write-back (a memory term) outweighs launch + fixed.
     (matmul(16, 16, 16), GEMM_PLAN, "latency", METHODS[:1]),
     (matmul(16, 16, 16), None, "latency", METHODS[:1])],
)  # fmt: skip
def test_bound_by_shape(work, work_plan, bound, methods):
    for method, gap in methods:
        assert predict(work, method, work_plan, gap).bound == bound


def test_a_gemv_on_a_square_tile_pays_for_the_padded_rows():
    assert predict(matmul(1, 8192, 8192), "graph", GEMM_PLAN).bound == "compute"


def test_a_large_gemm_under_graph_runs_at_the_sustained_peak():
    work = matmul(8192, 8192, 8192)
    expected = CAL.launch_s + tiers.fixed_s(work.cost.bytes_, CAL) + work.cost.flops / 680e12
    assert predict(work).tiers["T4"] == pytest.approx(expected, rel=1e-12)


# --- calibration and work ----------------------------------------------------------------------


def test_calibration_round_trips_and_rejects_missing_or_negative_constants():
    assert Calibration.from_dict(CAL.to_dict()) == CAL
    data = CAL.to_dict()
    del data["dram_latency_s"]
    with pytest.raises(ValueError, match="dram_latency_s"):
        Calibration.from_dict(data)
    with pytest.raises(ValueError, match="launch_s"):
        Calibration.from_dict(CAL.to_dict() | {"launch_s": -1e-6})


def test_the_mma_sync_peak_is_optional_and_round_trips():
    assert CAL.mma_sync_flops is None  # a calibration written before the probe still loads
    assert Calibration.from_dict(SYNC.to_dict()) == SYNC
    assert json.loads(json.dumps(CAL.to_dict()))["mma_sync_flops"] is None
    with pytest.raises(ValueError, match="mma_sync_flops"):
        dataclasses.replace(CAL, mma_sync_flops=-1.0)


def test_work_rejects_an_unknown_kind():
    with pytest.raises(ValueError, match="conv"):
        Work(ops.gemm(1, 1, 1), kind="conv")


def test_output_tiles_count_the_grid_of_one_program_per_tile():
    gemm = matmul(100, 300, 64)
    assert tiers.output_tiles(gemm, 64, 128) == 2 * 3  # ceil(100/64) x ceil(300/128)
    assert tiers.output_tiles(prefill(2, 4, 2, 300, 64), 128, 64) == 3 * 2 * 4
    with pytest.raises(ValueError, match="no output tiles"):
        tiers.output_tiles(Work(OpCost(flops=1, bytes_=1)), 64, 64)
