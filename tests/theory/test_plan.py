"""theory/plan.py: the counts a launch plan carries, its one-line text read back by `parse`,
and the plans it refuses."""

import pytest

from roofbench.theory.plan import KernelLaunch, LaunchPlan

SPLIT_K = 4
PARTIAL = 4.0 * SPLIT_K * 16 * 8192  # fp32 partials of a split-K GEMV: 2 MiB, seven digits
TWO_KERNELS = LaunchPlan(
    (
        KernelLaunch("gemv", grid=(128, 4, 1), tile=(16, 4, 512), splits=SPLIT_K,
                     partial_bytes=PARTIAL),
        KernelLaunch("sum_splits", grid=(128,), tile=(1024,), partial_bytes=PARTIAL),
    ),
    notes=("a note the text does not carry",),
    exp_overlapped=True,
    alu_ops_per_score=5.5,
)  # fmt: skip


def test_programs_is_the_product_of_the_grid():
    assert KernelLaunch("k", grid=(128, 4, 3)).programs == 1536
    assert KernelLaunch("k", grid=(7,)).programs == 7
    assert KernelLaunch("k").programs == 0  # no grid declared


def test_launches_and_partial_bytes_count_every_kernel():
    assert TWO_KERNELS.launches == 2
    assert TWO_KERNELS.partial_bytes == 2 * PARTIAL  # written by one kernel, read by the next
    one = LaunchPlan((KernelLaunch("gemm", tile=(128, 128, 64)),))
    assert one.launches == 1 and one.partial_bytes == 0


def test_describe_names_the_kernels_and_the_flags():
    text = TWO_KERNELS.describe()
    assert text.startswith("2 kernels: gemv grid 128x4x1 tile 16x4x512 split 4 partial 2097152;")
    assert text.endswith(" | alu 5.5 | exp overlapped")
    assert LaunchPlan((KernelLaunch("gemm"),)).describe() == "1 kernel: gemm"


def test_a_plan_round_trips_through_its_text():
    back = LaunchPlan.parse(TWO_KERNELS.describe())
    assert back.kernels == TWO_KERNELS.kernels
    assert back.exp_overlapped is True and back.alu_ops_per_score == 5.5
    assert back.source == "declared" and back.notes == ()  # notes are not in the text


def test_a_stream_k_schedule_round_trips_and_unknown_ones_are_refused():
    launch = KernelLaunch("gemm_streamk", grid=(132,), tile=(64, 128, 128), schedule="stream-k")
    plan = LaunchPlan((launch,))
    assert "schedule stream-k" in plan.describe()
    assert LaunchPlan.parse(plan.describe()).kernels == (launch,)
    with pytest.raises(ValueError, match="schedule"):
        KernelLaunch("gemm", schedule="round-robin")


def test_the_exponent_beside_pv_round_trips():
    plan = LaunchPlan((KernelLaunch("attn_fwd_overlap"),), exp_beside_pv=True)
    assert plan.describe().endswith(" | exp beside pv")
    back = LaunchPlan.parse(plan.describe())
    assert back.exp_beside_pv is True and back.exp_overlapped is False


def test_a_plan_without_flags_parses_without_them():
    plan = LaunchPlan((KernelLaunch("attn_fwd", grid=(64, 16), tile=(128, 64)),))
    back = LaunchPlan.parse(plan.describe(), source="observed")
    assert back.kernels == plan.kernels and back.source == "observed"
    assert back.exp_overlapped is False and back.alu_ops_per_score == 0.0


@pytest.mark.parametrize("text", ["", "no colon here"])
def test_a_text_that_is_no_plan_parses_to_none(text):
    assert LaunchPlan.parse(text) is None


def test_an_empty_plan_is_refused():
    with pytest.raises(ValueError, match="at least one kernel"):
        LaunchPlan(())


def test_an_unknown_source_is_refused():
    with pytest.raises(ValueError, match="source"):
        LaunchPlan((KernelLaunch("k"),), source="guessed")
