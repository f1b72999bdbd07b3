"""Microbenchmark kernels the calibration times: each stresses one unit of the GPU.

- `read_sum`: every program sums ITERS blocks of BLOCK contiguous elements and writes one
  partial (4 bytes per BLOCK * ITERS * 4 read: negligible); several tile shapes are tried and
  the fastest is the read roof, since no kernel we can write is the only bound on a roof.
- `fill`: every program stores a constant over ITERS blocks: the write roof.
- `copy`: load and store, for the copy roof beside torch's copy_.
- `dependent_rounds`: ROUNDS rounds of loads over all SMs, each round's addresses depending on
  the last round's values (the buffer holds zeros, so the address is unchanged but the
  dependency is real): time per round = one loaded DRAM round trip.
- `exp2_chains` / `fma_chains`: CHAINS independent dependent chains per thread of ITERS exp2
  (special-function unit) or FMA (FP32 pipes) operations, enough warps to fill every SM.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def read_sum(x_ptr, out_ptr, BLOCK: tl.constexpr, ITERS: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    base = pid * BLOCK * ITERS
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for i in range(ITERS):
        acc += tl.load(x_ptr + base + i * BLOCK + tl.arange(0, BLOCK))
    tl.store(out_ptr + pid, tl.sum(acc, 0))


@triton.jit
def fill(x_ptr, value, BLOCK: tl.constexpr, ITERS: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    base = pid * BLOCK * ITERS
    vals = tl.full((BLOCK,), value, dtype=tl.float32)
    for i in range(ITERS):
        tl.store(x_ptr + base + i * BLOCK + tl.arange(0, BLOCK), vals)


@triton.jit
def copy(src_ptr, dst_ptr, BLOCK: tl.constexpr, ITERS: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    base = pid * BLOCK * ITERS
    for i in range(ITERS):
        offs = base + i * BLOCK + tl.arange(0, BLOCK)
        tl.store(dst_ptr + offs, tl.load(src_ptr + offs))


@triton.jit
def dependent_rounds(x_ptr, out_ptr, stride, ROUNDS: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    dep = tl.zeros((BLOCK,), dtype=tl.int32)
    for r in range(ROUNDS):
        # Round r reads a region no earlier round touched; its address waits on the last value.
        dep = tl.load(x_ptr + r * stride + offs + dep)
    tl.store(out_ptr + offs, dep)


@triton.jit
def exp2_chains(x_ptr, out_ptr, ITERS: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs)
    for _ in range(ITERS):
        x = tl.math.exp2(-x)  # stays in (0, 1]: no overflow, no denormals
    tl.store(out_ptr + offs, x)


@triton.jit
def fma_chains(x_ptr, out_ptr, ITERS: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs)
    for _ in range(ITERS):
        x = x * 0.999 + 0.001
    tl.store(out_ptr + offs, x)
