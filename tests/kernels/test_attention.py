"""Flash-attention forward against a float64 oracle: causal and not, GQA 1/4/8, ragged S."""

import pytest
import torch

from roofbench.kernels.attention import attention
from roofbench.kernels.check import check
from roofbench.kernels.ops.prefill_attention import PrefillAttentionCase as AttentionCase

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize(
    "batch, heads, kv_heads, seq, head_dim, dtype",
    [
        (1, 4, 4, 77, 64, "fp16"),  # MHA, S not a multiple of the block
        (1, 4, 1, 40, 128, "fp32"),  # GQA 4, d=128
        (2, 8, 1, 33, 64, "fp16"),  # GQA 8, two sequences
        (1, 2, 2, 1, 64, "fp32"),  # a single token
    ],
)
@pytest.mark.parametrize("causal", [True, False])
def test_attention_matches_float64(batch, heads, kv_heads, seq, head_dim, dtype, causal):
    case = AttentionCase(batch, heads, kv_heads, seq, head_dim, causal, dtype)
    res = check("triton", case, DEVICE)
    assert res.ok, res


@pytest.mark.parametrize("causal", [True, False])
def test_sdpa_reference_passes_the_same_gate(causal):
    res = check("torch", AttentionCase(1, 4, 2, 50, 64, causal, "fp32"), DEVICE)
    assert res.ok, res


def test_causal_differs_from_full_attention():
    q, k, v = AttentionCase(1, 2, 2, 32, 64, True, "fp32").make_inputs(DEVICE, 0)
    causal = attention(q, k, v, causal=True)
    full = attention(q, k, v, causal=False)
    assert torch.allclose(causal[:, :, -1], full[:, :, -1], atol=1e-5)  # last row sees all keys
    assert not torch.allclose(causal[:, :, 0], full[:, :, 0], atol=1e-2)


def test_attention_rejects_bad_group():
    q = torch.randn(1, 3, 8, 64, device=DEVICE)
    k = torch.randn(1, 2, 8, 64, device=DEVICE)
    with pytest.raises(ValueError):
        attention(q, k, k)


@pytest.mark.gpu
@pytest.mark.parametrize(
    "batch, heads, kv_heads, seq, head_dim, dtype",
    [
        (1, 32, 8, 1000, 128, "bf16"),
        (1, 32, 8, 4096, 128, "bf16"),
        (2, 8, 8, 2048, 64, "bf16"),
        (1, 16, 2, 513, 128, "fp16"),
        (1, 8, 1, 300, 64, "fp32"),
    ],
)
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("impl", ["triton", "torch"])
def test_attention_gpu(impl, batch, heads, kv_heads, seq, head_dim, dtype, causal):
    case = AttentionCase(batch, heads, kv_heads, seq, head_dim, causal, dtype)
    res = check(impl, case, "cuda")
    assert res.ok, res


def test_the_plan_is_the_configuration_tuned_for_its_dtype(monkeypatch):
    """One shape tuned in two dtypes: each dtype's plan names the kernel its own tuning kept."""
    import torch

    from roofbench.kernels import attention as A

    monkeypatch.setattr(A, "is_interpreter", lambda: False)  # the tuner's real candidates
    ws, ptr = A._configs(overlap=True)[0], A._configs()[0]
    monkeypatch.setattr(A._TUNER, "cache", {})
    A._TUNER.cache[A._key(32, 4096, 128, True, torch.float32)] = ptr
    A._TUNER.cache[A._key(32, 4096, 128, True, torch.bfloat16, overlap=True)] = ws
    name = lambda dtype: A.launch_plan(1, 32, 4096, 128, True, dtype).kernels[0].name  # noqa: E731
    assert name(torch.float32) == "attn_fwd"
    assert name(torch.bfloat16) == "attn_fwd_ws"
    assert A.launch_plan(1, 32, 4096, 128, True, torch.float16).notes == ("tile not tuned yet",)
