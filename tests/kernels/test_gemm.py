"""GEMM C = A @ W^T: the Triton kernel and the cuBLAS baseline against a float64 oracle.

Small fp16/fp32 shapes run everywhere (under Triton's interpreter without a GPU); bf16 and
realistic shapes run on the GPU only."""

import math

import pytest
import torch

from roofbench.kernels import gemm as gemm_module
from roofbench.kernels import gemm_streamk
from roofbench.kernels._util import Tuner
from roofbench.kernels.check import check
from roofbench.kernels.gemm import gemm
from roofbench.kernels.ops.gemm import GemmCase

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize(
    "m, n, k, dtype",
    [
        (3, 40, 70, "fp32"),  # M, N, K all ragged against the 16x16x16 tile
        (33, 17, 64, "fp16"),  # K a multiple of the block (no K mask), N = 17
        (1, 48, 16, "fp16"),  # one row, one K step
    ],
)
@pytest.mark.parametrize("impl", ["triton", "torch"])
def test_gemm_matches_float64(impl, m, n, k, dtype):
    res = check(impl, GemmCase(m, n, k, dtype), DEVICE)
    assert res.ok, res


def test_gemm_returns_out_and_rejects_mismatched_k():
    a = torch.randn(5, 32, dtype=torch.float16, device=DEVICE)
    w = torch.randn(8, 32, dtype=torch.float16, device=DEVICE)
    out = torch.full((5, 8), float("nan"), dtype=torch.float16, device=DEVICE)
    assert gemm(a, w, out=out) is out
    assert not out.isnan().any()
    with pytest.raises(ValueError):
        gemm(a, w[:, :16])


def test_gemm_k_zero_gives_zeros():
    a = torch.randn(4, 0, device=DEVICE)
    w = torch.randn(6, 0, device=DEVICE)
    assert gemm(a, w).eq(0).all()


@pytest.mark.gpu
@pytest.mark.parametrize(
    "m, n, k, dtype",
    [
        (4096, 4096, 4096, "bf16"),
        (1000, 1000, 1000, "bf16"),  # nothing a multiple of the tile
        (3, 14336, 4096, "bf16"),
        (512, 1024, 4096, "fp16"),
        (256, 256, 512, "fp32"),  # tf32 dots
    ],
)
@pytest.mark.parametrize("impl", ["triton", "torch"])
def test_gemm_gpu(impl, m, n, k, dtype):
    res = check(impl, GemmCase(m, n, k, dtype), "cuda")
    assert res.ok, res


needs_descriptors = pytest.mark.skipif(
    gemm_module.TensorDescriptor is None, reason="this Triton has no host tensor descriptors"
)


@needs_descriptors
@pytest.mark.parametrize(
    "m, n, k, config",
    [
        (3, 40, 72, {}),  # K not a multiple of BLOCK_K: the descriptor zero-fills past K
        (40, 48, 200, {"SPLIT_K": 3}),  # K split, fp32 partials summed by a second pass
        (33, 64, 64, {"SUBTILE": True, "BLOCK_N": 32}),  # epilogue in two halves
        (200, 190, 32, {}),  # more tiles than programs: the persistent loop takes several
        (70, 32, 48, {"PERSISTENT": False, "SPLIT_K": 2}),
        # stream-K: tiles split between 2-3 programs, each program ending in a split tile
        (40, 48, 200, {"STREAM_K": True, "PROGRAMS": 5}),
        # more programs than a tile has K steps: programs with one short segment each
        (20, 20, 300, {"STREAM_K": True, "PROGRAMS": 11}),
        # whole tiles and split ones in one program; N and K ragged
        (33, 70, 72, {"STREAM_K": True, "PROGRAMS": 3}),
        # the weight rows on the MMA's M side (W A^T, stored transposed), split and whole tiles
        (40, 48, 200, {"STREAM_K": True, "SWAP_AB": True, "PROGRAMS": 5}),
        (33, 70, 72, {"STREAM_K": True, "SWAP_AB": True, "PROGRAMS": 3}),
        # s programs per tile (an even split-K finished in the kernel), s not dividing K's steps
        (33, 70, 200, {"STREAM_K": True, "PER_TILE": 3}),
        (5, 40, 136, {"STREAM_K": True, "SWAP_AB": True, "PER_TILE": 2}),
        (20, 20, 32, {"STREAM_K": True, "PER_TILE": 3}),  # more programs asked than K steps
    ],
)
def test_gemm_descriptor_kernel(m, n, k, config):
    def fn(a, w, out):
        return gemm(a, w, out=out, config={"TMA": True, **config})

    res = check(fn, GemmCase(m, n, k, "fp16"), DEVICE)
    assert res.ok, res


@needs_descriptors
def test_stream_k_leaves_its_counters_at_zero_and_counts_its_partials():
    a = torch.randn(40, 200, dtype=torch.float16, device=DEVICE)
    w = torch.randn(48, 200, dtype=torch.float16, device=DEVICE)
    config = {"TMA": True, "STREAM_K": True, "PROGRAMS": 5}
    first = gemm(a, w, config=config)
    again = gemm(a, w, config=config)  # the counters were returned to zero: same sums
    torch.testing.assert_close(first, again)
    assert int(gemm_streamk.counters(a.device, 9).abs().sum()) == 0
    # 3 x 3 tiles of 16 x 16, 13 K steps each: 117 iterations over 5 programs of 23-24. Split
    # segments: program 0 ends in tile 1, 1 spans 1-3, 2 spans 3-5, 3 spans 5-7, 4 spans 7-8:
    # 8 segments over 4 split tiles (1, 3, 5, 7); each written, and all but the finisher's read.
    cfg = {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16}
    assert gemm_streamk.partial_bytes(40, 48, 200, cfg, 5) == 4.0 * 16 * 16 * (2 * 8 - 4)


def test_programs_per_tile_make_an_even_split_k():
    cfg = {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16, "PER_TILE": 3}
    # 3 x 3 tiles, 3 programs each; every program holds one segment of one tile, so each of the
    # 27 segments is written, and read back by its tile's finisher
    assert gemm_streamk.programs_for(40, 48, 200, cfg, 132) == 27
    assert gemm_streamk.partial_bytes(40, 48, 200, cfg, 27) == 4.0 * 16 * 16 * 2 * 27
    whole = {**cfg, "PER_TILE": 1}  # one program per tile: nothing split, no partials
    assert gemm_streamk.programs_for(40, 48, 200, whole, 132) == 9
    assert gemm_streamk.partial_bytes(40, 48, 200, whole, 9) == 0.0
    # stream-K proper: one program per SM, or one per K step where there are fewer
    assert gemm_streamk.programs_for(40, 48, 200, {**cfg, "PER_TILE": 0}, 100) == 100
    assert gemm_streamk.programs_for(20, 20, 32, {**cfg, "PER_TILE": 0}, 100) == 8
    # never more programs per tile than K steps: 2 x 2 tiles of 2 steps
    assert gemm_streamk.programs_for(20, 20, 32, cfg, 132) == 8


@pytest.mark.parametrize("m", [1, 32, 64, 128, 256, 512, 1024, 4096])
@pytest.mark.parametrize("n, k", [(14336, 4096), (4096, 14336), (1024, 4096)])
def test_candidates_are_few_and_fit_the_rows(m, n, k):
    configs = gemm_module.candidates(m, n, k, 132)
    assert 1 <= len(configs) <= 7
    for cfg in configs:
        assert cfg["BLOCK_M"] <= max(64, m)  # no 128-row tiles for a handful of tokens
        if cfg["SPLIT_K"] > 1:
            assert m < 1024
            steps = k // cfg["BLOCK_K"] // cfg["SPLIT_K"]
            assert steps >= 4
            tiles = -(-m // cfg["BLOCK_M"]) * -(-n // cfg["BLOCK_N"])
            assert tiles * cfg["SPLIT_K"] <= 132  # one wave of work items
    # the two-kernel split-K is offered exactly where 64x64 or 64x128 tiles leave over half the
    # SMs idle
    two_kernel = [c for c in configs if not c["STREAM_K"] and c["SPLIT_K"] > 1]
    few = any(-(-m // 64) * (n // bn) * 2 <= 132 for bn in (64, 128))
    assert bool(two_kernel) == (m < 1024 and few)


def test_tuner_skips_failing_configs_and_caches():
    times = {1: 3.0, 2: 1.0, 3: 2.0}
    calls = []

    def fake_time_s(fn):
        fn()
        return times[calls[-1]]

    def launch(cfg):
        calls.append(cfg["id"])
        if cfg["id"] == 2:
            raise RuntimeError("out of shared memory")

    tuner = Tuner(time_s=fake_time_s)
    made = []

    def make():
        made.append(1)
        return [{"id": 1}, {"id": 2}, {"id": 3}]

    assert tuner.pick("key", make, launch) == {"id": 3}
    assert tuner.pick("key", make, launch) == {"id": 3}
    assert len(made) == 1  # candidates are built and timed once per key
    assert [t for _, t in tuner.timings["key"]] == [3.0, math.inf, 2.0]


def _all_candidates() -> list[dict]:
    seen = {}
    for m, n, k in [(4096, 1000, 512), (512, 4096, 4096), (200, 1000, 4096), (32, 4096, 14336)]:
        for cfg in gemm_module.candidates(m, n, k, 132):
            seen.setdefault(tuple(sorted(cfg.items())), cfg)
    return list(seen.values())


@pytest.mark.gpu
@pytest.mark.parametrize("index", range(12))
def test_each_descriptor_candidate_on_gpu(index):
    configs = _all_candidates()
    if index >= len(configs):
        pytest.skip("fewer candidates")

    def fn(a, w, out):
        return gemm(a, w, out=out, config={"TMA": True, **configs[index]})

    res = check(fn, GemmCase(300, 1000, 512, "bf16"), "cuda")
    assert res.ok, res


@pytest.mark.gpu
def test_gemm_pointer_kernel_bf16_on_gpu():
    def fn(a, w, out):
        return gemm(a, w, out=out, config={"TMA": False})

    res = check(fn, GemmCase(300, 1000, 512, "bf16"), "cuda")
    assert res.ok, res
