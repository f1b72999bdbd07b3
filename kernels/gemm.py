"""GEMM for the prefill projections: C = A @ W^T.

A is [M, K] (activations, row-major), W is [N, K] (weights in nn.Linear's layout, so each weight
row is contiguous in K), C is [M, N] in the input dtype. Each output tile of BLOCK_M x BLOCK_N
walks K in BLOCK_K steps, accumulating in fp32 with tl.dot (tensor cores; for fp32 inputs
Triton's default tf32). W is read as the [BLOCK_K, BLOCK_N] slab of W^T: no transposed copy is
ever made.

Three kernels:

- `_gemm_tma_kernel` (fp16/bf16 on Hopper and newer): A, W and C go through tensor descriptors,
  so tiles move by the TMA copy engine (zero-filled past the edges, so no masks), and the grid
  can be persistent: one program per SM loops over output tiles, so the epilogue of one tile
  overlaps the loads of the next. For few rows (small M) it can split K (SPLIT_K programs per
  tile write fp32 partials that a second pass sums), so that the weight stream still has
  enough programs to keep HBM busy.
- `gemm_streamk`'s kernel (fp16/bf16, descriptors): one tile per program, or several programs
  sharing one tile's K steps and the last of them summing their partials in the same launch; A
  and W may be swapped so the weight rows fill the MMA's 64-row side. Most candidates for
  M <= 256 run on it (`gemm_configs`).
- `_gemm_kernel`: plain pointer loads; for fp32, for strides a descriptor cannot take, under the
  CPU interpreter and on older GPUs or Tritons.

Tiles are visited in groups of GROUP_M rows of tiles ("grouped ordering"): programs that run at
the same time share A row-panels and W column-panels, so a panel is fetched from HBM once and then
served from L2. On the GPU the launch configuration is timed per (M, N, K) at first use (a few
candidates per shape, `gemm_configs.candidates`); under the CPU interpreter a single small
configuration is used.
"""

from __future__ import annotations

import dataclasses
import functools

import torch
import triton
import triton.language as tl

from roofbench.theory.plan import KernelLaunch, LaunchPlan

from . import gemm_streamk
from ._util import (
    Rotation,
    TensorDescriptor,
    Tuner,
    check_float,
    has_tma,
    is_interpreter,
    l2_bytes,
    linear_reference,
    num_sms,
    output,
    rotation_sets,
    tma_compatible,
)
from .gemm_configs import as_config, candidates
from .gemm_streamk import tile_coords
from .gemv_epilogue import sum_splits
from .gemv_plan import SUM_BLOCK


def _configs() -> list[triton.Config]:
    if is_interpreter():
        return [triton.Config({"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16, "GROUP_M": 2})]

    def cfg(bm, bn, bk, stages, warps, group=8):
        return triton.Config(
            {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": group},
            num_stages=stages,
            num_warps=warps,
        )

    # The pointer kernel serves fp32 and odd strides: a short list, large tiles first.
    return [
        cfg(128, 256, 64, 3, 8),
        cfg(256, 128, 64, 3, 8),
        cfg(128, 128, 64, 4, 8),
        cfg(128, 128, 64, 4, 4),
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


@triton.jit
def _gemm_tma_kernel(
    a_desc,
    w_desc,
    c_desc,
    p_ptr,
    M,
    N,
    K,
    split_k,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
    PARTIAL: tl.constexpr,
    SUBTILE: tl.constexpr,
):
    # Work item = (K split, output tile); programs stride over the work items (with a grid of
    # one program per item this is the classic one-tile-per-program launch).
    start = tl.program_id(0)
    step = tl.num_programs(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_tiles = num_pid_m * num_pid_n
    k_steps = tl.cdiv(tl.cdiv(K, BLOCK_K), split_k)  # per split; TMA zero-fills past K
    # The epilogue keeps its own counter, so the flattened loop's prologue and epilogue do not
    # share a value.
    work_c = start - step
    for work in tl.range(start, num_tiles * split_k, step, flatten=True):
        pid_m, pid_n = tile_coords(work % num_tiles, num_pid_m, num_pid_n, GROUP_M)
        off_m = pid_m * BLOCK_M
        off_n = pid_n * BLOCK_N
        k0 = (work // num_tiles) * k_steps * BLOCK_K
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for kk in range(k_steps):
            off_k = k0 + kk * BLOCK_K
            a = a_desc.load([off_m, off_k])
            w = w_desc.load([off_n, off_k])
            acc = tl.dot(a, w.T, acc)

        work_c += step
        pid_m, pid_n = tile_coords(work_c % num_tiles, num_pid_m, num_pid_n, GROUP_M)
        off_m = pid_m * BLOCK_M
        off_n = pid_n * BLOCK_N
        if not PARTIAL:
            if SUBTILE:  # two half-width stores: half the epilogue's shared memory
                halves = tl.permute(tl.reshape(acc, (BLOCK_M, 2, BLOCK_N // 2)), (0, 2, 1))
                acc0, acc1 = tl.split(halves)
                c_desc.store([off_m, off_n], acc0.to(c_desc.dtype))
                c_desc.store([off_m, off_n + BLOCK_N // 2], acc1.to(c_desc.dtype))
            else:
                c_desc.store([off_m, off_n], acc.to(c_desc.dtype))
        else:  # fp32 partial of this K split: p[split, M, N]
            rows = off_m + tl.arange(0, BLOCK_M)
            cols = off_n + tl.arange(0, BLOCK_N)
            base = p_ptr + (work_c // num_tiles).to(tl.int64) * M * N
            ptrs = base + rows[:, None].to(tl.int64) * N + cols[None, :]
            tl.store(ptrs, acc, mask=(rows[:, None] < M) & (cols[None, :] < N))


_TUNER = Tuner()


def _launch_tma(a: torch.Tensor, w: torch.Tensor, c: torch.Tensor, cfg: dict) -> None:
    if cfg.get("STREAM_K"):
        sms = cfg.get("PROGRAMS") or num_sms(a.device)
        gemm_streamk.launch(a, w, c, cfg, sms)
        return
    m, k = a.shape
    n = w.shape[0]
    bm, bn, bk, split = cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["BLOCK_K"], cfg["SPLIT_K"]
    store_n = bn // 2 if cfg["SUBTILE"] else bn
    a_desc = TensorDescriptor(a, [m, k], [a.stride(0), 1], [bm, bk])
    w_desc = TensorDescriptor(w, [n, k], [w.stride(0), 1], [bn, bk])
    c_desc = TensorDescriptor(c, [m, n], [c.stride(0), 1], [bm, store_n])
    programs = _tma_programs(m, n, cfg, num_sms(a.device))
    p = torch.empty((split, m, n), dtype=torch.float32, device=a.device) if split > 1 else c
    _gemm_tma_kernel[(programs,)](
        a_desc,
        w_desc,
        c_desc,
        p,
        m,
        n,
        k,
        split,
        BLOCK_M=bm,
        BLOCK_N=bn,
        BLOCK_K=bk,
        GROUP_M=cfg["GROUP_M"],
        PARTIAL=split > 1,
        SUBTILE=cfg["SUBTILE"],
        num_warps=cfg["num_warps"],
        num_stages=cfg["num_stages"],
    )
    if split > 1:
        sum_splits(p, c)


def _rotated_launch(a: torch.Tensor, w: torch.Tensor, c: torch.Tensor):
    """cfg -> a Rotation of the launch over copies of (a, w, c) holding twice L2: the tuner then
    ranks the candidates as the sweep times them (graph replay over rotating inputs). Under a
    cold-L2 flush instead, a two-kernel split-K read 1.2-2.4 us slower than in the sweep on an
    H200 (M = 32-256, N = 1024), as the flush wrote its partials back, and the tuner kept
    candidates the sweep then measured 2-6% behind cuBLAS."""
    sets = rotation_sets((a, w, c), 2 * l2_bytes(a.device))
    return lambda cfg: Rotation([functools.partial(_launch_tma, *s, cfg) for s in sets])


def _tma_programs(m: int, n: int, cfg: dict, sms: int) -> int:
    work = triton.cdiv(m, cfg["BLOCK_M"]) * triton.cdiv(n, cfg["BLOCK_N"]) * cfg["SPLIT_K"]
    return min(work, sms) if cfg["PERSISTENT"] else work


def launch_plan(m: int, n: int, k: int, dtype: torch.dtype, device: torch.device) -> LaunchPlan:
    """The kernels `gemm` launches for contiguous [m, k] x [n, k]^T on `device`.

    Descriptor path: the configuration the tuner picked for this shape (the first candidate
    before it has run), its persistent or one-program-per-tile grid, and with split-K the sum
    of the fp32 partials (split * m * n * 4 bytes; in `gemm_streamk`'s kernel, the partial
    tiles it writes and reads back, `partial_bytes`). Pointer path: one kernel whose tile
    triton.autotune picks, so the grid is not declared.
    """
    if dtype not in (torch.float16, torch.bfloat16) or not has_tma(device):
        return LaunchPlan((KernelLaunch("gemm"),), notes=("tile chosen by triton.autotune",))
    sms = num_sms(device)
    key = (m, n, k, dtype, k, k)  # gemm's tuner key for contiguous operands
    cfg = _TUNER.cache.get(key) or candidates(m, n, k, sms)[0]
    tile = (cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["BLOCK_K"])
    if cfg["STREAM_K"]:
        programs = gemm_streamk.programs_for(m, n, k, cfg, sms)
        partial = gemm_streamk.partial_bytes(m, n, k, cfg, programs)
        split = gemm_streamk.per_tile(k, cfg)  # s programs per tile, or 0 for stream-K proper
        schedule = "" if split else "stream-k"
        launch = KernelLaunch("gemm_streamk", (programs,), tile, max(1, split), partial)
        return LaunchPlan((dataclasses.replace(launch, schedule=schedule),))
    split = cfg["SPLIT_K"]
    grid = (_tma_programs(m, n, cfg, sms),)
    if split == 1:
        return LaunchPlan((KernelLaunch("gemm_tma", grid, tile),))
    partial = 4.0 * split * m * n
    return LaunchPlan(
        (
            KernelLaunch("gemm_tma", grid, tile, split, partial),
            KernelLaunch("sum_splits", (triton.cdiv(m * n, SUM_BLOCK),), (SUM_BLOCK,), 1, partial),
        )
    )


def _use_tma(a, w, c, config: dict | None) -> bool:
    if a.dtype not in (torch.float16, torch.bfloat16) or TensorDescriptor is None:
        return False
    if not tma_compatible(a, w, c):
        return False
    if config is not None and "TMA" in config:
        return bool(config["TMA"])
    return has_tma(a.device)


def gemm(
    a: torch.Tensor,
    w: torch.Tensor,
    out: torch.Tensor | None = None,
    config: dict | None = None,
) -> torch.Tensor:
    """C = A @ W^T with A [M, K], W [N, K]; fp32 accumulation, C in the input dtype.

    `out`, if given, is a contiguous [M, N] tensor of the input dtype that receives C.
    `config`: optional launch parameters for the descriptor kernel (keys as in `candidates`, plus
    "TMA": False for the pointer kernel or True to ask for the descriptor kernel where it would
    not be the default, as under the interpreter); for tuning and tests.
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

    if _use_tma(a, w, c, config):
        overrides = {key: v for key, v in (config or {}).items() if key != "TMA"}
        if is_interpreter():  # one small tile; the interpreter's cost grows with the tile
            chosen = {**as_config(16, 16, 16, 1, 4, False, True), **overrides}
        elif overrides:
            chosen = {**candidates(m, n, k, num_sms(a.device))[0], **overrides}
        else:
            key = (m, n, k, dtype, a.stride(0), w.stride(0))
            chosen = _TUNER.pick(
                key,
                lambda: candidates(m, n, k, num_sms(a.device)),
                lambda cfg: _launch_tma(a, w, c, cfg),
                lambda: _rotated_launch(a, w, c),
            )
        _launch_tma(a, w, c, chosen)
        return c

    def grid(meta):
        return (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)

    _gemm_kernel[grid](a, w, c, m, n, k, *a.stride(), *w.stride(), *c.stride())
    return c


gemm_reference = linear_reference
