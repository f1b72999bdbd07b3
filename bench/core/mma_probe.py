"""The kernel of the mma.sync probe: bf16 matrix products whose tensor cores are driven by the
warp-level mma.sync (Ampere's MMA) that FlashAttention 2 and cuDNN's sm80 kernels issue on
Hopper, not by Hopper's warpgroup wgmma.

`mma_loop`: every program loads one BLOCK_M x BLOCK_K tile of A and one BLOCK_K x BLOCK_N tile
of B once, then accumulates their product ITERS times in fp32 and stores the sum of its
accumulator (4 bytes). The operands stay in registers, so the loop is nothing but MMA
instructions (64 HMMA.16816 and a branch per iteration at 64x128x32 on 2 warps, in the SASS
of sm_90): the tensor cores' rate, with no memory traffic.

Triton lowers `tl.dot` to wgmma (its MMA v3) on sm_90 only for a dot of 4 warps or a multiple
(its AccelerateMatmul pass: `supportMMA(op, 3)` wants numWarps % 4 == 0, for wgmma is issued
by a warpgroup of 4 warps), else to mma.sync (MMA v2). Each of SYNC_CONFIGS runs 1 or 2
warps: no warpgroup, so no wgmma, in any Triton; WGMMA_CONFIG is the same loop on 4 warps,
which the tests lower to wgmma to show the difference is the warps. The probe refuses a
configuration whose compiled PTX is not mma.sync (`ptx_mma`).
"""

from __future__ import annotations

import re

import triton
import triton.language as tl

from roofbench.theory import ops

# (BLOCK_M, BLOCK_N, BLOCK_K, warps): 64x64 output per warp (128 fp32 accumulators a thread,
# 190-225 registers in all, none spilled), so 8-10 warps share an SM: two or more for each of
# its four tensor cores.
SYNC_CONFIGS = ((64, 64, 32, 1), (64, 128, 32, 2), (128, 64, 32, 2), (64, 128, 64, 2))
WGMMA_CONFIG = (128, 128, 32, 4)
# Programs per SM: a multiple of every count of resident programs from 1 to 6, 8, 10 and 12,
# so the last wave is as full as the others.
PROGRAMS_PER_SM = 120
PROGRAM_FLOPS = 2**26  # each program's work: ~2 ms for the whole grid at ~500 TFLOP/s
NVIDIA_MMA = re.compile(r"nvidia_mma<\{versionMajor = (\d+)")


@triton.jit
def mma_loop(
    a_ptr,
    b_ptr,
    out_ptr,
    ITERS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    rm = tl.arange(0, BLOCK_M)
    rn = tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    a = tl.load(a_ptr + rm[:, None] * BLOCK_K + rk[None, :])
    b = tl.load(b_ptr + rk[:, None] * BLOCK_N + rn[None, :])
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for _ in range(ITERS):
        acc = tl.dot(a, b, acc)
    tl.store(out_ptr + tl.program_id(0), tl.sum(tl.sum(acc, 1), 0))


def _product_flops(config: tuple[int, int, int, int]) -> float:
    """One tile product's FLOPs: `theory.ops.gemm` of BLOCK_M x BLOCK_N x BLOCK_K."""
    bm, bn, bk, _ = config
    return ops.gemm(bm, bn, bk).flops


def iters(config: tuple[int, int, int, int]) -> int:
    """Products per program: PROGRAM_FLOPS / one product's FLOPs."""
    return max(1, int(PROGRAM_FLOPS // _product_flops(config)))


def flops(config: tuple[int, int, int, int], programs: int) -> float:
    """FLOPs of one launch: one product's, ITERS per program."""
    return _product_flops(config) * iters(config) * programs


def label(config: tuple[int, int, int, int]) -> str:
    bm, bn, bk, warps = config
    return f"mma_loop {bm}x{bn}x{bk} w{warps}"


def constexprs(config: tuple[int, int, int, int]) -> dict[str, int]:
    """The kernel's compile-time arguments for `config`."""
    bm, bn, bk, _ = config
    return {"ITERS": iters(config), "BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}


def launch(config: tuple[int, int, int, int], a, b, out):
    """One launch of `mma_loop` over out's programs (a and b hold at least one tile each);
    returns what Triton returns: the compiled kernel (None under the interpreter)."""
    grid = (out.numel(),)
    return mma_loop[grid](a, b, out, **constexprs(config), num_warps=config[3])


def ttgir_mma_versions(ttgir: str) -> set[int]:
    """The versionMajor of every nvidia_mma encoding in a TTGIR text (2: mma.sync, 3: wgmma)."""
    return {int(v) for v in NVIDIA_MMA.findall(ttgir)}


def ptx_mma(ptx: str) -> str:
    """The matrix instructions a PTX text issues: "wgmma" (any wgmma.mma_async), "sync"
    (mma.sync and no wgmma), "" (neither)."""
    if "wgmma.mma_async" in ptx:
        return "wgmma"
    return "sync" if "mma.sync" in ptx else ""
