"""theory/ops: op costs against brute-force counts and the properties the seeds rely on."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roofbench.theory import ops
from roofbench.theory.hardware import get_gpu
from roofbench.theory.roofline import Roof

sizes = st.integers(min_value=1, max_value=4096)


def test_gemm_counts_multiply_adds_and_each_operand_once():
    cost = ops.gemm(3, 5, 7, "bf16")
    assert cost.flops == 2 * 3 * 5 * 7
    assert cost.bytes_ == (3 * 7 + 5 * 7 + 3 * 5) * 2
    assert ops.gemm(3, 5, 7, "fp32").bytes_ == 2 * cost.bytes_


@pytest.mark.parametrize("queries,keys", [(1, 1), (4, 4), (7, 7), (1, 9), (3, 10), (10, 10)])
def test_causal_pairs_match_a_brute_force_count(queries, keys):
    offset = keys - queries
    brute = sum(1 for i in range(queries) for j in range(keys) if j <= offset + i)
    assert ops.causal_pairs(queries, keys) == brute


@given(
    seq=st.integers(2, 1 << 16), heads=st.sampled_from([8, 32, 64]), d=st.sampled_from([64, 128])
)
def test_causal_flops_are_fewer_than_full_but_more_than_half(seq, heads, d):
    causal = ops.prefill_attention(1, heads, 8, seq, d, causal=True).flops
    full = ops.prefill_attention(1, heads, 8, seq, d, causal=False).flops
    assert full / 2 < causal < full


@given(
    batch=st.integers(1, 64),
    group=st.sampled_from([1, 2, 4, 8]),
    kv_heads=st.sampled_from([1, 2, 8]),
    context=st.integers(1, 1 << 17),
    d=st.sampled_from([64, 128]),
)
def test_gqa_kv_bytes_are_mha_bytes_times_kv_heads_over_heads(batch, group, kv_heads, context, d):
    heads = group * kv_heads
    gqa = ops.decode_attention(batch, heads, kv_heads, context, d)
    mha = ops.decode_attention(batch, heads, heads, context, d)
    qo_bytes = 2 * batch * heads * d * 2  # q read and o written, the same in both layouts
    assert gqa.flops == mha.flops
    assert gqa.bytes_ - qo_bytes == pytest.approx((mha.bytes_ - qo_bytes) * kv_heads / heads)


@given(n=sizes, k=sizes)
def test_gemm_intensity_grows_with_m_up_to_the_ridge(n, k):
    ridge = Roof.from_spec(get_gpu("h100-sxm")).ridge
    m, last = 1, 0.0
    while m <= 1 << 16:
        intensity = ops.gemm(m, n, k).intensity
        assert intensity > last
        if intensity >= ridge:
            break
        last, m = intensity, m * 2


def test_decode_attention_of_a_ragged_batch_is_the_sum_of_its_sequences():
    ragged = ops.decode_attention(3, 32, 8, [1, 37, 200], 128)
    parts = [ops.decode_attention(1, 32, 8, n, 128) for n in (1, 37, 200)]
    assert ragged.flops == sum(p.flops for p in parts)
    assert ragged.bytes_ == sum(p.bytes_ for p in parts)


def test_a_reduction_reads_every_byte_once_and_adds_each_element():
    cost = ops.read(1 << 30, element_bytes=4)
    assert cost.bytes_ == (1 << 30) + 4
    assert cost.flops == (1 << 30) // 4


def test_copy_counts_read_and_write_and_does_no_arithmetic():
    cost = ops.copy(1 << 30)
    assert cost.bytes_ == 2 * (1 << 30)
    assert cost.intensity == 0.0


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: ops.gemm(0, 1, 1), "m must be positive"),
        (lambda: ops.prefill_attention(1, 32, 5, 16, 64), "multiple of KV heads"),
        (lambda: ops.decode_attention(2, 8, 8, [4], 64), "2 context lengths|1 context lengths"),
        (lambda: ops.causal_pairs(5, 4), "cannot exceed"),
        (lambda: ops.gemm(1, 1, 1, "fp4"), "unknown dtype"),
    ],
)
def test_bad_sizes_are_refused_with_a_message(call, message):
    with pytest.raises(ValueError, match=message):
        call()
