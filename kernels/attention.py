"""Flash-attention forward for prefill: O = softmax(scale * Q K^T [+ causal mask]) V.

q is [B, Hq, S, D], k and v are [B, Hkv, S, D]; query head h reads kv head h // (Hq // Hkv) (GQA).
One program owns BLOCK_M query rows of one (batch, head) and streams K/V in BLOCK_N blocks, never
forming the S x S score matrix. Online softmax per query row, in fp32 and in base 2
(exp2(x * log2 e) = exp(x), one multiply folded into the scale):

    m_new = max(m, rowmax(s));  p = exp2(s - m_new);  alpha = exp2(m - m_new)
    l = alpha * l + rowsum(p);  acc = alpha * acc + p @ V;  finally O = acc / l

P is cast to V's dtype for the second tensor-core product (as every flash kernel does).

The KV range splits in two loops: blocks that need no mask (for causal: keys before the first
query row of the block; otherwise: all whole blocks), then the few blocks that do (the diagonal
blocks for causal, the ragged tail when S is not a multiple of BLOCK_N). Causal programs stop at
the diagonal: fully masked blocks are never loaded, halving the work. Programs for the last (most
expensive) query blocks are launched first, and all heads of one query block run side by side, so
the heads that share a kv head find it in L2.

On a Hopper GPU, for fp16/bf16 with head_dim 64 or 128, the tuner also tries
`kernels.attention_hopper` and its warp-specialized form `kernels.attention_hopper_ws`, which run
the softmax of one block beside the P V product of the one before (this kernel, in Triton, waits
for every product before it exponentiates), and keeps whichever is faster for the shape.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from roofbench.theory.plan import KernelLaunch, LaunchPlan

from . import attention_hopper, attention_hopper_ws
from ._util import LOG2E, MAX_HEAD_DIM, MIN_HEAD_DIM, Tuner, check_float, is_interpreter, output


def _configs(overlap: bool = False) -> list[dict]:
    """The launch configurations the tuner tries, in order of preference (a tie goes to the
    earlier one); with `overlap` (a Hopper GPU and inputs `attention_hopper` takes) the
    warp-specialized and the overlapped kernels' first, then this kernel's."""
    if is_interpreter():
        return [{"BLOCK_M": 16, "BLOCK_N": 16, "num_warps": 4, "num_stages": 1}]
    # Hopper: 128 query rows over 8 warps (two warp groups of wgmma); on an H200 128x64 with 3
    # stages won for d=128 causal, 4-warp 128-row tiles ran at half speed. BLOCK_M must be a
    # multiple of BLOCK_N so the causal diagonal starts on a block boundary.
    hopper = attention_hopper_ws.configs() + attention_hopper.configs() if overlap else []
    return hopper + [
        {"BLOCK_M": bm, "BLOCK_N": bn, "num_warps": w, "num_stages": s}
        for bm, bn, w, s in [
            (128, 64, 8, 3),
            (128, 64, 8, 4),
            (128, 128, 8, 3),
            (128, 128, 8, 2),
            (64, 64, 4, 3),
            (64, 32, 4, 3),
        ]
    ]


# Tiles are chosen per (batch x heads, sequence, head_dim, causal, dtype) by the suite's tuner
# (interleaved rounds of its graph-replay timer; triton.autotune's per-call events let the host's
# launch gaps decide between tiles of a 13 us kernel, and it keyed on the sequence alone).
_TUNER = Tuner()


@triton.jit
def _attn_blocks(
    acc,
    l_i,
    m_i,
    q,
    k_ptrs,
    v_ptrs,
    stride_kn,
    stride_vn,
    offs_m,
    offs_n,
    lo,
    hi,
    seq_len,
    qk_scale,
    d_ok,
    BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr,
    MASKED: tl.constexpr,
    PAD_D: tl.constexpr,
):
    """Fold KV blocks [lo, hi) into the running (acc, l_i, m_i); MASKED applies key < S and, if
    CAUSAL, key <= query; PAD_D masks the padded columns of a head_dim that is not a power of
    two (`d_ok`)."""
    for start_n in range(lo, hi, BLOCK_N):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        cols = start_n + offs_n
        if MASKED:
            rows_ok = cols[:, None] < seq_len
            if PAD_D:
                rows_ok = rows_ok & d_ok[None, :]
            k = tl.load(k_ptrs + start_n * stride_kn, mask=rows_ok, other=0.0)
        elif PAD_D:
            k = tl.load(k_ptrs + start_n * stride_kn, mask=d_ok[None, :], other=0.0)
        else:
            k = tl.load(k_ptrs + start_n * stride_kn)
        s = tl.dot(q, tl.trans(k))
        if MASKED:
            keep = cols[None, :] < seq_len
            if CAUSAL:
                keep = keep & (offs_m[:, None] >= cols[None, :])
            s = tl.where(keep, s, float("-inf"))
        # The scale is applied after the row max (scale > 0 keeps the argmax) and fused into the
        # exponent's argument as one FMA per score. Every row has seen at least one unmasked key
        # by its first block (key 0, or the first key of its diagonal block), so m_new is finite
        # and alpha never computes -inf - -inf.
        m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
        p = tl.math.exp2(s * qk_scale - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        if MASKED:
            v = tl.load(v_ptrs + start_n * stride_vn, mask=rows_ok, other=0.0)
        elif PAD_D:
            v = tl.load(v_ptrs + start_n * stride_vn, mask=d_ok[None, :], other=0.0)
        else:
            v = tl.load(v_ptrs + start_n * stride_vn)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _attn_fwd_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    o_ptr,
    qk_scale,
    seq_len,
    heads,
    group,
    stride_qb,
    stride_qh,
    stride_qs,
    stride_kb,
    stride_kh,
    stride_ks,
    stride_vb,
    stride_vh,
    stride_vs,
    stride_ob,
    stride_oh,
    stride_os,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    CAUSAL: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    bh = tl.program_id(0)
    start_m = tl.num_programs(1) - 1 - tl.program_id(1)  # most expensive query blocks first
    b = (bh // heads).to(tl.int64)
    h = bh % heads
    kvh = (h // group).to(tl.int64)
    h = h.to(tl.int64)

    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    # The head dimension padded to a power of two (BLOCK_D): the pad loads zeros, which add
    # nothing to q.k, and is never stored.
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    PAD_D: tl.constexpr = BLOCK_D != HEAD_DIM
    q_ptrs = q_ptr + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qs + offs_d[None, :]
    k_ptrs = k_ptr + b * stride_kb + kvh * stride_kh + offs_n[:, None] * stride_ks + offs_d[None, :]
    v_ptrs = v_ptr + b * stride_vb + kvh * stride_vh + offs_n[:, None] * stride_vs + offs_d[None, :]
    q = tl.load(q_ptrs, mask=(offs_m[:, None] < seq_len) & d_ok[None, :], other=0.0)

    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)

    if CAUSAL:
        full_hi = start_m * BLOCK_M  # keys before the block's first query: visible to all rows
        hi = tl.minimum((start_m + 1) * BLOCK_M, seq_len)
    else:
        full_hi = (seq_len // BLOCK_N) * BLOCK_N
        hi = seq_len
    acc, l_i, m_i = _attn_blocks(
        acc, l_i, m_i, q, k_ptrs, v_ptrs, stride_ks, stride_vs, offs_m, offs_n,
        0, full_hi, seq_len, qk_scale, d_ok, BLOCK_N, CAUSAL, False, PAD_D,
    )  # fmt: skip
    acc, l_i, m_i = _attn_blocks(
        acc, l_i, m_i, q, k_ptrs, v_ptrs, stride_ks, stride_vs, offs_m, offs_n,
        full_hi, hi, seq_len, qk_scale, d_ok, BLOCK_N, CAUSAL, True, PAD_D,
    )  # fmt: skip

    o = acc / l_i[:, None]
    o_ptrs = o_ptr + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_os + offs_d[None, :]
    tl.store(o_ptrs, o.to(o_ptr.dtype.element_ty), mask=(offs_m[:, None] < seq_len) & d_ok[None, :])


def _key(bh: int, seq: int, head_dim: int, causal: bool, dtype, overlap: bool = False) -> tuple:
    return (bh, seq, head_dim, bool(causal), str(dtype), bool(overlap))


def _tuned_config(bh: int, seq: int, head_dim: int, causal: bool, dtype=None) -> dict | None:
    """The configuration the tuner picked for this shape and dtype (any dtype when None), once
    it has run it."""
    configs = _configs()
    if len(configs) == 1:  # nothing to tune (the interpreter's one configuration)
        return configs[0]
    n = 4 if dtype is None else 5
    want = _key(bh, seq, head_dim, causal, "" if dtype is None else dtype)[:n]
    for key, cfg in _TUNER.cache.items():
        if key[:n] == want:
            return cfg
    return None


def launch_plan(
    batch: int, heads: int, seq: int, head_dim: int, causal: bool, dtype=None
) -> LaunchPlan:
    """One kernel on a (B * Hq, S / BLOCK_M) grid (Hq * S / BLOCK_M by B in batch-major order) with
    the configuration the tuner picked for the dtype (undeclared before it has run) and the
    FP32 work per score counted from `_attn_blocks` (the same in
    `attention_hopper._softmax`): the row max (1), the scaled subtract as one FMA (1), the
    row sum (1), the cast of P for the second product (0.5: two per instruction), and the
    rescale of the accumulator, HEAD_DIM multiplies per row per BLOCK_N keys (HEAD_DIM /
    BLOCK_N per score). The exponent runs in series with both products in this kernel,
    beside the P V product in `attention_hopper`'s."""
    cfg = _tuned_config(batch * heads, seq, head_dim, causal, dtype)
    if cfg is None:
        return LaunchPlan((KernelLaunch("attn_fwd"),), notes=("tile not tuned yet",))
    bm, bn = cfg["BLOCK_M"], cfg["BLOCK_N"]
    grid = (batch * heads, triton.cdiv(seq, bm))
    if cfg.get("BATCH_MAJOR"):
        grid = (heads * triton.cdiv(seq, bm), batch)
    overlap = bool(cfg.get("overlap") or cfg.get("ws"))
    name = "attn_fwd_ws" if cfg.get("ws") else "attn_fwd_overlap" if overlap else "attn_fwd"
    return LaunchPlan(
        (KernelLaunch(name, grid, (bm, bn, head_dim)),),
        alu_ops_per_score=3.5 + head_dim / bn,
        exp_beside_pv=overlap,
    )


def _check_shapes(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if q.ndim != 4 or k.shape != v.shape or k.ndim != 4:
        raise ValueError("expected q [B, Hq, S, D] and k, v [B, Hkv, S, D]")
    b, hq, s, d = q.shape
    if k.shape[0] != b or k.shape[2] != s or k.shape[3] != d:
        raise ValueError(f"q {tuple(q.shape)} does not match k/v {tuple(k.shape)}")
    if hq % k.shape[1]:
        raise ValueError(f"query heads {hq} not a multiple of kv heads {k.shape[1]}")


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = True,
    scale: float | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Flash-attention forward; O [B, Hq, S, D] in q's dtype. scale (> 0) defaults to 1/sqrt(D).

    D from 16 to 256 (padded to a power of two inside; 64 and 128 are the tuned cases); the
    last dimension of q, k, v must
    be contiguous. `out`: optional contiguous result buffer.
    """
    _check_shapes(q, k, v)
    dtype = check_float(q, k, v)
    b, hq, s, d = q.shape
    if not MIN_HEAD_DIM <= d <= MAX_HEAD_DIM:
        raise ValueError(f"head_dim {d} must be in {MIN_HEAD_DIM}..{MAX_HEAD_DIM}")
    if q.stride(3) != 1 or k.stride(3) != 1 or v.stride(3) != 1:
        raise ValueError("q, k, v must be contiguous along head_dim")
    o = output(out, q.shape, dtype, q.device)
    if q.numel() == 0:
        return o
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")  # the kernel scales after the max

    overlap = attention_hopper.supported(q, k, v) and o.is_contiguous()

    def launch(cfg: dict) -> None:
        if cfg.get("ws"):
            attention_hopper_ws.launch(q, k, v, o, causal, scale, cfg)
            return
        if cfg.get("overlap"):
            attention_hopper.launch(q, k, v, o, causal, scale, cfg)
            return
        _attn_fwd_kernel[(b * hq, triton.cdiv(s, cfg["BLOCK_M"]))](
            q, k, v, o, scale * LOG2E, s, hq, hq // k.shape[1],
            q.stride(0), q.stride(1), q.stride(2),
            k.stride(0), k.stride(1), k.stride(2),
            v.stride(0), v.stride(1), v.stride(2),
            o.stride(0), o.stride(1), o.stride(2),
            HEAD_DIM=d, BLOCK_D=triton.next_power_of_2(d), CAUSAL=bool(causal),
            BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"],
            num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
        )  # fmt: skip

    key = _key(b * hq, s, d, causal, dtype, overlap)
    launch(_TUNER.pick(key, lambda: _configs(overlap), launch))
    return o


def attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = True,
    scale: float | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """torch's scaled_dot_product_attention (flash / cuDNN on the GPU) with native GQA."""
    _check_shapes(q, k, v)
    o = torch.nn.functional.scaled_dot_product_attention(
        q, k, v, is_causal=causal, scale=scale, enable_gqa=q.shape[1] != k.shape[1]
    )
    if out is None:
        return o
    return out.copy_(o)
