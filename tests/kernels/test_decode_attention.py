"""Decode attention over a ragged KV cache against a float64 oracle: split-KV and direct paths,
GQA 1/4/8, and the SDPA baseline."""

import pytest
import torch

from roofbench.kernels.check import check
from roofbench.kernels.decode_attention import decode_attention, plan
from roofbench.kernels.ops.decode_attention import DecodeAttentionCase

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
RAGGED = (1, 37, 200)


def DecodeCase(heads, kv_heads, lens, head_dim, dtype="bf16", s_max=None):  # noqa: N802
    """A decode case from per-sequence lengths (a ragged batch where they differ)."""
    return DecodeAttentionCase.ragged(lens, heads, kv_heads, head_dim, dtype=dtype, s_max=s_max)


@pytest.mark.parametrize(
    "heads, kv_heads, head_dim, dtype",
    [(8, 8, 64, "fp16"), (8, 2, 64, "fp16"), (8, 1, 128, "fp32")],  # GQA ratios 1, 4, 8
)
def test_decode_matches_float64(heads, kv_heads, head_dim, dtype):
    res = check("triton", DecodeCase(heads, kv_heads, RAGGED, head_dim, dtype), DEVICE)
    assert res.ok, res


@pytest.mark.parametrize("num_splits", [1, 3, 40])  # direct; uneven slices; slices past the end
def test_decode_num_splits(num_splits):
    def fixed(q, k, v, lens, out):
        return decode_attention(q, k, v, lens, num_splits=num_splits, out=out)

    res = check(fixed, DecodeCase(4, 2, (5, 130), 64, "fp32", s_max=160), DEVICE)
    assert res.ok, res


def test_sdpa_reference_passes_the_same_gate():
    res = check("torch", DecodeCase(8, 2, RAGGED, 64, "fp32"), DEVICE)
    assert res.ok, res


def test_cache_past_the_context_is_ignored():
    case = DecodeCase(4, 2, (20,), 64, "fp32", s_max=64)
    q, k, v, lens = case.make_inputs(DEVICE, 0)
    before = decode_attention(q, k, v, lens)
    k[:, :, 20:] = 1e4
    v[:, :, 20:] = float("nan")
    assert torch.equal(decode_attention(q, k, v, lens), before)


def test_plan_fills_one_wave():
    assert plan(1, 8, 4096, 132)["num_splits"] == 16  # 128 programs on 132 SMs
    assert plan(32, 8, 8192, 132)["num_splits"] == 1  # 256 streams already fill the GPU
    assert plan(1, 8, 64, 132)["num_splits"] * 2 * plan(1, 8, 64, 132)["BLOCK_N"] >= 64


@pytest.mark.gpu
@pytest.mark.parametrize(
    "heads, kv_heads, context_lens, dtype",
    [
        (32, 8, (4096,), "bf16"),
        (32, 8, (32768,), "bf16"),
        (32, 8, (1, 37, 200, 1000, 4097, 8192), "bf16"),
        (32, 32, (100, 3000), "bf16"),
        (32, 4, (777, 5), "fp16"),
        (16, 2, (513,), "fp32"),
    ],
)
@pytest.mark.parametrize("impl", ["triton", "torch"])
def test_decode_gpu(impl, heads, kv_heads, context_lens, dtype):
    res = check(impl, DecodeCase(heads, kv_heads, context_lens, 128, dtype), "cuda")
    assert res.ok, res


@pytest.mark.gpu
def test_decode_gpu_batch32():
    res = check("triton", DecodeCase(32, 8, (8192,) * 32, 128, "bf16"), "cuda")
    assert res.ok, res
