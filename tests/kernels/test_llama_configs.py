"""The decoder built from Hugging Face configs (Qwen2-like: q/k/v bias, tied embeddings, a GQA
group of 7; Phi-3-like: head_dim 96, MHA) against a float64 reference on fresh random weights,
on the torch backend and on ours under Triton's interpreter."""

import pytest
import torch

from roofbench.kernels.llama import Llama
from roofbench.theory.llm import from_hf_config

VOCAB = 97
# Small configs of the two families' shapes (no downloads): what their config.json files say,
# scaled down.
QWEN2_LIKE = {
    "model_type": "qwen2",
    "hidden_size": 112,
    "num_hidden_layers": 2,
    "num_attention_heads": 7,
    "num_key_value_heads": 1,
    "intermediate_size": 96,
    "vocab_size": VOCAB,
    "hidden_act": "silu",
    "tie_word_embeddings": True,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-06,
}
PHI3_LIKE = {
    "model_type": "phi3",
    "hidden_size": 192,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "vocab_size": VOCAB,
    "hidden_act": "silu",
    "tie_word_embeddings": False,
    "rope_theta": 10000.0,
    "rms_norm_eps": 1e-05,
}
CONFIGS = {"qwen2": QWEN2_LIKE, "phi3": PHI3_LIKE}


def close(got: torch.Tensor, want: torch.Tensor, tol: float) -> bool:
    return ((got.double() - want).norm() / want.norm()).item() <= tol


def fresh_tokens(batch: int, n: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, n))  # fresh each run: no seed


def test_the_configs_give_bias_tie_and_shapes_as_the_families_do():
    qwen = Llama.random(from_hf_config(QWEN2_LIKE))
    layer = qwen.weights.layers[0]
    assert layer.bqkv is not None and layer.bqkv.shape == (7 * 16 + 2 * 16,)
    assert layer.bo is None and layer.b_gate_up is None  # Qwen2: q, k, v only
    assert qwen.weights.lm_head is qwen.weights.embed  # tied: one matrix
    phi = Llama.random(from_hf_config(PHI3_LIKE))
    assert phi.weights.layers[0].bqkv is None and phi.weights.lm_head is not phi.weights.embed
    for model in (qwen, phi):
        tensors = [model.weights.embed, model.weights.norm]
        tensors += [t for layer in model.weights.layers for t in vars(layer).values()]
        if model.weights.lm_head is not model.weights.embed:
            tensors.append(model.weights.lm_head)
        assert sum(t.numel() for t in tensors if t is not None) == model.config.params


@pytest.mark.parametrize("family", CONFIGS)
def test_torch_backend_matches_float64_prefill_and_decode(family, decoder_reference):
    cfg = from_hf_config(CONFIGS[family])
    model = Llama.random(cfg, "torch", seed=torch.randint(0, 2**31, ()).item())
    toks = fresh_tokens(2, 9)
    want = decoder_reference(cfg, model.weights, toks)
    model.allocate_cache(2, 9)
    assert close(model.prefill(toks[:, :7]), want[:, 6], 1e-4)
    context = torch.tensor([7, 7], dtype=torch.int32)
    for t in (7, 8):
        assert close(model.decode_step(toks[:, t : t + 1], context), want[:, t], 1e-4)
        context += 1


@pytest.mark.parametrize("backend", ["triton", "fused"])
@pytest.mark.parametrize("family", CONFIGS)
def test_triton_backend_matches_float64_in_the_interpreter(family, backend, decoder_reference):
    """fp32 under the interpreter: GEMV projections (2 rows), GEMM (18 rows), flash prefill and
    split-KV decode attention at the family's head_dim and group; on "fused" also the fused
    norms, rotary + KV append (with Qwen2's q/k/v bias) and SiLU x up."""
    cfg = from_hf_config({**CONFIGS[family], "num_hidden_layers": 1})
    model = Llama.random(cfg, backend, seed=torch.randint(0, 2**31, ()).item())
    toks = fresh_tokens(2, 10)
    want = decoder_reference(cfg, model.weights, toks)
    model.allocate_cache(2, 10)
    assert close(model.prefill(toks[:, :9]), want[:, 8], 1e-3)
    context = torch.tensor([9, 9], dtype=torch.int32)
    assert close(model.decode_step(toks[:, 9:10], context), want[:, 9], 1e-3)


@pytest.mark.gpu
@pytest.mark.parametrize("family", CONFIGS)
def test_every_backend_matches_float64_in_bf16_on_the_gpu(family, decoder_reference):
    cfg = from_hf_config(CONFIGS[family])
    torch_model = Llama.random(cfg, "torch", device="cuda", dtype=torch.bfloat16)
    toks = fresh_tokens(2, 33).cuda()
    want = decoder_reference(cfg, torch_model.weights, toks)
    for backend in ("torch", "triton", "fused"):
        model = torch_model.with_backend(backend)
        assert close(model.prefill(toks), want[:, -1], 3e-2), backend
