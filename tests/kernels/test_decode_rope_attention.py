"""Rotary + KV append + split-KV decode attention in one kernel, against a float64 oracle: odd head
dimensions, GQA groups including 7, ragged positions (0 and the cache's last included), one and
several slices, the cache written where it should be and nowhere else, the counters left at 0."""

import pytest
import torch

from roofbench.kernels import decode_attention as dec
from roofbench.kernels import decode_rope_attention as fused
from roofbench.kernels.decode_rope_attention import (
    launch_plan,
    rope_decode_attention,
    rope_decode_attention_reference,
)
from roofbench.kernels.fused import rope_kv_append
from roofbench.kernels.llama import rope_tables
from roofbench.kernels.spec import TOLERANCE

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _inputs(batch, heads, kv_heads, head_dim, s_max, positions, dtype, seed=0):
    gen = torch.Generator(device=DEVICE).manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=gen, device=DEVICE, dtype=torch.float32).to(dtype)

    qkv = rand(batch, (heads + 2 * kv_heads) * head_dim)
    cos, sin = rope_tables(head_dim, s_max, DEVICE, dtype, 10000.0)
    k, v = rand(batch, kv_heads, s_max, head_dim), rand(batch, kv_heads, s_max, head_dim)
    pos = torch.tensor(positions, dtype=torch.int32, device=DEVICE)
    return qkv, cos, sin, pos, k, v


def _rel(out, ref) -> float:
    return ((out.double() - ref).norm() / ref.norm()).item()


CASES = [  # batch, Hq, Hkv, head_dim, s_max, positions
    (2, 8, 2, 64, 40, [5, 33]),  # two slices each
    (3, 7, 1, 96, 70, [0, 12, 69]),  # group 7, position 0 and the cache's last
    (1, 4, 4, 80, 20, [19]),  # MHA, one slice (direct)
    (2, 28, 4, 128, 300, [100, 257]),  # group 7, several slices
    (1, 16, 1, 256, 50, [31]),  # group 16, head_dim 256
]


@pytest.mark.parametrize("batch, heads, kv_heads, head_dim, s_max, positions", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_matches_float64_and_writes_the_new_key(
    batch, heads, kv_heads, head_dim, s_max, positions, dtype
):
    qkv, cos, sin, pos, k, v = _inputs(batch, heads, kv_heads, head_dim, s_max, positions, dtype)
    k_ref, v_ref = k.clone(), v.clone()
    ref = rope_decode_attention_reference(qkv, cos, sin, heads, kv_heads, pos, k_ref, v_ref)
    for _ in range(2):  # a second call reuses the counters the first left at 0
        out = rope_decode_attention(qkv, cos, sin, heads, kv_heads, pos, k, v)
        assert out.shape == (batch, heads, head_dim) and out.dtype == dtype
        assert _rel(out, ref) <= TOLERANCE["fp16" if dtype == torch.float16 else "fp32"]
    # K rotated and V at each position, in the cache's dtype; every other cache entry untouched
    assert torch.allclose(k.double(), k_ref.double(), rtol=0, atol=2e-3 * k_ref.abs().max())
    assert torch.equal(v, v_ref)
    rows = torch.arange(batch, device=DEVICE)
    k[rows, :, pos.long()] = 0
    k_ref[rows, :, pos.long()] = 0
    assert torch.equal(k, k_ref)
    assert all(int(c.abs().sum()) == 0 for c in fused._COUNTERS.values())


def test_one_and_several_slices_both_run():
    """The CASES take the direct path and the combine by the last slice (the plan decides)."""
    sms = 132 if DEVICE.type == "cpu" else torch.cuda.get_device_properties(0).multi_processor_count
    splits = {dec.plan(b, kv, s, sms)["num_splits"] > 1 for b, _, kv, _, s, _ in CASES}
    assert splits == {True, False}


def test_keys_past_the_new_position_are_ignored():
    qkv, cos, sin, pos, k, v = _inputs(1, 8, 2, 64, 64, [20], torch.float32)
    before = rope_decode_attention(qkv, cos, sin, 8, 2, pos, k, v)
    k[:, :, 21:] = 1e4
    v[:, :, 21:] = float("nan")
    assert torch.equal(rope_decode_attention(qkv, cos, sin, 8, 2, pos, k, v), before)


def test_same_as_rotary_append_then_decode_attention():
    """The three kernels it replaces, on the same inputs, give the same output and cache."""
    batch, heads, kv_heads, d, s_max = 2, 8, 2, 64, 48
    qkv, cos, sin, pos, k, v = _inputs(batch, heads, kv_heads, d, s_max, [7, 40], torch.float32)
    k2, v2 = k.clone(), v.clone()
    out = rope_decode_attention(qkv, cos, sin, heads, kv_heads, pos, k, v)
    q, _, _ = rope_kv_append(qkv, cos, sin, batch, heads, kv_heads, pos, k2, v2)
    three = dec.decode_attention(q[:, 0], k2, v2, pos + 1)
    assert torch.equal(k, k2) and torch.equal(v, v2)
    assert _rel(out, three.double()) <= 1e-5


@pytest.mark.parametrize(
    "change, match",
    [
        ({"head_dim": 63}, "head_dim"),
        ({"positions": "int64"}, "positions"),
        ({"qkv_cols": -1}, "do not match"),
    ],
)
def test_bad_inputs_are_refused(change, match):
    d = change.get("head_dim", 64)
    qkv, cos, sin, pos, k, v = _inputs(1, 4, 2, 64, 16, [3], torch.float32)
    if "head_dim" in change:  # an odd head_dim has no rotary pairs
        k, v = k[..., :d], v[..., :d]
        qkv = torch.zeros(1, 8 * d, device=DEVICE)
    if "positions" in change:
        pos = pos.long()
    if "qkv_cols" in change:
        qkv = qkv[:, :-1]
    with pytest.raises(ValueError, match=match):
        rope_decode_attention(qkv, cos, sin, 4, 2, pos, k, v)


def test_plan_is_one_kernel_on_the_split_grid():
    split = dec.launch_plan(1, 32, 8, 513, 128, 132)
    one = launch_plan(1, 32, 8, 513, 128, 132)
    assert split.launches == 2 and one.launches == 1
    (kernel,) = one.kernels
    first = split.kernels[0]
    assert (kernel.grid, kernel.tile, kernel.splits) == (first.grid, first.tile, first.splits)
    assert kernel.partial_bytes == 2 * first.partial_bytes > 0  # written, then read back
    assert kernel.inflight_bytes == first.inflight_bytes


@pytest.mark.gpu
@pytest.mark.parametrize("batch, heads, kv_heads, head_dim, s_max, positions", CASES)
@pytest.mark.parametrize("pdl", [False, True])
def test_bf16_on_the_gpu(batch, heads, kv_heads, head_dim, s_max, positions, pdl):
    qkv, cos, sin, pos, k, v = _inputs(
        batch, heads, kv_heads, head_dim, s_max, positions, torch.bfloat16
    )
    k_ref, v_ref = k.clone(), v.clone()
    ref = rope_decode_attention_reference(qkv, cos, sin, heads, kv_heads, pos, k_ref, v_ref)
    for _ in range(3):
        out = rope_decode_attention(qkv, cos, sin, heads, kv_heads, pos, k, v, pdl=pdl)
        torch.cuda.synchronize()
        assert _rel(out, ref) <= TOLERANCE["bf16"]
    assert torch.equal(v, v_ref)
    assert all(int(c.abs().sum()) == 0 for c in fused._COUNTERS.values())


@pytest.mark.gpu
def test_llama3_8b_long_context_on_the_gpu():
    """Llama 3 8B's heads at batch 1 and 16, contexts 512 and 8192: many slices per sequence."""
    for batch, ctx in ((1, 512), (1, 8192), (16, 2048)):
        positions = [ctx - 1 - 37 * i for i in range(batch)]
        qkv, cos, sin, pos, k, v = _inputs(batch, 32, 8, 128, ctx, positions, torch.bfloat16)
        k_ref, v_ref = k.clone(), v.clone()
        ref = rope_decode_attention_reference(qkv, cos, sin, 32, 8, pos, k_ref, v_ref)
        out = rope_decode_attention(qkv, cos, sin, 32, 8, pos, k, v)
        assert _rel(out, ref) <= TOLERANCE["bf16"], (batch, ctx)
