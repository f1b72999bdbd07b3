"""GEMM for the prefill projections: C = A @ W^T.

A is [M, K] (activations, row-major), W is [N, K] (weights in nn.Linear's layout, so each weight
row is contiguous in K), C is [M, N] in the input dtype. Each program computes one BLOCK_M x
BLOCK_N tile of C, walking K in BLOCK_K steps and accumulating in fp32 with tl.dot (tensor cores;
for fp32 inputs Triton's default tf32). W is read as the [BLOCK_K, BLOCK_N] slab of W^T: no
transposed copy is ever made.

Tiles are visited in groups of GROUP_M rows of tiles ("grouped ordering"): programs that run at
the same time share A row-panels and W column-panels, so a panel is fetched from HBM once and then
served from L2. On the GPU `triton.autotune` picks the tile shape per (M, N, K); under the CPU
interpreter a single small configuration is used.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._util import check_float, is_interpreter, output


def _configs() -> list[triton.Config]:
    if is_interpreter():
        return [triton.Config({"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16, "GROUP_M": 2})]

    def cfg(bm, bn, bk, stages, warps, group=8):
        return triton.Config(
            {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": group},
            num_stages=stages,
            num_warps=warps,
        )

    # Hopper: 128-row tiles feed a 4-warp group's wgmma; 128x256 with 8 warps is the usual best
    # for large bf16 problems, the smaller tiles cover small M or N (more programs than SMs).
    return [
        cfg(128, 256, 64, 3, 8),
        cfg(128, 256, 64, 4, 8),
        cfg(256, 128, 64, 3, 8),
        cfg(256, 128, 64, 4, 8),
        cfg(128, 128, 128, 3, 8),
        cfg(128, 256, 128, 2, 8),
        cfg(128, 128, 64, 4, 8),
        cfg(128, 128, 64, 4, 4),
        cfg(128, 128, 64, 3, 4),
        cfg(64, 256, 64, 4, 4),
        cfg(128, 64, 64, 4, 4),
        cfg(64, 128, 64, 4, 4),
        cfg(64, 64, 64, 4, 4),
    ]


@triton.autotune(configs=_configs(), key=["M", "N", "K"])
@triton.heuristics({"EVEN_K": lambda args: args["K"] % args["BLOCK_K"] == 0})
@triton.jit
def _gemm_kernel(
    a_ptr,
    w_ptr,
    c_ptr,
    M,
    N,
    K,
    stride_am,
    stride_ak,
    stride_wn,
    stride_wk,
    stride_cm,
    stride_cn,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
    EVEN_K: tl.constexpr,
):
    # Grouped ordering: GROUP_M consecutive tile rows are swept column by column.
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_pid_in_group = GROUP_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m

    # Rows past M (columns past N) wrap around to valid ones, so the loads in the K loop need no
    # row mask; the store below drops them.
    offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)) % M
    offs_n = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)) % N
    offs_m = tl.max_contiguous(tl.multiple_of(offs_m, BLOCK_M), BLOCK_M)
    offs_n = tl.max_contiguous(tl.multiple_of(offs_n, BLOCK_N), BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + offs_m[:, None] * stride_am + offs_k[None, :] * stride_ak
    w_ptrs = w_ptr + offs_n[None, :] * stride_wn + offs_k[:, None] * stride_wk  # W^T slab

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kb in range(0, tl.cdiv(K, BLOCK_K)):
        if EVEN_K:
            a = tl.load(a_ptrs)
            w = tl.load(w_ptrs)
        else:
            k_left = K - kb * BLOCK_K
            a = tl.load(a_ptrs, mask=offs_k[None, :] < k_left, other=0.0)
            w = tl.load(w_ptrs, mask=offs_k[:, None] < k_left, other=0.0)
        acc = tl.dot(a, w, acc)
        a_ptrs += BLOCK_K * stride_ak
        w_ptrs += BLOCK_K * stride_wk

    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    c_ptrs = c_ptr + rows[:, None] * stride_cm + cols[None, :] * stride_cn
    mask = (rows[:, None] < M) & (cols[None, :] < N)
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=mask)


def gemm(a: torch.Tensor, w: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """C = A @ W^T with A [M, K], W [N, K]; fp32 accumulation, C in the input dtype.

    `out`, if given, is a contiguous [M, N] tensor of the input dtype that receives C.
    """
    if a.ndim != 2 or w.ndim != 2 or a.shape[1] != w.shape[1]:
        raise ValueError(
            f"expected a [M, K] and w [N, K], got {tuple(a.shape)} and {tuple(w.shape)}"
        )
    dtype = check_float(a, w)
    m, k = a.shape
    n = w.shape[0]
    c = output(out, (m, n), dtype, a.device)
    if m == 0 or n == 0:
        return c
    if k == 0:
        return c.zero_()

    def grid(meta):
        return (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)

    _gemm_kernel[grid](a, w, c, m, n, k, *a.stride(), *w.stride(), *c.stride())
    return c


def gemm_reference(
    a: torch.Tensor, w: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """torch's nn.Linear product (cuBLAS on the GPU), the baseline for the Triton GEMM."""
    c = torch.nn.functional.linear(a, w)
    if out is None:
        return c
    return out.copy_(c)
