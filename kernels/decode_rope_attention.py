"""One kernel for a decode step's attention: rotary on the new token's Q and K, K and V appended
to the cache, and split-KV attention whose slices are combined by the last one to finish.

The fused decoder's layer otherwise launches three kernels between its QKV and O projections:
`kernels.fused.rope_kv_append`, then `kernels.decode_attention`'s split pass and its combine
pass. Each is a few microseconds of launch and ramp for well under a microsecond of bytes at short
contexts, so here they are one:

- program (b, g, s) of a (B * Hkv, NUM_SPLITS) grid reads the raw Q of kv head g's G query heads
  from the QKV projection's output row b and rotates it (pairs (i, i + D/2), as
  `kernels.llama.apply_rope`, rounded to the cache's dtype as `rope_kv_append` rounds);
- the program whose slice holds the new position p = positions[b] (the last key) rotates K, writes
  K and V to the cache at p, and scores that key from its registers (its slice's cached keys
  stop before p), so no program reads what another writes;
- the slices' partial outputs and log-sum-exps (base 2) go to fp32 buffers as in
  `kernels.decode_attention`; each program then counts itself done on a per-(b, g) counter
  (a barrier, then one thread's acq_rel atomic increment at GPU scope), and the
  program that finds itself last combines the slices, O = sum_s 2^(lse_s - M) o_s /
  sum_s 2^(lse_s - M), and resets the counter to 0 for the next call. One split writes O
  directly.

Sequence b attends to p + 1 keys. The counters are shared by the calls on one device, which
must therefore run one after another (one stream, as a decode step runs its layers).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from roofbench.theory.plan import KernelLaunch, LaunchPlan

from . import decode_attention as _decode
from ._util import (
    check_float,
    gdc_launch_dependents,
    gdc_wait,
    has_pdl,
    is_interpreter,
    num_sms,
)

__all__ = ["launch_plan", "rope_decode_attention", "rope_decode_attention_reference"]


@triton.jit
def _fence(like):
    """fence.acq_rel.gpu in every thread (`like`: any tensor, to give the asm its threads)."""
    tl.inline_asm_elementwise(
        "fence.acq_rel.gpu; mov.u32 $0, 0;", "=r,r", [like], dtype=tl.int32, is_pure=False, pack=1
    )


@triton.jit
def _rotate(row_ptr, heads, h_ok, cos, sin, offs_d, d_ok, HEAD_DIM: tl.constexpr):
    """Heads [len(heads), BLOCK_D] of a Q|K|V row rotated by the angles cos, sin [BLOCK_D]
    (each half's angle repeated over both halves), in fp32."""
    half: tl.constexpr = HEAD_DIM // 2
    first = offs_d < half
    partner = tl.where(first, offs_d + half, offs_d - half)
    ok = h_ok[:, None] & d_ok[None, :]
    base = row_ptr + heads[:, None] * HEAD_DIM
    x = tl.load(base + offs_d[None, :], mask=ok, other=0.0).to(tl.float32)
    xp = tl.load(base + partner[None, :], mask=ok, other=0.0).to(tl.float32)
    # out_i = x_i c - x_{i+D/2} s;  out_{i+D/2} = x_{i+D/2} c + x_i s
    return x * cos[None, :] + tl.where(first, -xp, xp) * sin[None, :]


@triton.jit
def _rope_decode_kernel(
    qkv_ptr,
    cos_ptr,
    sin_ptr,
    pos_ptr,
    k_ptr,
    v_ptr,
    o_part_ptr,
    lse_ptr,
    count_ptr,
    out_ptr,
    qk_scale,
    heads_q,
    kv_heads,
    group,
    num_splits,
    stride_qkv,
    stride_table,
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
    FENCE: tl.constexpr,
    PDL: tl.constexpr,
):
    if PDL:  # the next kernel may launch now; everything read below waits for the one before
        gdc_launch_dependents()
        gdc_wait()
    pid = tl.program_id(0)
    split = tl.program_id(1)
    b = pid // kv_heads
    kvh = pid % kv_heads

    pos = tl.load(pos_ptr + b)
    ctx = pos + 1
    slice_len = tl.cdiv(tl.cdiv(ctx, num_splits), BLOCK_N) * BLOCK_N
    lo = split * slice_len
    hi = tl.minimum(lo + slice_len, ctx)
    owner = (lo <= pos) & (pos < hi)  # this slice holds the new key

    b = b.to(tl.int64)
    kvh = kvh.to(tl.int64)
    offs_h = tl.arange(0, BLOCK_H)
    h_ok = offs_h < group
    heads = kvh * group + offs_h
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    PAD_D: tl.constexpr = BLOCK_D != HEAD_DIM
    table = pos.to(tl.int64) * stride_table + offs_d % (HEAD_DIM // 2)
    cos = tl.load(cos_ptr + table, mask=d_ok, other=0.0).to(tl.float32)
    sin = tl.load(sin_ptr + table, mask=d_ok, other=0.0).to(tl.float32)
    row = qkv_ptr + b * stride_qkv
    dtype = k_ptr.dtype.element_ty
    q = _rotate(row, heads, h_ok, cos, sin, offs_d, d_ok, HEAD_DIM).to(dtype)

    # The new key, rotated, appended by the owner and scored first from registers: its loads
    # and stores overlap the cached keys' instead of following them.
    kv_row = tl.zeros((1,), dtype=tl.int64) + kvh
    one = tl.full((1,), True, tl.int1)
    k_new = _rotate(row + heads_q * HEAD_DIM, kv_row, one, cos, sin, offs_d, d_ok, HEAD_DIM)
    k_new = tl.reshape(k_new.to(dtype), (BLOCK_D,))
    v_new = tl.load(row + (heads_q + kv_heads + kvh) * HEAD_DIM + offs_d, mask=d_ok, other=0.0)
    at = pos.to(tl.int64)
    new_ok = offs_d < tl.where(owner, HEAD_DIM, 0)  # the owner writes; d_ok as well
    tl.store(k_ptr + b * stride_kb + kvh * stride_kh + at * stride_ks + offs_d, k_new, new_ok)
    tl.store(v_ptr + b * stride_vb + kvh * stride_vh + at * stride_vs + offs_d, v_new, new_ok)
    s_new = tl.sum(q.to(tl.float32) * k_new.to(tl.float32)[None, :], 1) * qk_scale
    m_i = tl.where(owner, s_new, float("-inf"))
    l_i = tl.where(owner, 1.0, 0.0) + tl.zeros((BLOCK_H,), dtype=tl.float32)
    acc = tl.where(owner, v_new.to(tl.float32)[None, :], 0.0) + tl.zeros(
        (BLOCK_H, BLOCK_D), dtype=tl.float32
    )

    offs_n = tl.arange(0, BLOCK_N)
    k_ptrs = k_ptr + b * stride_kb + kvh * stride_kh + offs_n[:, None] * stride_ks + offs_d[None, :]
    v_ptrs = v_ptr + b * stride_vb + kvh * stride_vh + offs_n[:, None] * stride_vs + offs_d[None, :]
    cached_hi = tl.where(owner, pos, hi)  # the new key is not read from the cache
    for start in range(lo, cached_hi, BLOCK_N):
        cols = start + offs_n
        keep = cols < cached_hi
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
    out_ok = h_ok[:, None] & d_ok[None, :]
    out_ptrs = out_ptr + b * stride_ob + heads[:, None] * stride_oh + offs_d[None, :]
    if DIRECT:
        tl.store(out_ptrs, o.to(out_ptr.dtype.element_ty), mask=out_ok)
    else:
        part = (b * heads_q + heads) * num_splits  # [B*Hq, NUM_SPLITS] rows of this kv head
        tl.store(o_part_ptr + (part + split)[:, None] * HEAD_DIM + offs_d[None, :], o, out_ok)
        # l >= 1 once any key was seen; an empty slice keeps m = -inf, so lse = -inf.
        tl.store(lse_ptr + part + split, m_i + tl.log2(tl.maximum(l_i, 1.0)), mask=h_ok)
        if FENCE:  # every thread's own fence besides (`FENCE_ALL_THREADS`)
            _fence(offs_h)
        # The CTA's stores before the one thread's increment (acq_rel, GPU scope), whose result
        # every thread reads after a barrier (Triton's broadcast of a scalar atomic).
        tl.debug_barrier()
        done = tl.atomic_add(count_ptr + pid, 1, sem="acq_rel", scope="gpu")
        if done == num_splits - 1:  # the last slice of (b, g) to finish combines them all
            top = tl.full((BLOCK_H,), float("-inf"), dtype=tl.float32)
            for s in range(0, num_splits):
                lse = tl.load(lse_ptr + part + s, mask=h_ok, other=0.0, cache_modifier=".cg")
                top = tl.maximum(top, lse)  # finite: the first slice always holds key 0
            total = tl.zeros((BLOCK_H, BLOCK_D), dtype=tl.float32)
            weight = tl.zeros((BLOCK_H,), dtype=tl.float32)
            for s in range(0, num_splits):
                lse = tl.load(lse_ptr + part + s, mask=h_ok, other=0.0, cache_modifier=".cg")
                w = tl.math.exp2(lse - top)
                o_s = tl.load(
                    o_part_ptr + (part + s)[:, None] * HEAD_DIM + offs_d[None, :],
                    mask=out_ok,
                    other=0.0,
                    cache_modifier=".cg",
                )
                total += w[:, None] * o_s
                weight += w
            o = total / tl.where(weight > 0, weight, 1.0)[:, None]
            tl.store(out_ptrs, o.to(out_ptr.dtype.element_ty), mask=out_ok)
            tl.atomic_xchg(count_ptr + pid, 0)  # ready for the next call


# Whether every thread also runs fence.acq_rel.gpu after its stores of the partials; the barrier
# and the one thread's acq_rel increment order them already, as a cooperative grid sync does.
FENCE_ALL_THREADS = False
_COUNTERS: dict[torch.device, torch.Tensor] = {}


def _counters(device: torch.device, n: int) -> torch.Tensor:
    """n zeroed int32 counters on `device`, kept between calls (each call leaves them at 0)."""
    have = _COUNTERS.get(device)
    if have is None or have.numel() < n:
        have = torch.zeros(max(n, 1024), dtype=torch.int32, device=device)
        _COUNTERS[device] = have
    return have


def launch_plan(
    batch: int,
    heads: int,
    kv_heads: int,
    s_max: int,
    head_dim: int,
    sms: int,
    element_size: int = 2,
) -> LaunchPlan:
    """One kernel on `kernels.decode_attention`'s (B*Hkv, splits) grid with its tiles and bytes
    in flight; with more than one split the fp32 partial outputs and log-sum-exps (B * Hq *
    splits * (D + 1) * 4 bytes) are written and read back by the same kernel."""
    (split,) = _decode.launch_plan(
        batch, heads, kv_heads, s_max, head_dim, sms, element_size
    ).kernels[:1]
    partial = 2.0 * split.partial_bytes  # written, then read back by the last slice
    return LaunchPlan((KernelLaunch("rope_decode_attention", split.grid, split.tile,
                                    split.splits, partial, split.inflight_bytes),))  # fmt: skip


def rope_decode_attention(
    qkv: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    heads: int,
    kv_heads: int,
    positions: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    scale: float | None = None,
    pdl: bool = False,
) -> torch.Tensor:
    """Attention output [B, Hq, D] of one new token per sequence.

    qkv [B, (Hq + 2 Hkv) D]: the QKV projection's rows, not yet rotated; cos, sin [S, D/2]: the
    rotary tables; positions [B] (int32, on the device): the new token's position p in each
    sequence, which attends to keys 0..p; k_cache, v_cache [B, Hkv, S_max, D]: the cache,
    whose position p of each sequence this call writes (K rotated, V as it is). `pdl`: launch as
    a programmatic dependent of the kernel before it (`kernels._util.has_pdl`)."""
    if qkv.ndim != 2 or k_cache.ndim != 4 or k_cache.shape != v_cache.shape:
        raise ValueError("expected qkv [B, (Hq + 2 Hkv) D] and caches [B, Hkv, S_max, D]")
    batch, hkv, s_max, d = k_cache.shape
    if hkv != kv_heads or heads % kv_heads or qkv.shape != (batch, (heads + 2 * kv_heads) * d):
        raise ValueError(
            f"qkv {tuple(qkv.shape)} and cache {tuple(k_cache.shape)} do not match "
            f"{heads} query and {kv_heads} KV heads"
        )
    if d % 2 or not _decode.MIN_HEAD_DIM <= d <= _decode.MAX_HEAD_DIM:
        raise ValueError(f"head_dim must be even, {_decode.MIN_HEAD_DIM}..{_decode.MAX_HEAD_DIM}")
    if cos.shape != sin.shape or cos.shape[-1] != d // 2 or cos.stride(-1) != 1:
        raise ValueError(f"cos and sin must be [S, {d // 2}], got {tuple(cos.shape)}")
    if positions.shape != (batch,) or positions.dtype != torch.int32:
        raise ValueError(f"positions must be [{batch}] int32, got {tuple(positions.shape)}")
    check_float(qkv, k_cache, v_cache)
    if qkv.stride(1) != 1 or k_cache.stride(-1) != 1 or v_cache.stride(-1) != 1:
        raise ValueError("qkv and the caches must be contiguous along the head dimension")
    group = heads // kv_heads
    out = torch.empty((batch, heads, d), dtype=qkv.dtype, device=qkv.device)
    if batch == 0:
        return out
    p = _decode.plan(batch, kv_heads, s_max, num_sms(qkv.device))
    splits = p["num_splits"]
    direct = splits == 1
    if direct:
        o_part = lse = count = out  # unused
    else:
        o_part = torch.empty((batch * heads, splits, d), dtype=torch.float32, device=qkv.device)
        lse = torch.empty((batch * heads, splits), dtype=torch.float32, device=qkv.device)
        count = _counters(qkv.device, batch * kv_heads)
    scale = d**-0.5 if scale is None else scale
    pdl = pdl and has_pdl(qkv.device)
    _rope_decode_kernel[(batch * kv_heads, splits)](
        qkv, cos, sin, positions, k_cache, v_cache, o_part, lse, count, out,
        scale * _decode.LOG2E, heads, kv_heads, group, splits, qkv.stride(0), cos.stride(0),
        *k_cache.stride()[:3], *v_cache.stride()[:3], out.stride(0), out.stride(1),
        HEAD_DIM=d, BLOCK_D=triton.next_power_of_2(d),
        BLOCK_H=max(16, triton.next_power_of_2(group)), BLOCK_N=p["BLOCK_N"], DIRECT=direct,
        FENCE=FENCE_ALL_THREADS and not is_interpreter(), PDL=pdl, num_warps=p["num_warps"],
        num_stages=p["num_stages"], **({"launch_pdl": True} if pdl else {}),
    )  # fmt: skip
    return out


def rope_decode_attention_reference(
    qkv, cos, sin, heads, kv_heads, positions, k_cache, v_cache, scale=None
):
    """The oracle in float64: rotary as `kernels.fused.rope_kv_append_reference`, K and V written
    to the caches in their dtype (as the kernel writes them), attention over p + 1 keys as
    `kernels.decode_attention.decode_attention_reference` on float64 copies of the caches."""
    from .fused import rope_kv_append_reference

    batch, d = qkv.shape[0], k_cache.shape[-1]
    q, k, v, _ = rope_kv_append_reference(qkv, cos, sin, batch, heads, kv_heads, positions)
    at = positions.long().to(k_cache.device)
    rows = torch.arange(batch, device=k_cache.device)
    k_cache[rows, :, at] = k[:, 0].to(k_cache.dtype)
    v_cache[rows, :, at] = v[:, 0].to(v_cache.dtype)
    lens = (positions + 1).tolist()
    q64 = q[:, 0].reshape(batch, heads, d)
    return _decode.decode_attention_reference(q64, k_cache.double(), v_cache.double(), lens, scale)
