"""The correctness gate rejects wrong kernels for the right reason and passes the real ones."""

import dataclasses

import pytest
import torch

from roofbench.kernels.attention import attention
from roofbench.kernels.catalog import op_names
from roofbench.kernels.check import check
from roofbench.kernels.decode_attention import decode_attention
from roofbench.kernels.gemm import gemm, gemm_reference
from roofbench.kernels.gemv import gemv
from roofbench.kernels.ops.decode_attention import DecodeAttentionCase
from roofbench.kernels.ops.gemm import GemmCase
from roofbench.kernels.ops.gemv import GemvCase
from roofbench.kernels.ops.prefill_attention import PrefillAttentionCase as AttentionCase
from roofbench.kernels.spec import TOLERANCE, dtype_name

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BLOCK_K = 16  # the GEMM's K step under the interpreter (and a divisor of every GPU one)


def DecodeCase(heads, kv_heads, lens, head_dim, dtype="bf16", s_max=None):  # noqa: N802
    """A decode case from per-sequence lengths (a ragged batch where they differ)."""
    return DecodeAttentionCase.ragged(lens, heads, kv_heads, head_dim, dtype=dtype, s_max=s_max)


CASES = {
    "gemm": GemmCase(5, 24, 48, "fp16"),
    "gemv": GemvCase(1, 24, 48, "fp32"),
    "prefill_attention": AttentionCase(1, 4, 2, 37, 64, True, "fp16"),
    "decode_attention": DecodeCase(4, 2, (3, 50), 64, "fp16"),
}


@pytest.mark.parametrize("op", sorted(CASES))
@pytest.mark.parametrize("impl", ["triton", "torch"])
def test_real_implementations_pass(op, impl):
    res = check(impl, CASES[op], DEVICE)
    assert res.ok, res
    assert res.rel_err <= res.tol and res.reason == "ok"


def test_every_registered_op_has_a_case_here():
    assert set(op_names()) == {case.op for case in CASES.values()}


# Deliberately wrong implementations. Each must be rejected, for the reason it is wrong.


def gemm_drops_last_k_block(a, w, out):
    k = a.shape[1] - BLOCK_K
    return gemm(a[:, :k].contiguous(), w[:, :k].contiguous(), out=out)


def gemv_leaves_last_column_unwritten(x, w, out):
    out[:, :-1] = gemv(x, w[:-1])
    return out


def attention_ignores_causal_mask(q, k, v, causal, out):
    return attention(q, k, v, causal=False, out=out)


def decode_ignores_context_lens(q, k, v, lens, out):
    return decode_attention(q, k, v, torch.full_like(lens, k.shape[2]), out=out)


def gemm_returns_a_fresh_tensor(a, w, out):
    return gemm(a, w)


def gemm_raises(a, w, out):
    raise RuntimeError("no kernel image")


def gemm_one_element_off(a, w, out):
    """Right everywhere but one element: the norm over 64K outputs barely moves."""
    gemm_reference(a, w, out=out)
    out[7, 9] += 0.5
    return out


@pytest.mark.parametrize(
    "wrong, case, why",
    [
        (gemm_drops_last_k_block, GemmCase(4, 16, 64, "fp32"), "relative error"),
        (gemv_leaves_last_column_unwritten, GemvCase(1, 20, 40, "fp32"), "NaN"),
        (attention_ignores_causal_mask, AttentionCase(1, 2, 1, 40, 64, True, "fp32"), "relative"),
        (decode_ignores_context_lens, DecodeCase(4, 2, (3, 50), 64, "fp32"), "relative error"),
        (gemm_returns_a_fresh_tensor, GemmCase(4, 16, 32, "fp32"), "out="),
        (gemm_raises, GemmCase(4, 16, 32, "fp32"), "raised RuntimeError"),
        (gemm_one_element_off, GemmCase(256, 256, 64, "fp32"), "max abs error"),
    ],
)
def test_gate_rejects_wrong_kernels(wrong, case, why):
    res = check(wrong, case, DEVICE)
    assert not res.ok
    assert why in res.reason, res


def test_nan_never_passes():
    def one_nan(a, w, out):
        gemm_reference(a, w, out=out)
        out[0, 0] = float("nan")
        return out

    res = check(one_nan, GemmCase(8, 8, 8, "fp32"), DEVICE)
    assert not res.ok and "NaN" in res.reason


def test_inputs_are_fresh_random_and_nonzero():
    case = GemmCase(16, 16, 16, "fp32")
    a1, _ = case.make_inputs(DEVICE, 1)
    a2, _ = case.make_inputs(DEVICE, 2)
    again, _ = case.make_inputs(DEVICE, 1)
    assert torch.equal(a1, again) and not torch.equal(a1, a2)
    assert (a1 != 0).float().mean() > 0.99
    seeds = {check("torch", case, DEVICE).seed for _ in range(3)}
    assert len(seeds) == 3


def test_fp32_error_matches_the_arithmetic():
    # The interpreter computes fp32 dots exactly in fp32 (~1e-7); the GPU runs them as tf32
    # (unit roundoff 4.9e-4, ~3e-4 typical).
    bound = 1e-5 if DEVICE == "cpu" else 1e-3
    res = check("triton", GemmCase(8, 24, 200, "fp32"), DEVICE)
    assert res.ok and res.rel_err < bound, res


def test_tolerance_table_follows_the_precision_of_each_dtype():
    assert set(TOLERANCE) == {"fp32", "fp16", "bf16"}
    # bf16 keeps 8 mantissa bits against fp16's 11: its bound must be looser.
    assert TOLERANCE["bf16"] > TOLERANCE["fp16"]
    assert all(0 < t <= 1e-2 for t in TOLERANCE.values())


def test_cases_accept_short_dtype_names_and_stay_frozen():
    case = AttentionCase(1, 2, 2, 8, 64, dtype=torch.bfloat16)
    assert case.dtype == "bf16" and case.torch_dtype is torch.bfloat16
    with pytest.raises(dataclasses.FrozenInstanceError):
        case.seq = 9
    assert DecodeCase(2, 1, [3, 9], 64).s_max == 9
    assert dtype_name("float16") == "fp16" and dtype_name(torch.float32) == "fp32"
