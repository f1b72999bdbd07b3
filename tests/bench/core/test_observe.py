"""bench/core/observe.py without a GPU: kernel names made one word, the tile a name carries,
the grid that must confirm it, and the plan built from a profiler's trace."""

from pathlib import Path

import pytest

from roofbench.bench.core.observe import (
    ObservedKernel,
    confirmed_tile,
    name_mma,
    name_tile,
    observed_plan,
    short_name,
    trace_kernels,
    with_named_mma,
)
from roofbench.bench.core.records import read_records
from roofbench.kernels.catalog import get_impl, make_case
from roofbench.theory import tiers
from roofbench.theory.plan import LaunchPlan

CUBLAS = (
    "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize64x128x64_warpgroupsize1x1x1_"
    "execute_segment_k_off_kernel__5x_cublas"
)
COPY = (
    "void at::native::elementwise_kernel<128, 4, at::native::gpu_kernel_impl_nocast<"
    "at::native::direct_copy_kernel_cuda(at::TensorIteratorBase&)::{lambda()#3}>(int)"
)


@pytest.mark.parametrize(
    "name,short",
    [(COPY, "elementwise_kernel"), (CUBLAS, CUBLAS[:60]), ("void foo::bar(int)", "bar"),
     ("ret_t weird:name;x", "weird_name_x")],
)  # fmt: skip
def test_a_kernel_name_becomes_one_word_a_plan_can_hold(name, short):
    assert short_name(name) == short
    assert " " not in short_name(name) and ";" not in short_name(name)


def test_the_tile_is_the_first_block_shape_in_the_name():
    assert name_tile(CUBLAS) == (64, 128, 64)
    assert name_tile("cudnn_generated_fort_native_sdpa_sm90_knob_7_64x128x128_4x1x1_k") == (
        64,
        128,
        128,
    )
    assert name_tile(COPY) == ()


FLASH = (
    "void flash_fwd_kernel<Flash_fwd_kernel_traits<128, 128, 64, 4, 0, 0, bfloat16_t, "
    "Flash_kernel_traits<128, 128, 64, 4, bfloat16_t>>, 0, 1, 0, 0, 1, 1, 0, 0>(Flash_fwd_params)"
)  # as Nsight Compute named SDPA's flash prefill on an H200


def test_flash_attention_2s_traits_give_its_tile_and_the_grid_confirms_it():
    assert name_tile(FLASH) == (128, 64, 128)  # BLOCK_M 128, BLOCK_N 64, head dim 128
    case = make_case("prefill_attention", batch=8, seq=512, heads=32, kv_heads=8, head_dim=128)
    # SDPA's flash prefill at b8 s512 launched a 4 x 8 x 32 grid: 512 / 128 query blocks.
    assert confirmed_tile(case.work(), name_tile(FLASH), 4 * 8 * 32) == ((128, 64, 128), 1)


@pytest.mark.parametrize(
    "batch,tile,grid,splits",
    [(16, (128, 64, 128), (1, 2, 128), 2),  # FlashAttention 2's split-KV at batch 16
     (1, (16, 128, 128), (8, 8, 1), 8),  # cuDNN's decode at batch 1, context 1024
     (16, (16, 128, 128), (1, 8, 16), 1)],  # and at batch 16
)  # fmt: skip
def test_a_decode_grid_of_batch_by_kv_heads_confirms_the_tile_and_its_splits(
    batch, tile, grid, splits
):
    case = make_case("decode_attention", batch=batch, seq=1024, heads=32, kv_heads=8, head_dim=128)
    programs = grid[0] * grid[1] * grid[2]
    assert confirmed_tile(case.work(), tile, programs) == (tile, splits)
    assert confirmed_tile(case.work(), tile, programs + 1) == ((), 1)


def test_the_grid_must_confirm_the_tile_in_one_orientation():
    work = make_case("gemm", m=256, n=1024, k=4096).work()
    # cuBLAS's 64x128 runs 64 over our N and 128 over our M: 2 x 16 = 32 tiles.
    assert confirmed_tile(work, (64, 128, 64), 32) == ((128, 64, 64), 1)
    # 128 programs are 4 x the 32 tiles: a split-K of 4.
    assert confirmed_tile(work, (64, 128, 64), 128) == ((128, 64, 64), 4)
    # At M = 32 the orientations differ: cuBLAS's makes 1 x 16 tiles, the other 1 x 8.
    thin = make_case("gemm", m=32, n=1024, k=4096).work()
    assert confirmed_tile(thin, (64, 128, 64), 16) == ((128, 64, 64), 1)
    assert confirmed_tile(thin, (64, 128, 64), 8) == ((64, 128, 64), 1)
    # A persistent kernel's grid (the SM count) confirms nothing.
    assert confirmed_tile(work, (64, 128, 64), 132) == ((), 1)
    assert confirmed_tile(work, (), 32) == ((), 1)


def test_an_attention_tile_is_confirmed_by_query_blocks_times_batch_and_heads():
    work = make_case(
        "prefill_attention", batch=2, heads=32, kv_heads=8, seq=2048, head_dim=128, causal=True
    ).work()
    assert confirmed_tile(work, (128, 64, 128), 16 * 64) == ((128, 64, 128), 1)
    assert confirmed_tile(work, (128, 64, 128), 1000) == ((), 1)


TRACE = {
    "traceEvents": [
        {"cat": "cpu_op", "name": "aten::mm", "ts": 1},
        {"cat": "kernel", "name": COPY, "ts": 30, "dur": 2, "args": {"grid": [16, 1, 1]}},
        {"cat": "kernel", "name": CUBLAS, "ts": 10, "dur": 9, "args": {"grid": [2, 16, 1]}},
    ]
}


def test_the_trace_gives_kernels_in_start_order_and_never_their_durations():
    kernels = trace_kernels(TRACE)
    assert kernels == [ObservedKernel(CUBLAS, (2, 16, 1)), ObservedKernel(COPY, (16, 1, 1))]
    assert not any(hasattr(k, "dur") or hasattr(k, "duration_s") for k in kernels)


def test_an_observed_plan_counts_every_kernel_and_keeps_the_copys_bytes():
    case = make_case("gemm", m=256, n=1024, k=4096)
    declared = get_impl("gemm", "torch").launch_plan(case)
    assert declared.opaque
    plan = observed_plan(trace_kernels(TRACE), case.work(), declared)
    assert plan.source == "observed" and plan.launches == 2
    assert plan.main.tile == (128, 64, 64) and plan.main.grid == (2, 16, 1)
    assert plan.partial_bytes == declared.partial_bytes
    # The plan survives the record's text, and the tiers quantise cuBLAS's tiles with it.
    back = LaunchPlan.parse(plan.describe())
    assert back.kernels == plan.kernels
    assert tiers.matmul_items(case.work(), plan) is not None
    assert observed_plan([], case.work(), declared) is None


def test_our_declared_plans_are_not_opaque():
    case = make_case("gemm", m=256, n=1024, k=4096)
    assert not get_impl("gemm", "triton").launch_plan(case).opaque


# Kernel names as Nsight Compute and torch.profiler listed them on an H200 (the committed sweeps).
CUDNN_DECODE = (
    "cudnn_generated_fort_native_sdpa_sm80_flash_fprop_wmma_f16_knob_35_16x128x128_1x4x1_cga1x1x1"
    "_kernel0_0"
)
CUDNN_PREFILL = (
    "cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_7_64x128x128_4x1x1_cga1x1x1"
    "_kernel0_0"
)


@pytest.mark.parametrize(
    "name,mma",
    [(FLASH, "sync"), ("flash_fwd_kernel", "sync"), ("flash_fwd_splitkv_kernel", "sync"),
     (CUDNN_DECODE, "sync"), (short_name(CUDNN_DECODE), "sync"),
     (CUDNN_PREFILL, "wgmma"), (short_name(CUDNN_PREFILL), "wgmma"),
     ("nvjet_sm90_tst_320x128_64x3_1x2_h_bz_coopB_TNT", "wgmma"), (CUBLAS, "wgmma"),
     # The split-KV combine runs no MMA; ours and torch's own kernels say nothing.
     ("flash_fwd_splitkv_combine_kernel", ""), ("_attn_fwd_kernel", ""),
     ("_gemm_tma_kernel", ""), (COPY, "")],
)  # fmt: skip
def test_the_name_says_which_matrix_instructions_a_kernel_runs(name, mma):
    assert name_mma(name) == mma


def test_an_observed_plan_carries_each_kernels_mma_through_its_text():
    case = make_case("decode_attention", batch=16, seq=1024, heads=32, kv_heads=8, head_dim=128)
    kernels = [ObservedKernel(FLASH.replace("flash_fwd_kernel", "flash_fwd_splitkv_kernel"),
                              (1, 2, 128)),
               ObservedKernel("void flash_fwd_splitkv_combine_kernel<...>(Flash_fwd_params)",
                              (128, 1, 1))]  # fmt: skip
    plan = observed_plan(kernels, case.work(), None)
    assert [k.mma for k in plan.kernels] == ["sync", ""]
    assert plan.main.mma == "sync" and plan.main.tile == (128, 64, 128)
    assert LaunchPlan.parse(plan.describe()).kernels == plan.kernels


RECORDED = Path(__file__).resolve().parents[3] / "results" / "h200" / "20261201T231443Z"


@pytest.mark.parametrize(
    "op,impl,mma",
    [("prefill_attention", "sdpa_flash", "sync"), ("decode_attention", "sdpa_flash", "sync"),
     ("decode_attention", "sdpa_cudnn", "sync"), ("prefill_attention", "sdpa_cudnn", "wgmma"),
     ("gemm", "torch", "wgmma"), ("gemm", "triton", "")],
)  # fmt: skip
def test_the_committed_plans_name_their_mma(op, impl, mma):
    """A plan recorded before its text carried the mma: its kernels' names give it."""
    records = [r for r in read_records(RECORDED / "records.csv") if (r.op, r.impl) == (op, impl)]
    plans = [with_named_mma(LaunchPlan.parse(r.plan)) for r in records if r.plan]
    assert plans and {p.main.mma for p in plans} == {mma}
