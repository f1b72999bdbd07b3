"""The decoder's weights: random, in nn.Linear's layout, fused where serving engines fuse them
(Q|K|V as one matrix, gate|up as one), each matrix drawn from N(0, 1/fan_in) so activations stay
O(1) through any depth; embeddings N(0, 1). Nothing is downloaded."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from roofbench.theory.llm import ModelConfig


@dataclass
class LayerWeights:
    """One layer's tensors, in nn.Linear's [out, in] layout; biases are None unless configured."""

    attn_norm: torch.Tensor  # [hidden]
    wqkv: torch.Tensor  # [q_dim + 2 kv_dim, hidden]: Q rows, then K, then V
    wo: torch.Tensor  # [hidden, q_dim]
    mlp_norm: torch.Tensor  # [hidden]
    w_gate_up: torch.Tensor  # [2 intermediate, hidden]: gate rows, then up
    w_down: torch.Tensor  # [hidden, intermediate]
    bqkv: torch.Tensor | None = None
    bo: torch.Tensor | None = None
    b_gate_up: torch.Tensor | None = None
    b_down: torch.Tensor | None = None


@dataclass
class Weights:
    embed: torch.Tensor  # [vocab, hidden]
    layers: list[LayerWeights]
    norm: torch.Tensor  # [hidden]
    lm_head: torch.Tensor  # [vocab, hidden]; the embedding itself when tied


def random_weights(
    config: ModelConfig, device: torch.device | str, dtype: torch.dtype, seed: int = 0
) -> Weights:
    """Weights drawn from N(0, 1/fan_in) (embedding N(0, 1); norm gains 1 + N(0, 0.1^2), biases
    N(0, 0.1^2)), generated on `device` directly in `dtype` from one seeded generator."""
    device = torch.device(device)
    gen = torch.Generator(device=device).manual_seed(seed)

    def matrix(rows: int, cols: int) -> torch.Tensor:
        w = torch.randn(rows, cols, generator=gen, device=device, dtype=dtype)
        return w.mul_(1.0 / math.sqrt(cols))

    def vector(n: int, mean: float = 0.0) -> torch.Tensor:
        return torch.randn(n, generator=gen, device=device, dtype=dtype).mul_(0.1).add_(mean)

    def bias(n: int, wanted: bool) -> torch.Tensor | None:
        return vector(n) if wanted else None

    h, inter = config.hidden_size, config.intermediate_size
    qkv = config.q_dim + 2 * config.kv_dim
    layers = [
        LayerWeights(
            attn_norm=vector(h, 1.0),
            wqkv=matrix(qkv, h),
            wo=matrix(h, config.q_dim),
            mlp_norm=vector(h, 1.0),
            w_gate_up=matrix(2 * inter, h),
            w_down=matrix(h, inter),
            bqkv=bias(qkv, config.has_qkv_bias),
            bo=bias(h, config.attention_bias),
            b_gate_up=bias(2 * inter, config.mlp_bias),
            b_down=bias(h, config.mlp_bias),
        )
        for _ in range(config.num_layers)
    ]
    embed = torch.randn(config.vocab_size, h, generator=gen, device=device, dtype=dtype)
    lm_head = embed if config.tie_word_embeddings else matrix(config.vocab_size, h)
    return Weights(embed=embed, layers=layers, norm=vector(h, 1.0), lm_head=lm_head)
