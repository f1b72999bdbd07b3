"""A projection's epilogue, finished from its fp32 sums: the RMSNorm's 1/rms (folded into the
product), the bias, SiLU x up and the residual add; and split-K's second pass, which sums the
partial products and finishes them the same way (the GEMV's and, with no epilogue, the GEMM's).
The GEMV kernel itself is in `kernels.gemv`."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._util import gdc_launch_dependents, gdc_wait
from .gemv_plan import SUM_BLOCK


@triton.jit
def _project(acc, ss, rows, b_ptr, K, eps, NORM: tl.constexpr, BIAS: tl.constexpr):
    """A projection's fp32 sums over all of K, finished: scaled by 1 / rms of the input rows
    (`ss`, their sums of squares over K: the RMSNorm folded in) and the weight rows' bias added."""
    if NORM:
        acc = acc / tl.sqrt(ss / K + eps)
    if BIAS:
        acc = acc + tl.load(b_ptr + rows).to(tl.float32)
    return acc


@triton.jit
def silu_x_up(gate, up):
    """SiLU(gate) x up = gate / (1 + exp(-gate)) x up, in fp32."""
    return gate / (1.0 + tl.exp(-gate)) * up


@triton.jit
def _sum_splits_kernel(
    p_ptr,
    ss_ptr,
    b_ptr,
    r_ptr,
    y_ptr,
    M,
    N,
    K,
    stride_ym,
    stride_rm,
    eps,
    SPLIT_K: tl.constexpr,
    BLOCK: tl.constexpr,
    NORM: tl.constexpr,
    BIAS: tl.constexpr,
    GLU: tl.constexpr,
    RESIDUAL: tl.constexpr,
    PDL: tl.constexpr,
):
    """The second pass of split-K: y[m, j] = the sum over splits of p[s, m, j], finished as the
    first pass would have (1/rms, bias, SiLU x up of columns j and N/2 + j, residual), cast."""
    if PDL:
        gdc_launch_dependents()
        gdc_wait()
    n_out = N // 2 if GLU else N
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < M * n_out
    m = offs // n_out
    col = offs % n_out
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    up = tl.zeros((BLOCK,), dtype=tl.float32)
    ss = tl.zeros((BLOCK,), dtype=tl.float32)
    for s in tl.static_range(SPLIT_K):
        p = p_ptr + s * M * N + m * N + col
        acc += tl.load(p, mask=mask, other=0.0)
        if GLU:
            up += tl.load(p + n_out, mask=mask, other=0.0)
        if NORM:
            ss += tl.load(ss_ptr + s * M + m, mask=mask, other=0.0)
    acc = _project(acc, ss, col, b_ptr, K, eps, NORM, BIAS)
    if GLU:
        acc = silu_x_up(acc, _project(up, ss, col + n_out, b_ptr, K, eps, NORM, BIAS))
    if RESIDUAL:
        acc += tl.load(r_ptr + m * stride_rm + col, mask=mask, other=0.0).to(tl.float32)
    tl.store(y_ptr + m * stride_ym + col, acc.to(y_ptr.dtype.element_ty), mask=mask)


def sum_splits(partials: torch.Tensor, y: torch.Tensor) -> None:
    """y [M, N] (contiguous) = the sum of fp32 `partials` [SPLIT_K, M, N], cast: the second pass
    of a split-K product with no epilogue (the GEMM's too)."""
    split_k, m, n = partials.shape
    _sum_splits_kernel[(triton.cdiv(m * n, SUM_BLOCK),)](
        partials,
        y,
        y,
        y,
        y,
        m,
        n,
        1,
        n,
        0,
        0.0,
        SPLIT_K=split_k,
        BLOCK=SUM_BLOCK,
        num_warps=4,
        NORM=False,
        BIAS=False,
        GLU=False,
        RESIDUAL=False,
        PDL=False,
    )
