"""GEMM C = A @ W^T: the Triton kernel and the cuBLAS baseline against a float64 oracle.

Small fp16/fp32 shapes run everywhere (under Triton's interpreter without a GPU); bf16 and
realistic shapes run on the GPU only."""

import pytest
import torch

from roofbench.kernels.check import GemmCase, check
from roofbench.kernels.gemm import gemm

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
