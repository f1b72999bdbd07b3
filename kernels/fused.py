"""Fused element-wise kernels of a decoder layer: what serving engines fuse between the GEMMs.

A decode step of `kernels.llama.Llama` on torch's element-wise ops launches about 19 kernels per
layer, 10 of them tiny (norms, five for rotary, two KV scatters, residual adds, SiLU and its
product), each paying a launch and a DRAM round trip (DESIGN, "Where the time goes"). The
"fused" backend launches instead:

- where the projections are GEMVs (up to `gemv.TOKENS_PER_DOT` token rows: a decode step, a
  short prefill), the element-wise work in their epilogues (`kernels.gemv.gemv`): SiLU x up
  into gate|up's, each residual add into O's and down's, and at one token row each RMSNorm
  folded into the projection after it (QKV, gate|up, the LM head; at 2..16 rows a norm is a
  kernel of its own, `folds_norm`). A layer at batch 1 is then QKV, `rope_kv_append`,
  attention, O, gate|up and down: 5 kernels besides attention (7 at 2..16 rows), the residual
  stream updated in place. Each
  GEMV is launched as a programmatic dependent of the kernel before it where the GPU allows
  (`kernels._util.has_pdl`), so that back-to-back GEMVs overlap one's drain with the next's
  launch; from batch 2 so are rotary + KV append and decode attention
  (`kernels.fused_step.PDL_ATTENTION_MIN_BATCH`);
- on the GEMM (longer prefills), three Triton kernels between the projections:
  - `add_rms_norm`: residual += delta, then y = residual / sqrt(mean(residual^2) + eps) * gain,
    in one pass over a row (one read of delta and residual, one write of each result). Without
    a delta it is a plain RMSNorm of the residual (the first layer's input norm).
  - `silu_mul`: SiLU(gate) x up from the fused gate|up projection's output [T, 2 I].
- either way `rope_kv_append`: rotary position embedding of Q and K from the fused QKV
  projection's output, Q written for attention, K and V written straight into the cache at
  their positions, the cos / sin tables read at each row's position (no gathered copy of them).

Each computes in fp32 and rounds once to the model's dtype, except that the new residual of
`add_rms_norm` is rounded before it is normed (the value the next layer adds to is the stored
one, as in torch). The float64 references below are what tests hold them against.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._util import check_float, gdc_launch_dependents, gdc_wait, has_pdl
from .gemv_epilogue import silu_x_up


def _warps(block: int) -> int:
    """4 warps up to 1024 elements per program, then one more warp per 256 elements, up to 16
    (a row of 4096-8192 elements loads in 16-byte vectors with every thread busy)."""
    return max(4, min(16, block // 256))


# --- residual add + RMSNorm ----------------------------------------------------------------------


@triton.jit
def _add_rms_norm_kernel(
    delta_ptr,
    res_ptr,
    w_ptr,
    out_ptr,
    hidden,
    stride_delta,
    stride_res,
    stride_out,
    eps,
    HAS_DELTA: tl.constexpr,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    ok = offs < hidden
    res_ptrs = res_ptr + row * stride_res + offs
    x = tl.load(res_ptrs, mask=ok, other=0.0)
    if HAS_DELTA:
        d = tl.load(delta_ptr + row * stride_delta + offs, mask=ok, other=0.0)
        x = (x.to(tl.float32) + d.to(tl.float32)).to(res_ptr.dtype.element_ty)
        tl.store(res_ptrs, x, mask=ok)
    x = x.to(tl.float32)
    inv_rms = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / hidden + eps)
    w = tl.load(w_ptr + offs, mask=ok, other=0.0).to(tl.float32)
    y = x * inv_rms * w
    tl.store(out_ptr + row * stride_out + offs, y.to(out_ptr.dtype.element_ty), mask=ok)


def add_rms_norm(
    delta: torch.Tensor | None, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """residual += delta (in place; skipped when delta is None), then the RMSNorm of residual:

    y = r / sqrt(mean(r^2) + eps) * weight   over the last dimension (Zhang & Sennrich 2019).

    delta, residual [T, hidden] (rows may be strided, the last dimension contiguous), weight
    [hidden]. Returns (y [T, hidden] contiguous, residual)."""
    if residual.ndim != 2 or residual.stride(1) != 1 or weight.shape != residual.shape[1:]:
        raise ValueError(
            f"expected residual [T, hidden] contiguous along hidden and weight [hidden], got "
            f"{tuple(residual.shape)} and {tuple(weight.shape)}"
        )
    if delta is not None and (delta.shape != residual.shape or delta.stride(1) != 1):
        raise ValueError(f"delta {tuple(delta.shape)} must match residual {tuple(residual.shape)}")
    check_float(residual, weight, *(() if delta is None else (delta,)))
    rows, hidden = residual.shape
    out = torch.empty((rows, hidden), dtype=residual.dtype, device=residual.device)
    if rows == 0:
        return out, residual
    block = triton.next_power_of_2(hidden)
    source = residual if delta is None else delta
    _add_rms_norm_kernel[(rows,)](
        source,
        residual,
        weight,
        out,
        hidden,
        source.stride(0),
        residual.stride(0),
        out.stride(0),
        float(eps),
        HAS_DELTA=delta is not None,
        BLOCK=block,
        num_warps=_warps(block),
    )
    return out, residual


def add_rms_norm_reference(delta, residual, weight, eps):
    """float64: (r / sqrt(mean(r^2) + eps) * weight, r) with r = residual (+ delta)."""
    r = residual.double() if delta is None else residual.double() + delta.double()
    y = r * torch.rsqrt(r.pow(2).mean(-1, keepdim=True) + eps) * weight.double()
    return y, r


# --- rotary embedding of Q and K, and the KV-cache append ---------------------------------------


@triton.jit
def _rope_kv_kernel(
    qkv_ptr,
    cos_ptr,
    sin_ptr,
    start_ptr,
    q_ptr,
    k_ptr,
    v_ptr,
    tokens_per_seq,
    heads,
    kv_heads,
    half_dim,
    stride_qkv,
    stride_table,
    stride_qb,
    stride_qn,
    stride_qh,
    stride_kb,
    stride_kh,
    stride_ks,
    HAS_START: tl.constexpr,
    BLOCK: tl.constexpr,
    PDL: tl.constexpr,
):
    """One program per (token row, head of Q|K|V): Q and K heads rotated, V heads copied."""
    if PDL:  # the next kernel may launch now; everything read below waits for the one before
        gdc_launch_dependents()
        gdc_wait()
    row = tl.program_id(0)
    head = tl.program_id(1)
    b = row // tokens_per_seq
    n = row % tokens_per_seq
    pos = n
    if HAS_START:
        pos += tl.load(start_ptr + b)
    offs = tl.arange(0, BLOCK)
    ok = offs < half_dim
    head_dim = 2 * half_dim
    src = qkv_ptr + row.to(tl.int64) * stride_qkv + head * head_dim + offs
    x1 = tl.load(src, mask=ok, other=0.0)
    x2 = tl.load(src + half_dim, mask=ok, other=0.0)
    if head < heads + kv_heads:  # Q or K: rotate pairs (i, i + D/2) by the position's angles
        table = pos.to(tl.int64) * stride_table + offs
        c = tl.load(cos_ptr + table, mask=ok, other=0.0).to(tl.float32)
        s = tl.load(sin_ptr + table, mask=ok, other=0.0).to(tl.float32)
        a, bb = x1.to(tl.float32), x2.to(tl.float32)
        y1 = (a * c - bb * s).to(q_ptr.dtype.element_ty)
        y2 = (bb * c + a * s).to(q_ptr.dtype.element_ty)
        # Both branches give a scalar pointer (the compiler needs one type on both sides).
        if head < heads:
            dst = q_ptr + b.to(tl.int64) * stride_qb + n * stride_qn + head * stride_qh
        else:
            kh = head - heads
            dst = k_ptr + b.to(tl.int64) * stride_kb + kh * stride_kh + pos.to(tl.int64) * stride_ks
        tl.store(dst + offs, y1, mask=ok)
        tl.store(dst + offs + half_dim, y2, mask=ok)
    else:  # V: copied into the cache as it is
        vh = head - heads - kv_heads
        dst = v_ptr + b.to(tl.int64) * stride_kb + vh * stride_kh + pos.to(tl.int64) * stride_ks
        tl.store(dst + offs, x1, mask=ok)
        tl.store(dst + offs + half_dim, x2, mask=ok)


def rope_kv_append(
    qkv: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    batch: int,
    heads: int,
    kv_heads: int,
    start: torch.Tensor | None = None,
    k_dst: torch.Tensor | None = None,
    v_dst: torch.Tensor | None = None,
    q_heads_outer: bool = False,
    pdl: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Q and K rotated, K and V written to their positions, from qkv [B * N, (Hq + 2 Hkv) D]
    (the fused projection's output, rows b-major: row b * N + n is token n of sequence b).

    Token n of sequence b sits at position p = start[b] + n (start: int32 [B] on the device, or
    none: p = n). Rotary (Su et al. 2021, rotate-half pairing (i, i + D/2)):
    out_i = x_i cos(p, i) - x_{i+D/2} sin(p, i);  out_{i+D/2} = x_{i+D/2} cos(p, i) + x_i sin(p, i),
    cos and sin [>= max p + 1, D/2] (rows contiguous); the caller keeps every p inside the
    cache and the tables (start is on the device: nothing here reads it). K goes to
    k_dst[b, h, p] and V to v_dst[b, h, p], both [B, Hkv, S, D] with the same strides (a
    layer's cache; allocated as [B, Hkv, N, D] when not given, then start must be none).
    Returns (q, k_dst, v_dst); q is [B, N, Hq, D], or [B, Hq, N, D] in memory with
    `q_heads_outer` (the prefill attention's layout). `pdl`: launched as a programmatic
    dependent of the kernel before it where the device allows (as the GEMV's `pdl`)."""
    rows = qkv.shape[0]
    if batch <= 0 or rows % batch:
        raise ValueError(f"{rows} token rows are not a whole number of {batch} sequences")
    n = rows // batch
    width = qkv.shape[1]
    head_dim = width // (heads + 2 * kv_heads)
    if qkv.ndim != 2 or qkv.stride(1) != 1 or head_dim * (heads + 2 * kv_heads) != width:
        raise ValueError(f"qkv {tuple(qkv.shape)} is not [T, (Hq + 2 Hkv) D], contiguous in D")
    if head_dim % 2 or cos.shape != sin.shape or cos.shape[1] != head_dim // 2:
        raise ValueError(f"cos, sin must be [positions, {head_dim // 2}], got {tuple(cos.shape)}")
    if cos.stride(1) != 1 or cos.stride() != sin.stride():
        raise ValueError("cos and sin must share strides, contiguous along D/2")
    if start is not None and (start.dtype != torch.int32 or tuple(start.shape) != (batch,)):
        raise ValueError("start must be an int32 tensor [B]")
    check_float(qkv, cos, sin)
    if k_dst is None or v_dst is None:
        if start is not None:  # the buffers below hold positions 0..N-1 only
            raise ValueError("positions from `start` need the cache to write them into")
        k_dst, v_dst = (
            torch.empty((batch, kv_heads, n, head_dim), dtype=qkv.dtype, device=qkv.device)
            for _ in range(2)
        )
    if (
        k_dst.stride() != v_dst.stride()
        or k_dst.stride(3) != 1
        or k_dst.shape[:2]
        != (
            batch,
            kv_heads,
        )
    ):
        raise ValueError("k_dst and v_dst must be [B, Hkv, S, D] with the same strides")
    if q_heads_outer:
        q = torch.empty((batch, heads, n, head_dim), dtype=qkv.dtype, device=qkv.device)
        q_strides = (q.stride(0), q.stride(2), q.stride(1))  # (b, n, h)
    else:
        q = torch.empty((batch, n, heads, head_dim), dtype=qkv.dtype, device=qkv.device)
        q_strides = (q.stride(0), q.stride(1), q.stride(2))
    if rows == 0:
        return q, k_dst, v_dst
    half = head_dim // 2
    block = triton.next_power_of_2(half)
    pdl = pdl and has_pdl(qkv.device)
    _rope_kv_kernel[(rows, heads + 2 * kv_heads)](
        qkv,
        cos,
        sin,
        qkv if start is None else start,
        q,
        k_dst,
        v_dst,
        n,
        heads,
        kv_heads,
        half,
        qkv.stride(0),
        cos.stride(0),
        *q_strides,
        k_dst.stride(0),
        k_dst.stride(1),
        k_dst.stride(2),
        HAS_START=start is not None,
        BLOCK=block,
        PDL=pdl,
        num_warps=1 if block <= 64 else 2,
        **({"launch_pdl": True} if pdl else {}),
    )
    return q, k_dst, v_dst


def rope_kv_append_reference(qkv, cos, sin, batch, heads, kv_heads, start=None):
    """float64: (q [B, N, Hq, D], k [B, N, Hkv, D], v [B, N, Hkv, D], positions [B, N])."""
    rows, width = qkv.shape
    n = rows // batch
    d = width // (heads + 2 * kv_heads)
    x = qkv.double().reshape(batch, n, heads + 2 * kv_heads, d)
    offset = torch.zeros(batch, dtype=torch.int64) if start is None else start.long().cpu()
    positions = offset[:, None] + torch.arange(n)[None, :]
    c = cos.double().cpu()[positions][:, :, None, :].to(x.device)
    s = sin.double().cpu()[positions][:, :, None, :].to(x.device)
    qk = x[:, :, : heads + kv_heads]
    a, b = qk[..., : d // 2], qk[..., d // 2 :]
    rotated = torch.cat((a * c - b * s, b * c + a * s), dim=-1)
    return rotated[:, :, :heads], rotated[:, :, heads:], x[:, :, heads + kv_heads :], positions


# --- SiLU(gate) x up --------------------------------------------------------------------------


@triton.jit
def _silu_mul_kernel(gu_ptr, out_ptr, inter, stride_gu, stride_out, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < inter
    g = tl.load(gu_ptr + row * stride_gu + offs, mask=ok, other=0.0).to(tl.float32)
    u = tl.load(gu_ptr + row * stride_gu + inter + offs, mask=ok, other=0.0).to(tl.float32)
    y = silu_x_up(g, u)
    tl.store(out_ptr + row * stride_out + offs, y.to(out_ptr.dtype.element_ty), mask=ok)


SILU_BLOCK = 1024  # elements of one row per program: a row of 14336 in 14 programs


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """SiLU(gate) * up (Shazeer 2020, SwiGLU), silu(g) = g / (1 + exp(-g)), from gate_up
    [T, 2 I] = [gate | up] along the last dimension. Returns [T, I]."""
    if gate_up.ndim != 2 or gate_up.shape[1] % 2 or gate_up.stride(1) != 1:
        raise ValueError(f"gate_up must be [T, 2 I] contiguous in I, got {tuple(gate_up.shape)}")
    check_float(gate_up)
    rows, inter = gate_up.shape[0], gate_up.shape[1] // 2
    out = torch.empty((rows, inter), dtype=gate_up.dtype, device=gate_up.device)
    if rows == 0 or inter == 0:
        return out
    block = min(SILU_BLOCK, triton.next_power_of_2(inter))
    grid = (rows, triton.cdiv(inter, block))
    _silu_mul_kernel[grid](
        gate_up, out, inter, gate_up.stride(0), out.stride(0), BLOCK=block, num_warps=4
    )
    return out


def silu_mul_reference(gate_up):
    """float64 SiLU(gate) * up."""
    g, u = gate_up.double().chunk(2, dim=-1)
    return g * torch.sigmoid(g) * u
