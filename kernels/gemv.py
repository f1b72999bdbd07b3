"""GEMV for decode: y = x @ W^T with few tokens (M = 1..16), x [M, K], W [N, K] (nn.Linear layout).

At M <= 16 the product does 2*M FLOP per weight element read, far under any GPU's ridge point, so
time is bytes of W over HBM bandwidth. The design follows from that:

- each program owns BLOCK_N weight rows and one K range, reads each weight byte exactly once and
  uses it for all M tokens (no re-read of W per token row); the tokens' x values are tiny and come
  from L2;
- a weight tile [BLOCK_N, BLOCK_K] is contiguous along K, so loads are 16-byte vectors;
- M == 1 multiplies the tile by x broadcast over rows into an fp32 [BLOCK_N, BLOCK_K] accumulator
  and reduces over K once at the end; 1 < M <= 16 pads the tokens to 16 rows for tl.dot (the
  tensor cores have compute to spare here), accumulating [16, BLOCK_N] in fp32;
- split-K: when N / BLOCK_N programs would leave SMs idle, K is cut into SPLIT_K
  ranges (grid axis 1); each writes an fp32 partial [SPLIT_K, M, N] and a second small pass sums
  the partials and casts. The partials are M*N*4*SPLIT_K bytes, negligible next to W.

The launcher chooses BLOCK_N, BLOCK_K and SPLIT_K from N, K and the SM count (no autotuning, so
a call is graph-capturable and deterministic).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from roofbench.theory.plan import KernelLaunch, LaunchPlan

from ._util import check_float, is_interpreter, linear_reference, num_sms, output

TOKENS_PER_DOT = 16  # tl.dot needs at least 16 rows; 2..16 tokens are padded to this
SUM_BLOCK = 1024  # elements per program of the split-K sum


@triton.jit
def _gemv_kernel(
    x_ptr,
    w_ptr,
    y_ptr,
    M,
    N,
    K,
    stride_xm,
    stride_wn,
    stride_ys,
    stride_ym,
    K_SPLIT,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    EVEN_K: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    pid_m = tl.program_id(2)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    # Rows past N wrap to valid rows so the streaming loads need no row mask; the store drops them.
    rows = (offs_n % N).to(tl.int64)
    offs_k = tl.arange(0, BLOCK_K)
    k_lo = pid_s * K_SPLIT
    w_ptrs = w_ptr + rows[:, None] * stride_wn + (k_lo + offs_k)[None, :]

    if BLOCK_M == 1:
        x_ptrs = x_ptr + pid_m.to(tl.int64) * stride_xm + k_lo + offs_k
        acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
        for k in range(0, K_SPLIT, BLOCK_K):
            if EVEN_K:
                w = tl.load(w_ptrs)
                x = tl.load(x_ptrs)
            else:
                k_ok = k_lo + k + offs_k < K
                w = tl.load(w_ptrs, mask=k_ok[None, :], other=0.0)
                x = tl.load(x_ptrs, mask=k_ok, other=0.0)
            acc += w.to(tl.float32) * x.to(tl.float32)[None, :]
            w_ptrs += BLOCK_K
            x_ptrs += BLOCK_K
        y = tl.sum(acc, axis=1)[None, :]  # [1, BLOCK_N]
    else:
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        m_ok = offs_m < M
        x_ptrs = x_ptr + offs_m[:, None].to(tl.int64) * stride_xm + (k_lo + offs_k)[None, :]
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k in range(0, K_SPLIT, BLOCK_K):
            if EVEN_K:
                w = tl.load(w_ptrs)
                x = tl.load(x_ptrs, mask=m_ok[:, None], other=0.0)
            else:
                k_ok = k_lo + k + offs_k < K
                w = tl.load(w_ptrs, mask=k_ok[None, :], other=0.0)
                x = tl.load(x_ptrs, mask=m_ok[:, None] & k_ok[None, :], other=0.0)
            acc = tl.dot(x, tl.trans(w), acc)
            w_ptrs += BLOCK_K
            x_ptrs += BLOCK_K
        y = acc  # [BLOCK_M, BLOCK_N]

    out_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    y_ptrs = y_ptr + pid_s * stride_ys + out_m[:, None] * stride_ym + offs_n[None, :]
    mask = (out_m[:, None] < M) & (offs_n[None, :] < N)
    tl.store(y_ptrs, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _sum_splits_kernel(p_ptr, y_ptr, numel, SPLIT_K: tl.constexpr, BLOCK: tl.constexpr):
    """y[i] = sum_s p[s, i], cast to y's dtype (the second pass of split-K)."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for s in tl.static_range(SPLIT_K):
        acc += tl.load(p_ptr + s * numel + offs, mask=mask, other=0.0)
    tl.store(y_ptr + offs, acc.to(y_ptr.dtype.element_ty), mask=mask)


def plan(m: int, n: int, k: int, element_size: int, sms: int) -> dict:
    """Launch parameters for an [m, k] x [n, k]^T product.

    Measured on an H200 (4096 <-> 14336, bf16, graph replay):
    - M = 1: tiles of 4 rows x 512 elements (two 16-byte loads per thread per K step, 4 warps)
      ran at 1.02-1.07x cuBLAS for both shapes; 8- and 16-row tiles were up to 10% slower.
    - M = 2..16: 32-row tiles; with >= 3 programs per SM (N = 14336) a K step of 128 elements
      was best (0.97-1.06x), with ~2 per SM (N = 8192) 256 (0.97-0.99x; 512 gave 0.92-0.94x),
      with ~1 program per SM (N = 4096) only 512-element steps kept enough bytes in flight
      (1.02-1.14x; 128 gave 0.6-0.76x).
    - Split-K cost 2-3 us for its second pass and lost wherever the grid already had one program
      per SM, so K is split only when the grid would leave half the SMs idle, and each split keeps
      >= 4 K steps.
    """
    vec = 16 // element_size  # elements per 16-byte load
    if m == 1:
        block_n, block_k = 4, 64 * vec
    else:
        block_n = 32
        per_sm = triton.cdiv(n, block_n) / sms
        block_k = (16 if per_sm >= 3 else 32 if per_sm >= 1.5 else 64) * vec
    programs = triton.cdiv(n, block_n) * triton.cdiv(m, TOKENS_PER_DOT)
    steps = triton.cdiv(k, block_k)
    split_k = 1
    while 2 * programs * split_k < sms and steps // (2 * split_k) >= 4:
        split_k *= 2
    return {
        "BLOCK_N": block_n,
        "BLOCK_K": block_k,
        "SPLIT_K": split_k,
        "num_warps": 4,
        "num_stages": 3,
    }


@dataclass(frozen=True)
class Geometry:
    """What `gemv` launches for one shape: the plan's parameters made concrete."""

    params: dict
    block_m: int
    block_n: int
    block_k: int
    split_k: int
    k_split: int  # K elements per split, a whole number of BLOCK_K steps
    grid: tuple[int, int, int]


def geometry(m: int, n: int, k: int, element_size: int, sms: int, config=None) -> Geometry:
    """`plan`'s parameters (with `config`'s overrides) turned into tiles, splits and the grid."""
    p = plan(m, n, k, element_size, sms)
    if is_interpreter():  # small tiles: the interpreter's cost grows with the tile, not the grid
        p.update(BLOCK_N=16, BLOCK_K=32, num_stages=1)
    p.update(config or {})
    block_m = 1 if m == 1 else TOKENS_PER_DOT
    block_n = p["BLOCK_N"] if m == 1 else max(p["BLOCK_N"], 16)  # tl.dot's minimum
    block_k = p["BLOCK_K"] if m == 1 else max(p["BLOCK_K"], 16)
    k_split = triton.cdiv(triton.cdiv(k, p["SPLIT_K"]), block_k) * block_k
    split_k = triton.cdiv(k, k_split)  # no empty splits
    grid = (triton.cdiv(n, block_n), split_k, triton.cdiv(m, block_m))
    return Geometry(p, block_m, block_n, block_k, split_k, k_split, grid)


def launch_plan(m: int, n: int, k: int, element_size: int, sms: int) -> LaunchPlan:
    """The kernels `gemv` launches for [m, k] x [n, k]^T: the GEMV kernel, and with split-K the
    pass that sums the fp32 partials (split_k * m * n * 4 bytes written, then read). A GEMV
    program keeps the weight and activation tiles of every pipeline stage in flight:
    (BLOCK_N + BLOCK_M) * BLOCK_K * element_size * num_stages."""
    g = geometry(m, n, k, element_size, sms)
    tile = (g.block_m, g.block_n, g.block_k)
    inflight = float((g.block_n + g.block_m) * g.block_k * element_size * g.params["num_stages"])
    if g.split_k == 1:
        return LaunchPlan((KernelLaunch("gemv", g.grid, tile, inflight_bytes=inflight),))
    partial = 4.0 * g.split_k * m * n
    return LaunchPlan(
        (
            KernelLaunch("gemv", g.grid, tile, g.split_k, partial, inflight),
            KernelLaunch("sum_splits", (triton.cdiv(m * n, SUM_BLOCK),), (SUM_BLOCK,), 1, partial),
        )
    )


def gemv(
    x: torch.Tensor,
    w: torch.Tensor,
    out: torch.Tensor | None = None,
    config: dict | None = None,
) -> torch.Tensor:
    """y = x @ W^T with x [M, K] (M small), W [N, K]; fp32 accumulation, y [M, N] in x's dtype.

    `out`: optional contiguous [M, N] result buffer. `config`: optional overrides of `plan`'s
    launch parameters (BLOCK_N, BLOCK_K, SPLIT_K, num_warps, num_stages), for tuning and tests.
    """
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[1]:
        raise ValueError(
            f"expected x [M, K] and w [N, K], got {tuple(x.shape)} and {tuple(w.shape)}"
        )
    dtype = check_float(x, w)
    if x.stride(1) != 1 or w.stride(1) != 1:
        raise ValueError("x and w must be contiguous along K")
    m, k = x.shape
    n = w.shape[0]
    y = output(out, (m, n), dtype, x.device)
    if m == 0 or n == 0:
        return y
    if k == 0:
        return y.zero_()

    g = geometry(m, n, k, x.element_size(), num_sms(x.device), config)
    p, block_m, block_n, block_k = g.params, g.block_m, g.block_n, g.block_k
    split_k, k_split, grid = g.split_k, g.k_split, g.grid
    even_k = k_split * split_k == k
    if split_k == 1:
        dest, stride_s = y, 0
    else:
        dest = torch.empty((split_k, m, n), dtype=torch.float32, device=x.device)
        stride_s = dest.stride(0)
    _gemv_kernel[grid](
        x,
        w,
        dest,
        m,
        n,
        k,
        x.stride(0),
        w.stride(0),
        stride_s,
        n,
        k_split,
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_K=block_k,
        EVEN_K=even_k,
        num_warps=p["num_warps"],
        num_stages=p["num_stages"],
    )
    if split_k > 1:
        _sum_splits_kernel[(triton.cdiv(m * n, SUM_BLOCK),)](
            dest, y, m * n, SPLIT_K=split_k, BLOCK=SUM_BLOCK, num_warps=4
        )
    return y


gemv_reference = linear_reference
