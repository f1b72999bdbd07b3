"""GEMV y = x @ W^T for 1..16 tokens: plain and split-K paths against a float64 oracle."""

import pytest
import torch

from roofbench.kernels.check import check
from roofbench.kernels.gemv import gemv, plan
from roofbench.kernels.ops.gemm import GemmCase
from roofbench.kernels.ops.gemv import GEMV_MAX_M, GemvCase

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def product_case(m, n, k, dtype):
    """The GEMV op's case up to 16 rows; beyond, the same product as a GEMM case (the kernel
    tiles any M, the op is defined for decode's few rows)."""
    return (GemvCase if m <= GEMV_MAX_M else GemmCase)(m, n, k, dtype)


@pytest.mark.parametrize(
    "m, n, k, dtype",
    [
        (1, 40, 200, "fp32"),  # broadcast path, K not a multiple of BLOCK_K
        (1, 33, 64, "fp16"),
        (1, 40, 96, "bf16"),  # no tl.dot on this path, so bf16 is exact under the interpreter too
        (3, 40, 200, "fp16"),  # tensor-core path, tokens padded to 16
        (17, 24, 96, "fp32"),  # more tokens than one dot tile: two token blocks
    ],
)
@pytest.mark.parametrize("impl", ["triton", "torch"])
def test_gemv_matches_float64(impl, m, n, k, dtype):
    res = check(impl, product_case(m, n, k, dtype), DEVICE)
    assert res.ok, res


@pytest.mark.parametrize("m", [1, 5])
@pytest.mark.parametrize("split_k", [2, 3])
def test_gemv_split_k(m, split_k):
    def split(x, w, out):
        return gemv(x, w, out=out, config={"SPLIT_K": split_k})

    res = check(split, product_case(m, 24, 200, "fp32"), DEVICE)
    assert res.ok, res


def test_plan_splits_k_only_when_rows_leave_sms_idle():
    sms = 132
    assert plan(1, 14336, 4096, 2, sms)["SPLIT_K"] == 1
    assert plan(1, 4096, 14336, 2, sms)["SPLIT_K"] == 1
    small = plan(1, 256, 8192, 2, sms)
    assert small["SPLIT_K"] > 1
    assert 8192 // small["BLOCK_K"] // small["SPLIT_K"] >= 4  # each split keeps >= 4 K steps


def test_plan_k_step_shrinks_as_programs_per_sm_grow():
    sms = 132
    steps = [plan(4, n, 4096, 2, sms)["BLOCK_K"] for n in (4096, 8192, 14336)]
    assert steps == sorted(steps, reverse=True)  # ~1, 2, 3.4 programs per SM
    assert steps[0] > steps[-1]


def test_gemv_rejects_k_strided_inputs():
    x = torch.randn(1, 64, device=DEVICE)
    w = torch.randn(64, 8, device=DEVICE).T  # [8, 64] but stride 1 along N, not K
    with pytest.raises(ValueError):
        gemv(x, w)


@pytest.mark.gpu
@pytest.mark.parametrize("m", [1, 4, 16])
@pytest.mark.parametrize("n, k", [(14336, 4096), (4096, 14336), (256, 8192)])
@pytest.mark.parametrize("impl", ["triton", "torch"])
def test_gemv_gpu(impl, m, n, k):
    res = check(impl, product_case(m, n, k, "bf16"), "cuda")
    assert res.ok, res


@pytest.mark.gpu
def test_gemv_gpu_fp16_ragged():
    res = check("triton", GemvCase(2, 1001, 3001, "fp16"), "cuda")
    assert res.ok, res
