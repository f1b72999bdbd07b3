"""kernels/fused.py: each fused kernel against its float64 reference, outputs poisoned first.

Odd shapes: hidden sizes and intermediate sizes not powers of two, head_dim 80 and 96 (half
dimensions 40 and 48: masked), batches > 1, positions not at 0 and ragged across the batch.
"""

import pytest
import torch

from roofbench.kernels.fused import (
    add_rms_norm,
    add_rms_norm_reference,
    rope_kv_append,
    rope_kv_append_reference,
    silu_mul,
    silu_mul_reference,
)
from roofbench.kernels.llama import rope_tables

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Relative error of one rounding of the result (plus fp32 arithmetic inside), per dtype.
TOL = {"fp32": 1e-5, "fp16": 2e-3, "bf16": 1.6e-2}
POISON = float("nan")


def _randn(*shape, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen, dtype=torch.float64).to(DEVICE, DTYPES[dtype])


def _close(got, ref, dtype):
    err = (got.double() - ref).abs().max().item()
    return err <= TOL[dtype] * max(ref.abs().max().item(), 1.0), err


@pytest.mark.parametrize("rows,hidden", [(3, 72), (1, 200), (5, 1000)])
@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
@pytest.mark.parametrize("with_delta", [True, False], ids=["add", "norm_only"])
def test_add_rms_norm_matches_float64(rows, hidden, dtype, with_delta):
    residual = _randn(rows, hidden, dtype=dtype, seed=hidden)
    delta = _randn(rows, hidden, dtype=dtype, seed=hidden + 1) if with_delta else None
    weight = _randn(hidden, dtype=dtype, seed=hidden + 2)
    before = residual.clone()
    ref_y, ref_r = add_rms_norm_reference(delta, before, weight, 1e-5)
    y, r = add_rms_norm(delta, residual, weight, 1e-5)
    assert r is residual  # the residual is updated in place
    ok, err = _close(y, ref_y, dtype)
    assert ok, err
    ok, err = _close(r, ref_r, dtype)
    assert ok, err
    if not with_delta:
        assert torch.equal(residual, before)


def test_add_rms_norm_takes_strided_rows():
    """The last token of each sequence: rows of a [B, N, hidden] stream, N * hidden apart."""
    stream = _randn(3, 4, 56, dtype="fp32", seed=1)
    delta = _randn(3, 4, 56, dtype="fp32", seed=2)
    weight = _randn(56, dtype="fp32", seed=3)
    untouched = stream[:, :-1].clone()
    ref_y, ref_r = add_rms_norm_reference(delta[:, -1], stream[:, -1].clone(), weight, 1e-6)
    y, _ = add_rms_norm(delta[:, -1], stream[:, -1], weight, 1e-6)
    assert _close(y, ref_y, "fp32")[0] and _close(stream[:, -1], ref_r, "fp32")[0]
    assert torch.equal(stream[:, :-1], untouched)  # only the last rows were written


def _rope_case(batch, n, heads, kv_heads, head_dim, dtype, seed, max_seq=64):
    qkv = _randn(batch * n, (heads + 2 * kv_heads) * head_dim, dtype=dtype, seed=seed)
    cos, sin = rope_tables(head_dim, max_seq, DEVICE, DTYPES[dtype], theta=10000.0)
    return qkv, cos, sin


@pytest.mark.parametrize(
    "batch,n,heads,kv_heads,head_dim",
    [(3, 1, 4, 2, 16), (2, 5, 7, 1, 96), (2, 3, 6, 3, 80), (1, 2, 2, 2, 32)],
)
@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_rope_kv_append_matches_float64(batch, n, heads, kv_heads, head_dim, dtype):
    """Into a cache at ragged positions not at 0: K and V land at start[b] + n, nothing else
    in the cache changes, and Q comes back rotated in either layout."""
    qkv, cos, sin = _rope_case(batch, n, heads, kv_heads, head_dim, dtype, seed=head_dim)
    start = torch.tensor([5 + 11 * b for b in range(batch)], dtype=torch.int32, device=DEVICE)
    s_max = 40
    cache = torch.full(
        (2, batch, kv_heads, s_max, head_dim), POISON, dtype=DTYPES[dtype], device=DEVICE
    )
    ref_q, ref_k, ref_v, positions = rope_kv_append_reference(
        qkv, cos, sin, batch, heads, kv_heads, start
    )
    for outer in (False, True):
        q, k, v = rope_kv_append(
            qkv, cos, sin, batch, heads, kv_heads, start, cache[0], cache[1], q_heads_outer=outer
        )
        assert k is cache[0] or k.data_ptr() == cache[0].data_ptr()
        q_bnhd = q.transpose(1, 2) if outer else q
        assert q_bnhd.shape == (batch, n, heads, head_dim)
        assert _close(q_bnhd, ref_q, dtype)[0]
    for b in range(batch):  # the cache, per sequence at its own positions
        at = positions[b].to(DEVICE)
        assert _close(cache[0, b][:, at].transpose(0, 1), ref_k[b], dtype)[0]
        assert _close(cache[1, b][:, at].transpose(0, 1), ref_v[b], dtype)[0]
    written = torch.zeros(batch, s_max, dtype=torch.bool)
    for b in range(batch):
        written[b, positions[b]] = True
    rest = cache.permute(1, 3, 0, 2, 4)[~written.to(DEVICE)]
    assert rest.isnan().all()  # no position other than the rows' own was written


def test_rope_kv_append_allocates_k_and_v_at_positions_from_zero():
    """Without a cache (a naive step): K, V [B, Hkv, N, D] at positions 0..N-1."""
    qkv, cos, sin = _rope_case(2, 7, 4, 2, 48, "fp32", seed=4, max_seq=7)
    ref_q, ref_k, ref_v, _ = rope_kv_append_reference(qkv, cos, sin, 2, 4, 2)
    q, k, v = rope_kv_append(qkv, cos, sin, 2, 4, 2, q_heads_outer=True)
    assert k.shape == v.shape == (2, 2, 7, 48)
    assert _close(q.transpose(1, 2), ref_q, "fp32")[0]
    assert _close(k.transpose(1, 2), ref_k, "fp32")[0]
    assert _close(v.transpose(1, 2), ref_v, "fp32")[0]
    assert not torch.allclose(ref_k, qkv.double().reshape(2, 7, 8, 48)[:, :, 4:6])  # rotated


@pytest.mark.parametrize("rows,inter", [(1, 96), (3, 333), (2, 2100)])
@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_silu_mul_matches_float64(rows, inter, dtype):
    gate_up = _randn(rows, 2 * inter, dtype=dtype, seed=inter) * 3
    out = silu_mul(gate_up)
    assert out.shape == (rows, inter)
    ok, err = _close(out, silu_mul_reference(gate_up), dtype)
    assert ok, err


def test_bad_shapes_are_refused():
    x = _randn(2, 8, dtype="fp32", seed=0)
    with pytest.raises(ValueError, match="weight"):
        add_rms_norm(None, x, x[0, :4], 1e-5)
    with pytest.raises(ValueError, match="2 I"):
        silu_mul(x[:, :7])
    cos, sin = rope_tables(4, 8, DEVICE, torch.float32)
    with pytest.raises(ValueError, match="sequences"):
        rope_kv_append(_randn(3, 16, dtype="fp32", seed=0), cos, sin, 2, 2, 1)
    with pytest.raises(ValueError, match="int32"):
        rope_kv_append(x.repeat(1, 2), cos, sin, 2, 2, 1, torch.zeros(2, dtype=torch.int64))


# --- on the GPU, in bf16 at real sizes ---------------------------------------------------------


@pytest.mark.gpu
def test_fused_kernels_in_bf16_at_llama3_8b_sizes():
    batch, hidden, inter, heads, kv_heads, d = 16, 4096, 14336, 32, 8, 128
    residual = _randn(batch, hidden, dtype="bf16", seed=1)
    delta = _randn(batch, hidden, dtype="bf16", seed=2)
    weight = _randn(hidden, dtype="bf16", seed=3)
    ref_y, ref_r = add_rms_norm_reference(delta, residual.clone(), weight, 1e-5)
    y, r = add_rms_norm(delta, residual, weight, 1e-5)
    assert _close(y, ref_y, "bf16")[0] and _close(r, ref_r, "bf16")[0]

    gate_up = _randn(batch, 2 * inter, dtype="bf16", seed=4)
    assert _close(silu_mul(gate_up), silu_mul_reference(gate_up), "bf16")[0]

    s_max = 4096
    qkv, cos, sin = _rope_case(batch, 1, heads, kv_heads, d, "bf16", seed=5, max_seq=s_max)
    start = torch.randint(0, s_max, (batch,), dtype=torch.int32, device=DEVICE)
    cache = torch.full((2, batch, kv_heads, s_max, d), POISON, dtype=torch.bfloat16, device=DEVICE)
    ref_q, ref_k, ref_v, positions = rope_kv_append_reference(
        qkv, cos, sin, batch, heads, kv_heads, start
    )
    q, _, _ = rope_kv_append(qkv, cos, sin, batch, heads, kv_heads, start, cache[0], cache[1])
    assert _close(q, ref_q, "bf16")[0]
    rows = torch.arange(batch, device=DEVICE)
    at = start.long()
    assert _close(cache[0][rows, :, at], ref_k[:, 0], "bf16")[0]
    assert _close(cache[1][rows, :, at], ref_v[:, 0], "bf16")[0]
    assert cache.isnan().sum().item() == 2 * batch * kv_heads * (s_max - 1) * d
