"""Any head_dim from 16 to 256 and any GQA group, in both Triton attention kernels: the head
dimension is padded to a power of two inside and masked, heads are grouped with padding rows.
CPU: the interpreter in fp16/fp32; GPU: bf16 (marked, skipped without one)."""

import pytest
import torch

from roofbench.kernels.attention import attention
from roofbench.kernels.check import check
from roofbench.kernels.decode_attention import decode_attention
from roofbench.kernels.ops.decode_attention import DecodeAttentionCase
from roofbench.kernels.ops.prefill_attention import PrefillAttentionCase

HEAD_DIMS = (64, 80, 96, 112, 128, 256)
GROUPS = ((28, 4), (8, 8), (16, 1), (14, 2))  # groups 7, 1, 16, 7


@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_prefill_takes_any_head_dim(head_dim, dtype):
    case = PrefillAttentionCase(
        batch=1, heads=2, kv_heads=1, seq=40, head_dim=head_dim, dtype=dtype
    )
    res = check(attention, case, "cpu")
    assert res.ok, res.reason


@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_decode_takes_any_head_dim(head_dim, dtype):
    case = DecodeAttentionCase.ragged((9, 40), heads=4, kv_heads=2, head_dim=head_dim, dtype=dtype)
    res = check(decode_attention, case, "cpu")
    assert res.ok, res.reason


@pytest.mark.parametrize("heads,kv_heads", GROUPS)
def test_any_gqa_group_including_seven(heads, kv_heads):
    prefill = PrefillAttentionCase(1, heads, kv_heads, 24, 64, dtype="fp32")
    assert check(attention, prefill, "cpu").ok
    decode = DecodeAttentionCase.ragged((5, 33), heads, kv_heads, 96, dtype="fp32")
    assert check(decode_attention, decode, "cpu").ok


def test_a_head_dim_outside_the_range_is_refused():
    q = torch.randn(1, 2, 8, 320)
    with pytest.raises(ValueError, match="16..256"):
        attention(q, q[:, :1], q[:, :1])


@pytest.mark.gpu
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
def test_bf16_on_the_gpu_at_every_head_dim(head_dim):
    prefill = PrefillAttentionCase(2, 28, 4, 1000, head_dim, dtype="bf16")
    assert check(attention, prefill, "cuda").ok
    decode = DecodeAttentionCase.ragged((100, 3000), 28, 4, head_dim, dtype="bf16")
    assert check(decode_attention, decode, "cuda").ok
