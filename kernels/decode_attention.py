"""Decode attention over a KV cache (split-KV, "flash-decoding").

q is [B, Hq, D] (one new token per sequence), the caches k, v are [B, Hkv, S_max, D], and sequence
b attends to its first context_lens[b] positions (a ragged batch). Query head h reads kv head
h // G with G = Hq // Hkv.

One token per sequence gives only B * Hkv independent streams of KV, far fewer than the programs a
GPU needs to saturate HBM at small batch (B=1: 8 streams for 132 SMs). So:

Pass 1 (grid B*Hkv x NUM_SPLITS): program (b, g, s) takes the s-th slice of sequence b's context
and ALL G query heads of kv head g, padded to BLOCK_H >= 16 rows so that q K^T and P V run on the
tensor cores; each K/V byte is read once, not G times. It keeps an online softmax in fp32 (base 2)
and writes, per query head, the normalised partial output o_s = sum_j p_j v_j / l_s and its
log-sum-exp lse_s = m_s + log2(l_s), both fp32. A slice past the context writes lse_s = -inf.

Pass 2 (grid B*Hq): O = sum_s 2^(lse_s - M) o_s / sum_s 2^(lse_s - M), M = max_s lse_s.

NUM_SPLITS is chosen so that the B*Hkv*NUM_SPLITS programs fill the SMs in one wave, with at least
two BLOCK_N blocks per slice, from S_max (a host value; reading context_lens would stall the host
and break graph capture). With one split, pass 1 writes O directly and pass 2 is skipped.
Every context length must be >= 1.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from roofbench.theory.plan import KernelLaunch, LaunchPlan

from ._util import (
    LOG2E,
    MAX_HEAD_DIM,
    MIN_HEAD_DIM,
    check_float,
    gdc_launch_dependents,
    gdc_wait,
    has_pdl,
    is_interpreter,
    num_sms,
    output,
)

MAX_SPLITS = 256


@triton.jit
def _decode_split_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    lens_ptr,
    o_ptr,
    lse_ptr,
    qk_scale,
    kv_heads,
    group,
    num_splits,
    stride_qb,
    stride_qh,
    stride_kb,
    stride_kh,
    stride_ks,
    stride_vb,
    stride_vh,
    stride_vs,
    stride_ob,
    stride_oh,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_N: tl.constexpr,
    DIRECT: tl.constexpr,
    PDL: tl.constexpr,
):
    if PDL:  # the next kernel may launch now; everything read below waits for the one before
        gdc_launch_dependents()
        gdc_wait()
    pid = tl.program_id(0)
    split = tl.program_id(1)
    b = pid // kv_heads
    kvh = pid % kv_heads

    ctx = tl.load(lens_ptr + b)
    # Slices are whole BLOCK_N blocks, so only a slice's last block can be partial.
    slice_len = tl.cdiv(tl.cdiv(ctx, num_splits), BLOCK_N) * BLOCK_N
    lo = split * slice_len
    hi = tl.minimum(lo + slice_len, ctx)

    b = b.to(tl.int64)
    kvh = kvh.to(tl.int64)
    offs_h = tl.arange(0, BLOCK_H)
    h_ok = offs_h < group
    heads = kvh * group + offs_h
    # The head dimension padded to a power of two (BLOCK_D); the pad reads zeros, which add
    # nothing to q.k and write nothing out.
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    PAD_D: tl.constexpr = BLOCK_D != HEAD_DIM  # a power-of-two head_dim keeps its plain loads
    offs_n = tl.arange(0, BLOCK_N)
    q = tl.load(
        q_ptr + b * stride_qb + heads[:, None] * stride_qh + offs_d[None, :],
        mask=h_ok[:, None] & d_ok[None, :],
        other=0.0,
    )
    k_ptrs = k_ptr + b * stride_kb + kvh * stride_kh + offs_n[:, None] * stride_ks + offs_d[None, :]
    v_ptrs = v_ptr + b * stride_vb + kvh * stride_vh + offs_n[:, None] * stride_vs + offs_d[None, :]

    m_i = tl.full((BLOCK_H,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_H,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_H, BLOCK_D), dtype=tl.float32)
    for start in range(lo, hi, BLOCK_N):
        cols = start + offs_n
        keep = cols < hi
        if PAD_D:  # noqa: SIM108 - a constexpr branch: Triton compiles one side
            kv_ok = keep[:, None] & d_ok[None, :]
        else:
            kv_ok = keep[:, None]
        k = tl.load(k_ptrs + start * stride_ks, mask=kv_ok, other=0.0)
        s = tl.dot(q, tl.trans(k)) * qk_scale
        s = tl.where(keep[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))  # finite: each block has >= 1 key in range
        p = tl.math.exp2(s - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_ptrs + start * stride_vs, mask=kv_ok, other=0.0)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
        m_i = m_new

    o = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]  # empty slice: l = 0, o = 0
    if DIRECT:
        o_ptrs = o_ptr + b * stride_ob + heads[:, None] * stride_oh + offs_d[None, :]
        tl.store(o_ptrs, o.to(o_ptr.dtype.element_ty), mask=h_ok[:, None] & d_ok[None, :])
    else:
        row = (b * kv_heads * group + heads) * num_splits + split  # [B*Hq, NUM_SPLITS] index
        o_ptrs = o_ptr + row[:, None] * HEAD_DIM + offs_d[None, :]
        tl.store(o_ptrs, o, mask=h_ok[:, None] & d_ok[None, :])
        # l >= 1 once any key was seen; an empty slice keeps m = -inf, so lse = -inf.
        tl.store(lse_ptr + row, m_i + tl.log2(tl.maximum(l_i, 1.0)), mask=h_ok)


@triton.jit
def _decode_combine_kernel(
    o_part_ptr,
    lse_ptr,
    out_ptr,
    heads,
    num_splits,
    stride_ob,
    stride_oh,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_S: tl.constexpr,
    PDL: tl.constexpr,
):
    if PDL:
        gdc_launch_dependents()
        gdc_wait()
    pid = tl.program_id(0)  # b * Hq + h
    b = (pid // heads).to(tl.int64)
    h = (pid % heads).to(tl.int64)
    offs_s = tl.arange(0, BLOCK_S)
    s_ok = offs_s < num_splits
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    row = pid.to(tl.int64) * num_splits + offs_s
    lse = tl.load(lse_ptr + row, mask=s_ok, other=float("-inf"))
    o = tl.load(
        o_part_ptr + row[:, None] * HEAD_DIM + offs_d[None, :],
        mask=s_ok[:, None] & d_ok[None, :],
        other=0.0,
    )
    top = tl.max(lse, 0)  # finite: the first slice always holds key 0
    w = tl.math.exp2(lse - top)
    out = tl.sum(w[:, None] * o, 0) / tl.sum(w, 0)
    out_ptrs = out_ptr + b * stride_ob + h * stride_oh + offs_d
    tl.store(out_ptrs, out.to(out_ptr.dtype.element_ty), mask=d_ok)


def plan(batch: int, kv_heads: int, s_max: int, sms: int) -> dict:
    """Launch parameters: as many slices as fill the SMs in ONE wave (batch*kv_heads*splits <=
    SMs), each slice keeping >= 2 blocks of keys; 128-key blocks once a slice holds >= 512 keys.

    Measured on an H200 (32q/8kv, d=128, graph replay): B=1 ctx 4096 and 32768 were fastest at
    16 slices (128 programs on 132 SMs); more slices meant a second wave of programs whose
    pipelined K/V blocks (64-128 KiB of shared memory a program) fit one to three per SM.
    B=32 (256 streams) was fastest unsplit.
    """
    block_n = 16 if is_interpreter() else 64  # the interpreter's cost grows with the tile
    splits = max(1, min(sms // (batch * kv_heads), triton.cdiv(s_max, 2 * block_n), MAX_SPLITS))
    if not is_interpreter() and triton.cdiv(s_max, splits) >= 512:
        block_n = 128
    return {"BLOCK_N": block_n, "num_splits": splits, "num_warps": 4, "num_stages": 3}


def launch_plan(
    batch: int,
    heads: int,
    kv_heads: int,
    s_max: int,
    head_dim: int,
    sms: int,
    element_size: int = 2,
) -> LaunchPlan:
    """The kernels `decode_attention` launches: pass 1 on a (B*Hkv, splits) grid, and with more
    than one split the combine pass, which reads back the fp32 partial outputs and log-sum-exps
    (B * Hq * splits * (D + 1) * 4 bytes, written by pass 1). A pass-1 program keeps the K and
    V blocks of its ring of num_stages - 1 shared-memory buffers in flight (as Triton compiles
    it for sm_90, checked by tests/kernels/test_inflight.py): 2 * BLOCK_N * D * element_size *
    (num_stages - 1)."""
    p = plan(batch, kv_heads, s_max, sms)
    splits = p["num_splits"]
    block_h = max(16, triton.next_power_of_2(heads // kv_heads))
    tile = (block_h, p["BLOCK_N"], head_dim)
    inflight = 2.0 * p["BLOCK_N"] * head_dim * element_size * max(1, p["num_stages"] - 1)
    if splits == 1:
        grid = (batch * kv_heads, 1)
        return LaunchPlan((KernelLaunch("decode_split", grid, tile, inflight_bytes=inflight),))
    partial = 4.0 * batch * heads * splits * (head_dim + 1)
    return LaunchPlan(
        (
            KernelLaunch(
                "decode_split", (batch * kv_heads, splits), tile, splits, partial, inflight
            ),
            KernelLaunch("decode_combine", (batch * heads,), (head_dim,), 1, partial),
        )
    )


def decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float | None = None,
    num_splits: int | None = None,
    out: torch.Tensor | None = None,
    config: dict | None = None,
    pdl: bool = False,
) -> torch.Tensor:
    """Attention of one query token per sequence over its first context_lens[b] cached positions.

    q [B, Hq, D]; k_cache, v_cache [B, Hkv, S_max, D] (last dim contiguous); context_lens int32
    [B] on q's device, each in 1..S_max. scale defaults to 1/sqrt(D). Returns [B, Hq, D] in q's
    dtype (written into `out` if given). `config` overrides the launch parameters of `plan`.
    `pdl`: each kernel launched as a programmatic dependent of the kernel before it, where the
    device allows (`kernels._util.has_pdl`; as the GEMV's `pdl`): it waits for that kernel's
    results before reading anything, and lets the next kernel launch at once.
    """
    _check_shapes(q, k_cache, v_cache, context_lens)
    dtype = check_float(q, k_cache, v_cache)
    batch, hq, d = q.shape
    hkv, s_max = k_cache.shape[1], k_cache.shape[2]
    group = hq // hkv
    o = output(out, q.shape, dtype, q.device)
    if q.numel() == 0:
        return o
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    p = plan(batch, hkv, s_max, num_sms(q.device))
    p.update(config or {})
    block_n = p["BLOCK_N"]
    if num_splits is None:
        num_splits = p["num_splits"]
    block_h = max(16, triton.next_power_of_2(group))
    direct = num_splits == 1
    pdl = pdl and has_pdl(q.device)
    launch = {"launch_pdl": True} if pdl else {}
    if direct:
        o_part, lse, stride_ob, stride_oh = o, o, o.stride(0), o.stride(1)
    else:
        o_part = torch.empty((batch * hq, num_splits, d), dtype=torch.float32, device=q.device)
        lse = torch.empty((batch * hq, num_splits), dtype=torch.float32, device=q.device)
        stride_ob = stride_oh = 0
    _decode_split_kernel[(batch * hkv, num_splits)](
        q, k_cache, v_cache, context_lens, o_part, lse, scale * LOG2E, hkv, group, num_splits,
        q.stride(0), q.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        stride_ob, stride_oh,
        HEAD_DIM=d, BLOCK_D=triton.next_power_of_2(d), BLOCK_H=block_h, BLOCK_N=block_n,
        DIRECT=direct, PDL=pdl,
        num_warps=p["num_warps"], num_stages=p["num_stages"], **launch,
    )  # fmt: skip
    if not direct:
        _decode_combine_kernel[(batch * hq,)](
            o_part, lse, o, hq, num_splits, o.stride(0), o.stride(1),
            HEAD_DIM=d, BLOCK_D=triton.next_power_of_2(d),
            BLOCK_S=triton.next_power_of_2(num_splits), PDL=pdl, num_warps=4, **launch,
        )  # fmt: skip
    return o


def _check_shapes(q, k_cache, v_cache, context_lens) -> None:
    if q.ndim != 3 or k_cache.ndim != 4 or k_cache.shape != v_cache.shape:
        raise ValueError("expected q [B, Hq, D] and k_cache, v_cache [B, Hkv, S_max, D]")
    batch, hq, d = q.shape
    if k_cache.shape[0] != batch or k_cache.shape[3] != d or hq % k_cache.shape[1]:
        raise ValueError(f"q {tuple(q.shape)} does not match the cache {tuple(k_cache.shape)}")
    if not MIN_HEAD_DIM <= d <= MAX_HEAD_DIM:
        raise ValueError(f"head_dim {d} must be in {MIN_HEAD_DIM}..{MAX_HEAD_DIM}")
    if q.stride(2) != 1 or k_cache.stride(3) != 1 or v_cache.stride(3) != 1:
        raise ValueError("q and the caches must be contiguous along head_dim")
    if tuple(context_lens.shape) != (batch,) or context_lens.dtype != torch.int32:
        raise ValueError("context_lens must be an int32 tensor [B]")


def decode_attention_reference(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    context_lens,
    scale: float | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """torch's scaled_dot_product_attention over the cache.

    context_lens as host ints: each run of sequences of one length is one SDPA call on the cache
    sliced to that length (no mask: a mask with GQA would send SDPA to its slow math path).
    context_lens as an int32 device tensor: one SDPA call over the whole cache with a key mask
    built on the device, so nothing is read back to the host and a CUDA graph can capture it;
    the G query heads of a KV head are that head's G query rows, so no GQA expansion meets the
    mask.
    """
    if isinstance(context_lens, torch.Tensor):
        return _masked_reference(q, k_cache, v_cache, context_lens, scale, out)
    lens = [int(n) for n in context_lens]
    gqa = q.shape[1] != k_cache.shape[1]
    o = out if out is not None else torch.empty_like(q)
    start = 0
    while start < len(lens):
        stop = start
        while stop < len(lens) and lens[stop] == lens[start]:
            stop += 1
        length = lens[start]
        res = torch.nn.functional.scaled_dot_product_attention(
            q[start:stop, :, None, :],
            k_cache[start:stop, :, :length],
            v_cache[start:stop, :, :length],
            scale=scale,
            enable_gqa=gqa,
        )
        o[start:stop].copy_(res[:, :, 0, :])
        start = stop
    return o


def _masked_reference(q, k_cache, v_cache, context_lens, scale, out):
    batch, heads, d = q.shape
    kv_heads, s_max = k_cache.shape[1], k_cache.shape[2]
    keys = torch.arange(s_max, device=q.device)
    mask = (keys[None, :] < context_lens[:, None])[:, None, None, :]
    grouped = q.reshape(batch, kv_heads, heads // kv_heads, d)
    o = torch.nn.functional.scaled_dot_product_attention(
        grouped, k_cache, v_cache, attn_mask=mask, scale=scale
    ).reshape(batch, heads, d)
    return o if out is None else out.copy_(o)
