"""Shared fixtures of the kernel tests: the float64 reference decoder the model tests hold
every backend against."""

import math

import pytest
import torch

from roofbench.theory.llm import ModelConfig


def reference_logits(cfg: ModelConfig, weights, toks: torch.Tensor) -> torch.Tensor:
    """Logits [B, N, vocab] at every position in float64: biases where the weights have them,
    the config's rope_theta and rms_norm_eps, explicit causal mask, KV heads repeated."""
    w, device = weights, weights.embed.device
    batch, n = toks.shape
    d, hq, hkv = cfg.head_dim, cfg.num_heads, cfg.num_kv_heads

    def f64(t):
        return None if t is None else t.double()

    exponents = torch.arange(0, d, 2, dtype=torch.float64, device=device) / d
    angle = (
        torch.arange(n, dtype=torch.float64, device=device)[:, None] * cfg.rope_theta**-exponents
    )
    cos, sin = angle.cos()[None, :, None, :], angle.sin()[None, :, None, :]

    def rotate(t):
        a, b = t[..., : d // 2], t[..., d // 2 :]
        return torch.cat((a * cos - b * sin, b * cos + a * sin), dim=-1)

    def norm(t, gain):
        return t / torch.sqrt(t.pow(2).mean(-1, keepdim=True) + cfg.rms_norm_eps) * f64(gain)

    def lin(t, weight, bias):
        out = t @ f64(weight).T
        return out if bias is None else out + f64(bias)

    masked = torch.ones(n, n, dtype=torch.bool, device=device).triu(1)
    x = f64(w.embed)[toks]
    for layer in w.layers:
        qkv = lin(norm(x, layer.attn_norm), layer.wqkv, layer.bqkv)
        q, k, v = qkv.split([hq * d, hkv * d, hkv * d], dim=-1)
        q = rotate(q.reshape(batch, n, hq, d))
        k = rotate(k.reshape(batch, n, hkv, d)).repeat_interleave(hq // hkv, dim=2)
        v = v.reshape(batch, n, hkv, d).repeat_interleave(hq // hkv, dim=2)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(d)
        p = scores.masked_fill(masked, float("-inf")).softmax(-1)
        o = torch.einsum("bhqk,bkhd->bqhd", p, v).reshape(batch, n, hq * d)
        x = x + lin(o, layer.wo, layer.bo)
        gate, up = lin(norm(x, layer.mlp_norm), layer.w_gate_up, layer.b_gate_up).chunk(2, -1)
        x = x + lin(torch.nn.functional.silu(gate) * up, layer.w_down, layer.b_down)
    return norm(x, w.norm) @ f64(w.lm_head).T


@pytest.fixture
def decoder_reference():
    """`reference_logits(config, weights, tokens)`: logits [B, N, vocab] in float64."""
    return reference_logits
