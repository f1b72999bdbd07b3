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

import torch
import triton
import triton.language as tl

from ._util import (
    check_float,
    gdc_launch_dependents,
    gdc_wait,
    has_pdl,
    linear_reference,
    num_sms,
    output,
)
from .gemv_epilogue import _project, _sum_splits_kernel, silu_x_up, sum_splits
from .gemv_pack import PackedWeight
from .gemv_plan import SUM_BLOCK, TOKENS_PER_DOT, Geometry, geometry, launch_plan, plan

__all__ = [
    "SUM_BLOCK",
    "TOKENS_PER_DOT",
    "Geometry",
    "gemv",
    "geometry",
    "launch_plan",
    "plan",
    "silu_x_up",
    "sum_splits",
]


@triton.jit
def _w_tile(w_ptrs, k0, offs_k, K, EVEN_K: tl.constexpr):
    """A [BLOCK_N, BLOCK_K] weight tile at K offset k0 (columns past K read as 0)."""
    if EVEN_K:
        return tl.load(w_ptrs)
    return tl.load(w_ptrs, mask=(k0 + offs_k < K)[None, :], other=0.0)


@triton.jit
def _step(
    acc,
    sq,
    w,
    x_ptrs,
    g_ptrs,
    m_ok,
    k0,
    offs_k,
    K,
    BLOCK_M: tl.constexpr,
    EVEN_K: tl.constexpr,
    NORM: tl.constexpr,
    GAIN: tl.constexpr,
):
    """One K step: acc += the weight tile w times x's columns k0.., with NORM the squares of x
    summed (sq), with GAIN x scaled by the norm's gain first. One token row: an fp32
    [BLOCK_N, BLOCK_K] product reduced after the loop, sq x's squares element-wise; more:
    tl.dot of the [BLOCK_M, BLOCK_K] rows, sq the [BLOCK_M, BLOCK_M] x x^T."""
    k_ok = k0 + offs_k < K
    if BLOCK_M == 1:
        if EVEN_K:
            x = tl.load(x_ptrs).to(tl.float32)
        else:
            x = tl.load(x_ptrs, mask=k_ok, other=0.0).to(tl.float32)
        if NORM:
            sq += x * x
        if GAIN:
            if EVEN_K:
                x = x * tl.load(g_ptrs).to(tl.float32)
            else:
                x = x * tl.load(g_ptrs, mask=k_ok, other=0.0).to(tl.float32)
        acc += w.to(tl.float32) * x[None, :]
    else:
        if EVEN_K:
            x = tl.load(x_ptrs, mask=m_ok[:, None], other=0.0)
        else:
            x = tl.load(x_ptrs, mask=m_ok[:, None] & k_ok[None, :], other=0.0)
        if NORM:
            # The rows' sums of squares on the tensor cores, x x^T in fp32 (its diagonal, read
            # after the loop): an fp32 [BLOCK_M, BLOCK_K] accumulator of squares beside tl.dot's
            # measured 2-3x the GEMV's time on an H200. bf16/fp16 squares are exact in fp32;
            # fp32 inputs take tl.dot's default precision, as the product itself does.
            sq = tl.dot(x, tl.trans(x), sq)
        if GAIN:
            if EVEN_K:
                gain = tl.load(g_ptrs).to(tl.float32)
            else:
                gain = tl.load(g_ptrs, mask=k_ok, other=0.0).to(tl.float32)
            # tl.dot takes x's dtype
            x = (x.to(tl.float32) * gain[None, :]).to(x_ptrs.dtype.element_ty)
        acc = tl.dot(x, tl.trans(w), acc)
    return acc, sq


@triton.jit
def _gemv_kernel(
    x_ptr,
    w_ptr,
    y_ptr,
    g_ptr,
    b_ptr,
    r_ptr,
    ss_ptr,
    M,
    N,
    K,
    stride_xm,
    stride_wn,
    stride_ys,
    stride_ym,
    stride_rm,
    K_SPLIT,
    eps,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    EVEN_K: tl.constexpr,
    NORM: tl.constexpr,
    BIAS: tl.constexpr,
    GLU: tl.constexpr,
    RESIDUAL: tl.constexpr,
    PARTIAL: tl.constexpr,
    PDL: tl.constexpr,
    GAIN: tl.constexpr,
    PACK_N: tl.constexpr,
    PACK_K: tl.constexpr,
):
    if PDL:  # the next kernel may launch now: its programs wait for this one's results
        gdc_launch_dependents()
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    pid_m = tl.program_id(2)
    tile = tl.arange(0, BLOCK_N)
    if GLU:
        # Tile rows alternate gate row j and up row N/2 + j, so that the finished tile splits
        # into the pairs each output j needs.
        n_out = N // 2
        cols = pid_n * (BLOCK_N // 2) + tile // 2
        rows = cols % n_out + (tile % 2) * n_out
    else:
        n_out = N
        cols = pid_n * BLOCK_N + tile
        rows = cols % N
    # Rows past the end wrap to valid rows so the streaming loads need no row mask; the stores
    # drop them.
    valid = cols < n_out
    offs_k = tl.arange(0, BLOCK_K)
    k_lo = pid_s * K_SPLIT
    if PACK_N == 0:  # nn.Linear's [N, K]
        w_ptrs = w_ptr + rows.to(tl.int64)[:, None] * stride_wn + (k_lo + offs_k)[None, :]
    else:
        # Packed (`kernels.gemv_pack`): [PACK_N, PACK_K] tiles contiguous, a tile row's K tiles
        # one after another (stride_wn apart), the rows already in this kernel's order; a K
        # step of BLOCK_K (dividing PACK_K) reads part of one tile per row.
        slots = pid_n * BLOCK_N + tile
        w_rows = w_ptr + (slots // PACK_N).to(tl.int64) * stride_wn + (slots % PACK_N) * PACK_K
    g_ptrs = g_ptr + k_lo + offs_k
    if BLOCK_M == 1:
        x_ptrs = x_ptr + pid_m.to(tl.int64) * stride_xm + k_lo + offs_k
        acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
        sq = tl.zeros((BLOCK_K,), dtype=tl.float32)
        m_ok = None
    else:
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        m_ok = offs_m < M
        x_ptrs = x_ptr + offs_m[:, None].to(tl.int64) * stride_xm + (k_lo + offs_k)[None, :]
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        sq = tl.zeros((BLOCK_M, BLOCK_M), dtype=tl.float32)  # x x^T, see _step
    if PDL:  # everything above overlapped the kernel before; x (and the stores) wait for it
        # (Loading the first weight tile before this wait measured 1.002x, 1.095x and 1.018x
        # the Llama 3 8B fused step's time at batch 1, 4 and 16 on an H200: not taken. Asking
        # L2 for the program's tiles here, prefetch.global.L2, measured 1.01x for one K step,
        # 1.05x for two and 1.66x for the whole K range on a graph of 32 one-row GEMVs of
        # Llama 3 8B's shapes, and the whole step 1.05x and 1.60x at batch 1: not taken.)
        gdc_wait()
    for k in range(0, K_SPLIT, BLOCK_K):
        if PACK_N > 0:
            kk = k_lo + k
            cols_k = (kk // PACK_K) * (PACK_N * PACK_K) + kk % PACK_K + offs_k
            cols_k = tl.max_contiguous(tl.multiple_of(cols_k, BLOCK_K), BLOCK_K)
            w_ptrs = w_rows[:, None] + cols_k[None, :]
        # packed tiles are zero past K: no mask
        w = _w_tile(w_ptrs, k_lo + k, offs_k, K, EVEN_K or PACK_N > 0)
        acc, sq = _step(
            acc, sq, w, x_ptrs, g_ptrs, m_ok, k_lo + k, offs_k, K, BLOCK_M, EVEN_K, NORM, GAIN
        )
        if PACK_N == 0:
            w_ptrs += BLOCK_K
        x_ptrs += BLOCK_K
        g_ptrs += BLOCK_K
    if BLOCK_M == 1:
        y = tl.sum(acc, axis=1)[None, :]  # [1, BLOCK_N]
        ss = tl.sum(sq, axis=0) + tl.zeros((BLOCK_M, 1), dtype=tl.float32)
    else:
        y = acc  # [BLOCK_M, BLOCK_N]
        # the diagonal of x x^T: each row's sum of squares
        eye = tl.arange(0, BLOCK_M)[:, None] == tl.arange(0, BLOCK_M)[None, :]
        ss = tl.sum(tl.where(eye, sq, 0.0), axis=1)[:, None]  # [BLOCK_M, 1]

    out_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = out_m < M
    if PARTIAL:
        # This K range's raw sums at the weight rows' own columns (and, once per split, the
        # input rows' sums of squares over it): the second pass finishes them.
        y_ptrs = y_ptr + pid_s * stride_ys + out_m[:, None] * stride_ym + rows[None, :]
        tl.store(y_ptrs, y, mask=m_ok[:, None] & valid[None, :])
        if NORM:  # the first column of programs writes them
            rows_kept = tl.where(pid_n == 0, M, 0)
            tl.store(ss_ptr + pid_s * M + out_m[:, None], ss, mask=out_m[:, None] < rows_kept)
    else:
        y = _project(y, ss, rows[None, :], b_ptr, K, eps, NORM, BIAS)
        if GLU:
            gate, up = tl.split(tl.reshape(y, (BLOCK_M, BLOCK_N // 2, 2)))
            y = silu_x_up(gate, up)
            out_cols = pid_n * (BLOCK_N // 2) + tl.arange(0, BLOCK_N // 2)
        else:
            out_cols = cols
        mask = m_ok[:, None] & (out_cols < n_out)[None, :]
        if RESIDUAL:
            r_ptrs = r_ptr + out_m[:, None] * stride_rm + out_cols[None, :]
            y += tl.load(r_ptrs, mask=mask, other=0.0).to(tl.float32)
        y_ptrs = y_ptr + out_m[:, None] * stride_ym + out_cols[None, :]
        tl.store(y_ptrs, y.to(y_ptr.dtype.element_ty), mask=mask)


def _vector(t: torch.Tensor | None, size: int, what: str, dtype) -> None:
    if t is not None and (t.shape != (size,) or t.dtype != dtype or t.stride(0) != 1):
        raise ValueError(
            f"{what} must be a contiguous [{size}] {dtype} vector, got {tuple(t.shape)}"
        )


def gemv(
    x: torch.Tensor,
    w: torch.Tensor | PackedWeight,
    out: torch.Tensor | None = None,
    config: dict | None = None,
    *,
    norm: torch.Tensor | None = None,
    rms: bool = False,
    eps: float = 1e-6,
    bias: torch.Tensor | None = None,
    glu: bool = False,
    residual: torch.Tensor | None = None,
    pdl: bool = False,
) -> torch.Tensor:
    """y = x @ W^T with x [M, K] (M small), W [N, K]; fp32 accumulation, y [M, N] in x's dtype.

    `w` may be packed (`kernels.gemv_pack.pack`, with the same `glu`): its tiles are then read
    as contiguous blocks, the K step fixed by the packing.

    `out`: optional contiguous [M, N] result buffer. `config`: optional overrides of `plan`'s
    launch parameters (BLOCK_N, BLOCK_K, SPLIT_K, num_warps, num_stages), for tuning and tests.

    The epilogue a fused decoder runs in the same kernel (`kernels.fused`; cost
    `theory.ops.gemv_epilogue`), in this order, rounding once at the end:
    - `norm` (gain [K]): x's rows RMSNorm-ed first, y = (W (x * gain))^T / rms(x), rms(x) =
      sqrt(mean(x^2) + eps): a row's scale commutes with the product, so the sums of squares
      accumulate beside the dot product and scale the sums at the end;
    - or `rms`: the same with the gain already folded into W's columns (W diag(gain), done
      once when the weights are loaded): y = (W x)^T / rms(x), no gain read or multiply in the
      loop;
    - `bias` [N] added;
    - `glu`: W's rows are gate (first N/2) then up: y [M, N/2] = SiLU(gate) x up;
    - `residual` [M, N_out] added (it may be `out` itself: a residual stream updated in place).

    `pdl`: launch as a programmatic dependent of the kernel before it, where the device and
    Triton allow it (`has_pdl`): each program starts while that kernel drains and waits for its
    results only before reading x, so consecutive kernels of a decode step overlap their launch
    and ramp (the weights are constant: only reading x and storing wait).
    """
    packed = w if isinstance(w, PackedWeight) else None
    if packed is not None:
        if glu != packed.glu:
            raise ValueError(f"w was packed with glu={packed.glu}, called with glu={glu}")
        w = packed.data
    n, k_w = packed.shape if packed is not None else (w.shape[0], w.shape[-1])
    if x.ndim != 2 or (packed is None and w.ndim != 2) or x.shape[1] != k_w:
        raise ValueError(f"expected x [M, K] and w [N, K], got {tuple(x.shape)} and {(n, k_w)}")
    dtype = check_float(x, w)
    if x.stride(1) != 1 or w.stride(-1) != 1:
        raise ValueError("x and w must be contiguous along K")
    m, k = x.shape
    if glu and n % 2:
        raise ValueError(f"glu takes gate|up rows, an even number, got N={n}")
    n_out = n // 2 if glu else n
    _vector(norm, k, "norm's gain", dtype)
    if rms and norm is not None:
        raise ValueError("rms is the norm with its gain folded into w: give norm or rms, not both")
    _vector(bias, n, "bias", dtype)
    if residual is not None and (
        residual.shape != (m, n_out) or residual.dtype != dtype or residual.stride(1) != 1
    ):
        raise ValueError(f"residual must be [{m}, {n_out}] {dtype}, got {tuple(residual.shape)}")
    y = output(out, (m, n_out), dtype, x.device)
    if m == 0 or n == 0:
        return y
    if k == 0 and (norm is not None or rms or glu or bias is not None or residual is not None):
        raise ValueError("the epilogue needs K >= 1")
    if k == 0:
        return y.zero_()

    pack_k = packed.pack_k if packed is not None else 0
    g = geometry(m, n, k, x.element_size(), num_sms(x.device), config, glu, pack_k)
    p, split_k = g.params, g.split_k
    pdl = pdl and has_pdl(x.device)
    flags = {
        "PDL": pdl,
        "NORM": norm is not None or rms,
        "BIAS": bias is not None,
        "GLU": glu,
        "RESIDUAL": residual is not None,
    }
    # Absent operands: any valid pointer (their loads are compiled out).
    gain, b, r = (t if t is not None else x for t in (norm, bias, residual))
    stride_rm = residual.stride(0) if residual is not None else 0
    if split_k == 1:
        dest, stride_s, stride_d, sums = y, 0, y.stride(0), x
    else:
        dest = torch.empty((split_k, m, n), dtype=torch.float32, device=x.device)
        stride_s, stride_d = dest.stride(0), n
        sums = torch.empty((split_k, m), dtype=torch.float32, device=x.device)
    _gemv_kernel[g.grid](
        x,
        w,
        dest,
        gain,
        b,
        r,
        sums,
        m,
        n,
        k,
        x.stride(0),
        packed.row_tile_stride if packed is not None else w.stride(0),
        stride_s,
        stride_d,
        stride_rm,
        g.k_split,
        eps,
        BLOCK_M=g.block_m,
        BLOCK_N=g.block_n,
        BLOCK_K=g.block_k,
        EVEN_K=g.k_split * split_k == k,
        PARTIAL=split_k > 1,
        num_warps=p["num_warps"],
        num_stages=p["num_stages"],
        GAIN=norm is not None,
        PACK_N=packed.pack_n if packed is not None else 0,
        PACK_K=pack_k,
        **({"launch_pdl": True} if pdl else {}),
        **flags,
    )
    if split_k > 1:
        _sum_splits_kernel[(triton.cdiv(m * n_out, SUM_BLOCK),)](
            dest,
            sums,
            b,
            r,
            y,
            m,
            n,
            k,
            y.stride(0),
            stride_rm,
            eps,
            SPLIT_K=split_k,
            BLOCK=SUM_BLOCK,
            num_warps=4,
            **({"launch_pdl": True} if pdl else {}),
            **flags,
        )
    return y


def gemv_epilogue_reference(
    x, w, norm=None, eps=1e-6, bias=None, glu=False, residual=None, rms=False
):
    """`gemv` with its epilogue in float64: the oracle its tests hold it against."""
    x64, w64 = x.double(), w.double()
    if norm is not None or rms:
        x64 = x64 * torch.rsqrt(x64.pow(2).mean(-1, keepdim=True) + eps)
    if norm is not None:
        x64 = x64 * norm.double()
    y = x64 @ w64.T
    if bias is not None:
        y = y + bias.double()
    if glu:
        gate, up = y.chunk(2, dim=-1)
        y = torch.nn.functional.silu(gate) * up
    if residual is not None:
        y = y + residual.double()
    return y


gemv_reference = linear_reference
