"""The GEMV's launch plan: tiles, splits and grid for a shape (no autotuning, so that a call is
graph-capturable and deterministic), and the kernels it launches as `theory.plan` declares them.
The kernels themselves are in `kernels.gemv`."""

from __future__ import annotations

from dataclasses import dataclass

import triton

from roofbench.theory.plan import KernelLaunch, LaunchPlan

from ._util import is_interpreter
from .gemv_pack import ROW_ALIGN

TOKENS_PER_DOT = 16  # tl.dot needs at least 16 rows; 2..16 tokens are padded to this
SUM_BLOCK = 1024  # elements per program of the split-K sum


def plan(m: int, n: int, k: int, element_size: int, sms: int, packed: bool = False) -> dict:
    """Launch parameters for an [m, k] x [n, k]^T product (`packed`: W in
    `kernels.gemv_pack`'s layout).

    Measured on an H200 (4096 <-> 14336, bf16, graph replay, back to back over weight copies of
    > 2 L2s, as a decode step runs them):
    - M = 1: tiles of 8 rows x 512 elements (4 warps, 3 stages) were within 4.8% of the
      fastest of 72 tilings at each of 4096x4096, 6144x4096, 28672x4096, 4096x14336 and
      128256x4096; 4-row tiles were within 6% but at 6144x4096 16% slower (1536 programs, 11.6
      per SM). Where 8-row tiles would leave an SM fewer than two programs (N = 1024: 128
      programs) 4-row tiles stay: 8 rows measured 6.99 us there against 6.37 us for 4. A
      read-only kernel ran 2-23% faster reading each program's rows whole than in these tiles'
      1 KiB pieces of 8 rows (32 MB to 1 GB), but a GEMV program streaming its 8 rows one after
      another (8 KiB steps, a sum reduced per row) ran 1.2-1.3x the tiles' time at
      4096-128256 x 4096 (1.4x with 16 rows, 1.1x with 4).
    - M = 1 on packed weights (4-row tiles of 512): 4-row programs where they all fit in one
      round of 8 per SM (N = 4096: 1024 programs; 10.3 us at 4096x4096 against 11.5 for 8
      rows and 11.9 unpacked), else 8 rows (6144x4096: 13.6 us against 15.8 for 4 rows and
      14.1 unpacked; 28672x4096: 56.7 against 57.7 and 58.2).
    - M = 2..16 (tl.dot): 64-row tiles where they still give half the SMs a program (K steps
      of 256), else 32 rows (K steps of 512); 4 stages where the grid is one program per SM or
      fewer (each program brings all the bytes in flight its SM has), else 3. Against the
      earlier 32-row, 3-stage tiles: 4096x4096 11.2-11.4 us against 13.9-14.3, 4096x14336
      31.0-31.2 against 34.5-35.7, 6144x4096 16.2-16.5 against 17.8-18.0, 28672x4096 58.5-59.3
      against 62.5-63.8 (each within 3% of the fastest of 108 tilings, 54 of them on packed
      weights, at 4 and 16 rows). (Timed one call at a time after a flush, as the kernel sweep
      times them, the two plans measured within 3% of each other.)
    - M = 2..8 on the FMA units instead (an fp32 [M, 4, 512] product per program, as at one
      row) measured 0.94-1.3x the tl.dot path's time at 2 rows, 1.4-2.0x at 4 and 2.6-5x at 8
      (packed Llama 3 8B shapes): the products outrun the FMA units from 4 rows; not taken.
    - Split-K cost 2-3 us for its second pass and lost wherever the grid already had one program
      per SM, so K is split only when the grid would leave half the SMs idle, and each split keeps
      >= 4 K steps.
    """
    vec = 16 // element_size  # elements per 16-byte load
    stages = 3
    if m == 1:
        block_k = 64 * vec
        if packed:
            block_n = 4 if triton.cdiv(n, 4) <= 8 * sms else 8
        else:  # 8-row tiles while they still give every SM two programs
            block_n = 8 if triton.cdiv(n, 8) >= 2 * sms else 4
    else:
        wide = triton.cdiv(n, 64) >= sms / 2
        block_n, block_k = (64, 32 * vec) if wide else (32, 64 * vec)
        if triton.cdiv(n, block_n) <= sms:
            stages = 4
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
        "num_stages": stages,
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


def geometry(
    m: int, n: int, k: int, element_size: int, sms: int, config=None, glu: bool = False, pack_k=0
) -> Geometry:
    """`plan`'s parameters (with `config`'s overrides) turned into tiles, splits and the grid.
    With `glu` a program's BLOCK_N weight rows are BLOCK_N / 2 gate|up pairs. `pack_k`: W
    packed in K tiles of pack_k (`kernels.gemv_pack`; 0 unpacked), which the K step must divide
    (it is cut to pack_k where the plan's is longer), the tile rows dividing the packing's row
    padding."""
    p = plan(m, n, k, element_size, sms, bool(pack_k))
    if is_interpreter():  # small tiles: the interpreter's cost grows with the tile, not the grid
        p.update(BLOCK_N=16, BLOCK_K=32, num_stages=1)
    p.update(config or {})
    if pack_k:
        p["BLOCK_K"] = min(p["BLOCK_K"], pack_k)
        if pack_k % p["BLOCK_K"]:
            raise ValueError(f"a K step of {p['BLOCK_K']} does not divide the packing's {pack_k}")
        if ROW_ALIGN % p["BLOCK_N"]:  # its programs would read rows past the padding
            raise ValueError(f"BLOCK_N {p['BLOCK_N']} does not divide the packing's {ROW_ALIGN}")
    block_m = 1 if m == 1 else TOKENS_PER_DOT
    block_n = p["BLOCK_N"] if m == 1 else max(p["BLOCK_N"], 16)  # tl.dot's minimum
    block_k = p["BLOCK_K"] if m == 1 else max(p["BLOCK_K"], 16)
    k_split = triton.cdiv(triton.cdiv(k, p["SPLIT_K"]), block_k) * block_k
    split_k = triton.cdiv(k, k_split)  # no empty splits
    programs_n = triton.cdiv(n // 2, block_n // 2) if glu else triton.cdiv(n, block_n)
    grid = (programs_n, split_k, triton.cdiv(m, block_m))
    return Geometry(p, block_m, block_n, block_k, split_k, k_split, grid)


def launch_plan(
    m: int, n: int, k: int, element_size: int, sms: int, glu: bool = False, pack_k: int = 0
) -> LaunchPlan:
    """The kernels `gemv` launches for [m, k] x [n, k]^T: the GEMV kernel, and with split-K the
    pass that sums the fp32 partials (split_k * m * n * 4 bytes written, then read) and runs the
    epilogue; `pack_k`: W packed in K tiles of pack_k (`kernels.gemv_pack`), 0 unpacked. The
    bytes a GEMV program keeps in flight, as Triton compiles it for sm_90 (checked
    against the compiled kernel by tests/kernels/test_inflight.py): one row loads its tiles into
    registers, one K step at a time, (BLOCK_N + 1) * BLOCK_K * element_size; the tl.dot path
    copies them asynchronously into a ring of num_stages - 1 shared-memory buffers,
    (BLOCK_N + BLOCK_M) * BLOCK_K * element_size * (num_stages - 1)."""
    g = geometry(m, n, k, element_size, sms, glu=glu, pack_k=pack_k)
    tile = (g.block_m, g.block_n, g.block_k)
    steps = 1 if g.block_m == 1 else max(1, g.params["num_stages"] - 1)
    inflight = float((g.block_n + g.block_m) * g.block_k * element_size * steps)
    if g.split_k == 1:
        return LaunchPlan((KernelLaunch("gemv", g.grid, tile, inflight_bytes=inflight),))
    partial = 4.0 * g.split_k * m * n
    outputs = m * (n // 2 if glu else n)
    return LaunchPlan(
        (
            KernelLaunch("gemv", g.grid, tile, g.split_k, partial, inflight),
            KernelLaunch(
                "sum_splits", (triton.cdiv(outputs, SUM_BLOCK),), (SUM_BLOCK,), 1, partial
            ),
        )
    )
