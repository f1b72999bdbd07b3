"""Flash-attention forward for Hopper that overlaps the softmax with the tensor cores (Gluon).

Same maths as `kernels.attention` (online softmax in base 2, the scale after the row max, P cast
to V's dtype), scheduled by hand, which Triton's `tl.dot` cannot express: Triton waits for every
wgmma before it touches a result (`wgmma.wait_group 0`), so the exponent of a block runs while
the tensor cores idle. Here, for KV block j:

    issue S_j = Q K_j^T            (async wgmma)
    issue O  += P_{j-1} V_{j-1}    (async, after O *= alpha_{j-1})
    wait until one wgmma is left   (S_j is ready, P_{j-1} V_{j-1} still runs)
    softmax of S_j                 (exp2, max, sum on the SFU and FP32 units, beside the P V)
    wait for the P V

one warpgroup per BLOCK_M = 64 query rows (4 warps), so that two programs share an SM and fill
each other's gaps. K and V stream through rings of shared memory by TMA (K_STAGES and V_STAGES
deep), each slot with its own mbarrier; a slot is refilled once every warp is past the wgmma that
read it. This is FlashAttention-3's intra-warpgroup pipelining (Shah et al. 2024, Alg. 2),
without its producer warp: `kernels.attention_hopper_ws` adds it, with two consumers sharing
each K/V tile.

On an H200 (causal, 32 query and 8 KV heads of 128, bf16) this kernel is fastest for short
sequences (S <= 2048); beyond, the warp-specialized kernel is: a 64-row program reads every K/V
tile for half as many rows (twice the shared-memory and L2 traffic per flop), and 128 rows on
two warpgroups here (8 warps) meet at every slot's CTA barrier, in step, and ran slower still.

Q, K, V are read through 2-D descriptors over [B * H * S, D] rows: a tile that runs past its
head's S rows reads the next head's rows (finite values, masked out of the scores as key >= S,
or belonging to query rows that are never stored) or, past the tensor, zeros. Causal programs
stop at the diagonal; blocks that hold a key >= the program's first query row (or >= S) are
masked. BLOCK_M must be a multiple of BLOCK_N or BLOCK_N of BLOCK_M (the diagonal test is per
block).
"""

from __future__ import annotations

import torch
import triton

try:  # Gluon: Triton >= 3.5
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.hopper import (
        mbarrier,
        tma,
        warpgroup_mma,
        warpgroup_mma_wait,
    )
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    HAS_GLUON = True
except ImportError:  # pragma: no cover - older Triton: the pointer kernel serves
    HAS_GLUON = False

from ._util import LOG2E, _capability, has_tma, tma_compatible

# The head dimensions this kernel is built and checked for (wgmma N = head_dim; one warpgroup's
# accumulator of 64 x 128 fp32 is 64 registers a thread).
HEAD_DIMS = (64, 128)
# (BLOCK_M, BLOCK_N, K_STAGES, V_STAGES, num_warps, Q_REGS); 64 x 64 with 3 + 3 stages is 112
# KiB of shared memory: two programs per SM. Q as the register operand of Q K^T (Q_REGS) ran 1.5-5%
# faster on an H200; 128 rows (one warpgroup on 32-key blocks, or two on 64 or 128) ran slower.
CONFIGS = ((64, 64, 3, 3, 4, True), (64, 64, 4, 2, 4, True), (64, 64, 2, 2, 4, True))


def supported(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """True where this kernel runs: Gluon present, a Hopper GPU (sm_90: wgmma), fp16/bf16,
    head_dim 64 or 128, contiguous [B, H, S, D] tensors whose [rows, D] views can back TMA
    descriptors, and rows that fit TMA's 32-bit coordinates."""
    if not HAS_GLUON or not has_tma(q.device):
        return False
    if (
        _capability(q.device.index if q.device.index is not None else torch.cuda.current_device())[
            0
        ]
        != 9
    ):
        return False
    if q.dtype not in (torch.float16, torch.bfloat16) or q.shape[-1] not in HEAD_DIMS:
        return False
    if not all(t.is_contiguous() for t in (q, k, v)):
        return False
    d = q.shape[-1]
    return tma_compatible(q.view(-1, d), k.view(-1, d), v.view(-1, d)) and q.numel() // d < 2**31


if HAS_GLUON:
    # Names that moved between Triton releases (3.6 and later).
    _tma_load = getattr(tma, "async_load", None) or tma.async_copy_global_to_shared
    _cta_barrier = getattr(gl, "barrier", None) or gl.thread_barrier

    @gluon.jit
    def _softmax(s, m_i, l_i, qk_scale):
        """Online softmax of one score block: (P, alpha, new row max, new row sum)."""
        m_new = gl.maximum(m_i, gl.max(s, 1) * qk_scale)
        p = gl.exp2(s * qk_scale - m_new[:, None])
        alpha = gl.exp2(m_i - m_new)
        return p, alpha, m_new, l_i * alpha + gl.sum(p, 1)

    @gluon.jit
    def _mask(s, offs_m, cols, seq_len, CAUSAL: gl.constexpr):
        keep = cols[None, :] < seq_len
        if CAUSAL:
            keep = keep & (offs_m[:, None] >= cols[None, :])
        return gl.where(keep, s, float("-inf"))

    @gluon.jit
    def _issue_pv(p, alpha, acc, v_tile, row_o: gl.constexpr, p_layout: gl.constexpr):
        """O *= alpha, then O += P V issued as an async wgmma with P in registers; returns its
        token and the P operand (which must live until the product is waited for)."""
        acc = acc * gl.convert_layout(alpha, row_o)[:, None]
        p_op = gl.convert_layout(p.to(v_tile.dtype), p_layout)
        return warpgroup_mma(p_op, v_tile, acc, is_async=True), p_op

    @gluon.jit
    def _store(acc, l_i, o_head, row0, stride_os, seq_len, o_layout: gl.constexpr):
        """O = acc / l into rows row0 .. row0 + BLOCK_M of one head; rows >= seq_len are not."""
        rows = row0 + gl.arange(0, acc.shape[0], layout=gl.SliceLayout(1, o_layout))
        cols = gl.arange(0, acc.shape[1], layout=gl.SliceLayout(0, o_layout))
        o = acc / gl.convert_layout(l_i, gl.SliceLayout(1, o_layout))[:, None]
        o_ptrs = o_head + rows[:, None].to(gl.int64) * stride_os + cols[None, :]
        gl.store(o_ptrs, o.to(o_head.dtype.element_ty), mask=rows[:, None] < seq_len)

    @gluon.jit
    def _load(desc, smem, bar, row, slot):
        mbarrier.expect(bar.index(slot), desc.block_type.nbytes)
        _tma_load(desc, [row, 0], bar.index(slot), smem.index(slot))

    @gluon.jit
    def _attn_fwd_overlap(
        q_desc, k_desc, v_desc, o_ptr, qk_scale, seq_len, heads, group,
        stride_ob, stride_oh, stride_os,
        HEAD_DIM: gl.constexpr, CAUSAL: gl.constexpr, BLOCK_M: gl.constexpr,
        BLOCK_N: gl.constexpr, K_STAGES: gl.constexpr, V_STAGES: gl.constexpr,
        Q_REGS: gl.constexpr, num_warps: gl.constexpr,
    ):  # fmt: skip
        bh = gl.program_id(0)
        start_m = gl.num_programs(1) - 1 - gl.program_id(1)  # most expensive query blocks first
        b = bh // heads
        h = bh % heads
        kv_row0 = (b * (heads // group) + h // group) * seq_len
        # Scores and output in the wgmma accumulator layouts (one warpgroup per 64 rows); P as
        # the register A operand of the second product, converted in registers.
        s_layout: gl.constexpr = gl.NVMMADistributedLayout(
            version=[3, 0], warps_per_cta=[num_warps, 1], instr_shape=[16, BLOCK_N, 16]
        )
        o_layout: gl.constexpr = gl.NVMMADistributedLayout(
            version=[3, 0], warps_per_cta=[num_warps, 1], instr_shape=[16, HEAD_DIM, 16]
        )
        p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
        row_s: gl.constexpr = gl.SliceLayout(1, s_layout)
        row_o: gl.constexpr = gl.SliceLayout(1, o_layout)

        q_smem = gl.allocate_shared_memory(q_desc.dtype, q_desc.block_type.shape, q_desc.layout)
        k_smem = gl.allocate_shared_memory(
            k_desc.dtype, [K_STAGES] + k_desc.block_type.shape, k_desc.layout
        )
        v_smem = gl.allocate_shared_memory(
            v_desc.dtype, [V_STAGES] + v_desc.block_type.shape, v_desc.layout
        )
        q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
        k_bar = gl.allocate_shared_memory(gl.int64, [K_STAGES, 1], mbarrier.MBarrierLayout())
        v_bar = gl.allocate_shared_memory(gl.int64, [V_STAGES, 1], mbarrier.MBarrierLayout())
        mbarrier.init(q_bar, count=1)
        for i in gl.static_range(K_STAGES):
            mbarrier.init(k_bar.index(i), count=1)
        for i in gl.static_range(V_STAGES):
            mbarrier.init(v_bar.index(i), count=1)

        if CAUSAL:
            full_hi = start_m * BLOCK_M  # keys before the first query row: visible to all rows
            hi = gl.minimum((start_m + 1) * BLOCK_M, seq_len)
        else:
            full_hi = (seq_len // BLOCK_N) * BLOCK_N
            hi = seq_len
        n_blocks = gl.cdiv(hi, BLOCK_N)

        mbarrier.expect(q_bar, q_desc.block_type.nbytes)
        _tma_load(q_desc, [bh * seq_len + start_m * BLOCK_M, 0], q_bar, q_smem)
        for i in gl.static_range(K_STAGES):
            if i < n_blocks:
                _load(k_desc, k_smem, k_bar, kv_row0 + i * BLOCK_N, i)
        for i in gl.static_range(V_STAGES):
            if i < n_blocks:
                _load(v_desc, v_smem, v_bar, kv_row0 + i * BLOCK_N, i)

        offs_m = start_m * BLOCK_M + gl.arange(0, BLOCK_M, layout=row_s)
        offs_n = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, s_layout))
        s_zero = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, s_layout)

        # Block 0: scores and softmax; its P V is issued beside block 1's scores.
        mbarrier.wait(q_bar, 0)
        if Q_REGS:  # Q as the register A operand: the Q K^T product reads only K from shared
            q_a = q_smem.load(gl.DotOperandLayout(operand_index=0, parent=s_layout, k_width=2))
        else:
            q_a = q_smem
        mbarrier.wait(k_bar.index(0), 0)
        s = warpgroup_mma(q_a, k_smem.index(0).permute((1, 0)), s_zero, use_acc=False,
                          is_async=True)  # fmt: skip
        s = warpgroup_mma_wait(0, deps=(s,))
        _cta_barrier()  # every warp is past K_0: its slot takes block K_STAGES
        if n_blocks > K_STAGES:
            _load(k_desc, k_smem, k_bar, kv_row0 + K_STAGES * BLOCK_N, 0)
        if full_hi < BLOCK_N:
            s = _mask(s, offs_m, offs_n, seq_len, CAUSAL)
        m_i = gl.full([BLOCK_M], float("-inf"), gl.float32, row_s)
        l_i = gl.zeros([BLOCK_M], gl.float32, row_s)
        p, alpha, m_i, l_i = _softmax(s, m_i, l_i, qk_scale)
        acc = gl.zeros([BLOCK_M, HEAD_DIM], gl.float32, o_layout)

        for j in range(1, n_blocks):
            slot = j % K_STAGES
            prev = (j - 1) % V_STAGES
            mbarrier.wait(k_bar.index(slot), (j // K_STAGES) & 1)
            s_tok = warpgroup_mma(q_a, k_smem.index(slot).permute((1, 0)), s_zero,
                                  use_acc=False, is_async=True)  # fmt: skip
            mbarrier.wait(v_bar.index(prev), ((j - 1) // V_STAGES) & 1)
            o_tok, p_op = _issue_pv(p, alpha, acc, v_smem.index(prev), row_o, p_layout)
            # S_j is done, P_{j-1} V_{j-1} is not: the softmax below runs beside it.
            s = warpgroup_mma_wait(1, deps=(s_tok,))
            start_n = j * BLOCK_N
            if start_n + BLOCK_N > full_hi:
                s = _mask(s, offs_m, start_n + offs_n, seq_len, CAUSAL)
            p, alpha, m_i, l_i = _softmax(s, m_i, l_i, qk_scale)
            acc, p_op = warpgroup_mma_wait(0, deps=(o_tok, p_op))
            # Every warp is past K_j and V_{j-1}: their slots take the blocks a ring ahead.
            _cta_barrier()
            if j + K_STAGES < n_blocks:
                _load(k_desc, k_smem, k_bar, kv_row0 + (j + K_STAGES) * BLOCK_N, slot)
            if j - 1 + V_STAGES < n_blocks:
                _load(v_desc, v_smem, v_bar, kv_row0 + (j - 1 + V_STAGES) * BLOCK_N, prev)

        last = (n_blocks - 1) % V_STAGES
        mbarrier.wait(v_bar.index(last), ((n_blocks - 1) // V_STAGES) & 1)
        o_tok, p_op = _issue_pv(p, alpha, acc, v_smem.index(last), row_o, p_layout)
        acc, p_op = warpgroup_mma_wait(0, deps=(o_tok, p_op))
        mbarrier.invalidate(q_bar)
        for i in gl.static_range(K_STAGES):
            mbarrier.invalidate(k_bar.index(i))
        for i in gl.static_range(V_STAGES):
            mbarrier.invalidate(v_bar.index(i))
        o_head = o_ptr + b.to(gl.int64) * stride_ob + h.to(gl.int64) * stride_oh
        _store(acc, l_i, o_head, start_m * BLOCK_M, stride_os, seq_len, o_layout)


def descriptors(q, k, v, block_m: int, block_n: int) -> tuple:
    """TMA descriptors of q, k, v as [rows, D] with tiles [block_m or block_n, D]."""
    d = q.shape[-1]
    dtype = gl.bfloat16 if q.dtype == torch.bfloat16 else gl.float16
    out = []
    for t, rows in ((q, block_m), (k, block_n), (v, block_n)):
        flat = t.view(-1, d)
        layout = gl.NVMMASharedLayout.get_default_for([rows, d], dtype)
        out.append(TensorDescriptor(flat, list(flat.shape), [d, 1], [rows, d], layout))
    return tuple(out)


def launch(q, k, v, o, causal: bool, scale: float, cfg: dict):
    """One launch on a (B * Hq, S / BLOCK_M) grid; returns the compiled kernel."""
    b, hq, s, d = q.shape
    bm, bn = cfg["BLOCK_M"], cfg["BLOCK_N"]
    q_desc, k_desc, v_desc = descriptors(q, k, v, bm, bn)
    return _attn_fwd_overlap[(b * hq, triton.cdiv(s, bm))](
        q_desc, k_desc, v_desc, o, scale * LOG2E, s, hq, hq // k.shape[1],
        o.stride(0), o.stride(1), o.stride(2),
        HEAD_DIM=d, CAUSAL=bool(causal), BLOCK_M=bm, BLOCK_N=bn,
        K_STAGES=cfg["K_STAGES"], V_STAGES=cfg["V_STAGES"], Q_REGS=bool(cfg.get("Q_REGS")),
        num_warps=cfg["num_warps"],
    )  # fmt: skip


def configs() -> list[dict]:
    """The tuner's candidates, marked `overlap` (the launcher dispatches on it)."""
    return [
        {"BLOCK_M": bm, "BLOCK_N": bn, "K_STAGES": ks, "V_STAGES": vs, "num_warps": w,
         "Q_REGS": qr, "overlap": True}
        for bm, bn, ks, vs, w, qr in CONFIGS
    ]  # fmt: skip
