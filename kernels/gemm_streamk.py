"""Stream-K GEMM: C = A @ W^T with the work cut evenly over the SMs, K steps included, or
over a few programs per tile (an in-kernel split-K).

A one-tile-per-program (or tile-persistent) GEMM runs in waves of whole tiles: at small M a
Llama 3 8B projection has 32-224 tiles of 64 x 128 for 132 SMs (0.24-1.7 waves, so a quarter to
three quarters of the SMs sit out the last wave), and split-K fixes that only with a second
kernel that sums fp32 partials (cuBLAS's `splitKreduce_kernel`, 1.4-4.4 us on an H200). Here the
iteration space, tiles x K steps (BLOCK_K each), is flattened and program p of P takes the
iterations [p * T // P, (p + 1) * T // P) (T = tiles x steps): every program streams the same
number of weight bytes, to within one K step, whatever the tile count (Osama et al., "Stream-K:
Work-centric Parallel Decomposition for Dense Matrix-Matrix Multiplication on the GPU", 2023).

A program's range crosses tile boundaries, so it works in segments, one per tile it touches.
A segment that covers a whole tile stores C. A tile split between programs is finished in the
same launch by whichever of them arrives last, with no program ever waiting on another (so
nothing depends on which programs are resident at once):
- each writes its fp32 partial to a workspace slot, then a CTA barrier (all its threads' stores
  issued) and one acquire-release atomic increment of the tile's counter, at GPU scope;
- the one that sees count - 1 adds the other partials (loaded past L1, which is not coherent
  between SMs: `.cg`), stores C through the descriptor, and resets the counter to zero for the
  next launch.
A program has at most two split segments, its first and its last (the ones between are whole
tiles), so the workspace is [P, 2, BLOCK_M, BLOCK_N] fp32: slot 0 for a segment that begins the
program's range, slot 1 for one that ends it. The counters are one int32 per tile, zeroed once
per device and kept zero between launches by the finishers (`counters`).

Two options, both constexpr:
- PER_TILE = s >= 1 sets the grid to s programs per tile instead of one per SM: an even split-K
  whose boundaries fall on tile edges, so each program has one segment, and the finisher loads
  all s partials at once and sums them in a fixed order (bit-identical from run to run; under
  stream-K proper the finisher's own partial comes first, so the order follows who finishes).
- SWAP_AB computes the tile as W A^T: the weight rows fill the wgmma's 64-row side and the
  tokens its N side (16-64 wide), where a 64-row token tile would run a quarter to half empty.

Measured on an H200 (bf16, Llama 3 8B projections, M = 32-256): stream-K proper over the 132
SMs lost 1.6-6 us to an even split (the fix-up chain: partial store, release, atomic, the
others' loads, at uneven boundaries); two programs per 64-row tile beat one by 7-11% at M =
32-64, N = K = 4096, but with A and W swapped one per tile won on every shape but N = 1024,
where 2-4 per tile did. `gemm_configs._small_m` keeps the measured winners.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._util import TensorDescriptor

# The tile counters of each device (index -> int32 zeros), grown outside graph capture.
_COUNTERS: dict[int, torch.Tensor] = {}


def counters(device: torch.device, tiles: int) -> torch.Tensor:
    """At least `tiles` int32 zeros on `device`, the same buffer each call (the kernel returns
    each counter to zero), allocated or grown only outside CUDA graph capture."""
    key = device.index if device.index is not None else -1
    buf = _COUNTERS.get(key)
    if buf is None or buf.numel() < tiles:
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            raise RuntimeError(
                f"stream-K GEMM needs {tiles} tile counters on {device}; run the shape once "
                "before capturing a CUDA graph, so that they are allocated"
            )
        buf = torch.zeros(max(tiles, 4096), dtype=torch.int32, device=device)
        _COUNTERS[key] = buf
    return buf


@triton.jit
def _first_iteration(p, total, programs):
    """The first flattened iteration of program p: p * T // P."""
    return (tl.cast(p, tl.int64) * total // programs).to(tl.int32)


@triton.jit
def _owner(i, total, programs):
    """The program whose range holds iteration i: floor(((i + 1) * P - 1) / T)."""
    return (((tl.cast(i, tl.int64) + 1) * programs - 1) // total).to(tl.int32)


@triton.jit
def _slot(ws_ptr, q, slot, ROWS: tl.constexpr, COLS: tl.constexpr):
    """Pointers to workspace slot `slot` of program q, a row-major [ROWS, COLS] fp32 tile."""
    base = ws_ptr + (tl.cast(q, tl.int64) * 2 + slot) * (ROWS * COLS)
    return base + tl.arange(0, ROWS)[:, None] * COLS + tl.arange(0, COLS)[None, :]


@triton.jit
def _segment(
    a_desc,
    w_desc,
    off_m,
    off_n,
    k_lo,
    k_hi,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    SWAP_AB: tl.constexpr,
):
    """The fp32 product of K steps [k_lo, k_hi) of one tile: [BLOCK_M, BLOCK_N] = A W^T, or with
    SWAP_AB its transpose [BLOCK_N, BLOCK_M] = W A^T (the weight rows fill the MMA's M side)."""
    if SWAP_AB:
        acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kk in range(k_lo, k_hi):
        a = a_desc.load([off_m, kk * BLOCK_K])
        w = w_desc.load([off_n, kk * BLOCK_K])
        if SWAP_AB:  # noqa: SIM108 - a compile-time branch; each side alone type-checks
            acc = tl.dot(w, a.T, acc)
        else:
            acc = tl.dot(a, w.T, acc)
    return acc


@triton.jit
def _store_tile(c_desc, off_m, off_n, acc, SWAP_AB: tl.constexpr):
    if SWAP_AB:
        c_desc.store([off_m, off_n], tl.trans(acc).to(c_desc.dtype))
    else:
        c_desc.store([off_m, off_n], acc.to(c_desc.dtype))


@triton.jit
def tile_coords(tile, num_pid_m, num_pid_n, GROUP_M: tl.constexpr):
    """(row, column) of output tile `tile` in grouped ordering (GROUP_M rows of tiles swept
    column by column, so that programs in flight share W's column panels)."""
    num_pid_in_group = GROUP_M * num_pid_n
    first_pid_m = (tile // num_pid_in_group) * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((tile % num_pid_in_group) % group_size_m)
    pid_n = (tile % num_pid_in_group) // group_size_m
    return pid_m, pid_n


@triton.jit
def _gemm_streamk_kernel(
    a_desc,
    w_desc,
    c_desc,
    ws_ptr,
    cnt_ptr,
    M,
    N,
    K,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
    SWAP_AB: tl.constexpr,
    SPLIT: tl.constexpr,
):
    # The accumulator's shape: [BLOCK_M, BLOCK_N], or transposed with SWAP_AB.
    ACC_R: tl.constexpr = BLOCK_N if SWAP_AB else BLOCK_M
    ACC_C: tl.constexpr = BLOCK_M if SWAP_AB else BLOCK_N
    p = tl.program_id(0)
    programs = tl.num_programs(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    k_steps = tl.cdiv(K, BLOCK_K)  # TMA zero-fills past K
    total = num_pid_m * num_pid_n * k_steps
    start = _first_iteration(p, total, programs)
    end = _first_iteration(p + 1, total, programs)
    it = start
    while it < end:
        tile = it // k_steps
        k_lo = it - tile * k_steps
        k_hi = min(k_steps, k_lo + (end - it))
        pid_m, pid_n = tile_coords(tile, num_pid_m, num_pid_n, GROUP_M)
        off_m = pid_m * BLOCK_M
        off_n = pid_n * BLOCK_N
        acc = _segment(a_desc, w_desc, off_m, off_n, k_lo, k_hi, BLOCK_M, BLOCK_N, BLOCK_K, SWAP_AB)
        if (k_lo == 0) & (k_hi == k_steps):  # the whole tile
            _store_tile(c_desc, off_m, off_n, acc, SWAP_AB)
        else:  # a split tile: leave the partial, and finish the tile if this is the last
            tl.store(_slot(ws_ptr, p, tl.where(it == start, 0, 1), ACC_R, ACC_C), acc)
            first = tile * k_steps
            q_lo = _owner(first, total, programs)
            q_hi = _owner(first + k_steps - 1, total, programs)
            tl.debug_barrier()  # every thread's partial issued before the release below
            arrived = tl.atomic_add(cnt_ptr + tile, 1, sem="acq_rel", scope="gpu")
            if arrived == q_hi - q_lo:
                if SPLIT > 0:
                    # SPLIT programs per tile, each a single segment in its slot 0: the loads
                    # of all the partials are independent, so they are in flight together (a
                    # loop over a runtime range would wait out one L2 round trip per partial),
                    # and summed in one order whichever program finishes
                    acc = tl.zeros_like(acc)
                    for j in tl.static_range(SPLIT):
                        ptrs = _slot(ws_ptr, q_lo + j, 0, ACC_R, ACC_C)
                        acc += tl.load(ptrs, cache_modifier=".cg")
                else:
                    for q in range(q_lo, q_hi + 1):
                        if q != p:
                            # q's segment of this tile opened q's range (slot 0) unless q
                            # started before the tile (then it closed q's range: slot 1)
                            slot = tl.where(_first_iteration(q, total, programs) >= first, 0, 1)
                            ptrs = _slot(ws_ptr, q, slot, ACC_R, ACC_C)
                            acc += tl.load(ptrs, cache_modifier=".cg")
                tl.store(cnt_ptr + tile, 0)
                _store_tile(c_desc, off_m, off_n, acc, SWAP_AB)
        it += k_hi - k_lo


def per_tile(k: int, cfg: dict) -> int:
    """Programs per tile: cfg's PER_TILE = s, at most one per K step; 0 for stream-K proper."""
    return min(cfg.get("PER_TILE", 0), triton.cdiv(k, cfg["BLOCK_K"]))


def programs_for(m: int, n: int, k: int, cfg: dict, sms: int) -> int:
    """The grid. With PER_TILE = s >= 1, s programs per tile: each takes 1/s of the tile's K
    steps (to within one step) and the last to finish sums the s partials, a split-K with no
    second kernel (s = 1: one program per tile). With PER_TILE = 0 (the default), stream-K
    proper: one program per SM, or one per iteration where there are fewer."""
    tiles = triton.cdiv(m, cfg["BLOCK_M"]) * triton.cdiv(n, cfg["BLOCK_N"])
    if per_tile(k, cfg) >= 1:
        return tiles * per_tile(k, cfg)
    return max(1, min(sms, tiles * triton.cdiv(k, cfg["BLOCK_K"])))


def partial_bytes(m: int, n: int, k: int, cfg: dict, programs: int) -> float:
    """fp32 bytes of partial tiles the kernel writes to its workspace and reads back: every
    split segment writes its tile; the finisher of a split tile reads all s partials with
    PER_TILE = s > 1, the others' under stream-K proper."""
    bm, bn, bk = cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["BLOCK_K"]
    if per_tile(k, cfg) >= 1:
        return 4.0 * bm * bn * 2 * programs if per_tile(k, cfg) > 1 else 0.0
    steps = triton.cdiv(k, bk)
    total = triton.cdiv(m, bm) * triton.cdiv(n, bn) * steps
    bounds = [p * total // programs for p in range(programs + 1)]
    segments = 0
    split_tiles: set[int] = set()
    for start, end in zip(bounds, bounds[1:], strict=False):
        it = start
        while it < end:
            tile, k_lo = divmod(it, steps)
            k_hi = min(steps, k_lo + end - it)
            if k_hi - k_lo < steps:
                segments += 1
                split_tiles.add(tile)
            it += k_hi - k_lo
    return 4.0 * bm * bn * (2 * segments - len(split_tiles))


def launch(a: torch.Tensor, w: torch.Tensor, c: torch.Tensor, cfg: dict, sms: int) -> None:
    """C = A @ W^T by the stream-K kernel with `cfg`'s tile (BLOCK_M, BLOCK_N, BLOCK_K,
    GROUP_M, SWAP_AB, num_stages, num_warps) on `programs_for` programs."""
    m, k = a.shape
    n = w.shape[0]
    bm, bn, bk = cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["BLOCK_K"]
    programs = programs_for(m, n, k, cfg, sms)
    tiles = triton.cdiv(m, bm) * triton.cdiv(n, bn)
    if tiles * triton.cdiv(k, bk) >= 2**31:  # the kernel's iteration indices are 32-bit
        raise ValueError(f"stream-K GEMM: {m} x {n} x {k} has too many tile K steps for int32")
    cnt = counters(a.device, tiles)
    ws = torch.empty((programs, 2, bm, bn), dtype=torch.float32, device=a.device)
    a_desc = TensorDescriptor(a, [m, k], [a.stride(0), 1], [bm, bk])
    w_desc = TensorDescriptor(w, [n, k], [w.stride(0), 1], [bn, bk])
    c_desc = TensorDescriptor(c, [m, n], [c.stride(0), 1], [bm, bn])
    _gemm_streamk_kernel[(programs,)](
        a_desc,
        w_desc,
        c_desc,
        ws,
        cnt,
        m,
        n,
        k,
        BLOCK_M=bm,
        BLOCK_N=bn,
        BLOCK_K=bk,
        GROUP_M=cfg["GROUP_M"],
        SWAP_AB=bool(cfg.get("SWAP_AB")),
        SPLIT=per_tile(k, cfg),
        num_warps=cfg["num_warps"],
        num_stages=cfg["num_stages"],
    )
