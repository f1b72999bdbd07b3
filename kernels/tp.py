"""The decoder split Megatron-style over `tp` ranks (the split theory.tp costs).

`shard_weights` cuts one rank's part out of the whole model's weights: Q, K, V (and their
biases) by heads and gate, up by intermediate rows (column-parallel); O and down by their input
features (row-parallel, each rank a slice of the columns); the LM head by vocab rows. The
norms, the embedding and the row-parallel products' biases stay whole on every rank.

`TPLlama` is the decoder (kernels.llama) of the per-rank shape `theory.tp.shard(config, tp)`
over those weights, with one change: a row-parallel product's partial sum is all-reduced before
its bias is added and before the residual add (2 all-reduces a layer), and the vocab-parallel
logits are all-gathered. The collectives are torch.distributed's on the default group unless
`all_reduce` (in place, SUM) and `all_gather` (list of per-rank tensors, in rank order) are
given, so the same decoder runs on NCCL, gloo, or anything else that sums and gathers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from roofbench.theory.llm import ModelConfig
from roofbench.theory.tp import shard

from .llama import Llama
from .llama_weights import LayerWeights, Weights


def _rows(t: torch.Tensor | None, ranges: list[tuple[int, int]]) -> torch.Tensor | None:
    """The rows (first dimension) of `t` in `ranges`, concatenated; None stays None."""
    if t is None:
        return None
    return torch.cat([t[a:b] for a, b in ranges]).contiguous()


def _cols(t: torch.Tensor, a: int, b: int) -> torch.Tensor:
    return t[:, a:b].contiguous()


def shard_weights(config: ModelConfig, weights: Weights, tp: int, rank: int) -> Weights:
    """Rank `rank`'s part of `weights` (of the whole model `config`) in a `tp`-way split."""
    if not 0 <= rank < tp:
        raise ValueError(f"rank must be in 0..{tp - 1}, got {rank}")
    part = shard(config, tp)
    q, kv, inter = part.q_dim, part.kv_dim, part.intermediate_size
    qkv = [
        (rank * q, (rank + 1) * q),
        (config.q_dim + rank * kv, config.q_dim + (rank + 1) * kv),
        (config.q_dim + config.kv_dim + rank * kv, config.q_dim + config.kv_dim + (rank + 1) * kv),
    ]
    gate_up = [
        (rank * inter, (rank + 1) * inter),
        (config.intermediate_size + rank * inter, config.intermediate_size + (rank + 1) * inter),
    ]
    layers = [
        LayerWeights(
            attn_norm=layer.attn_norm,
            wqkv=_rows(layer.wqkv, qkv),
            wo=_cols(layer.wo, rank * q, (rank + 1) * q),
            mlp_norm=layer.mlp_norm,
            w_gate_up=_rows(layer.w_gate_up, gate_up),
            w_down=_cols(layer.w_down, rank * inter, (rank + 1) * inter),
            bqkv=_rows(layer.bqkv, qkv),
            bo=layer.bo,
            b_gate_up=_rows(layer.b_gate_up, gate_up),
            b_down=layer.b_down,
        )
        for layer in weights.layers
    ]
    vocab = part.vocab_size
    head = _rows(weights.lm_head, [(rank * vocab, (rank + 1) * vocab)])
    return Weights(embed=weights.embed, layers=layers, norm=weights.norm, lm_head=head)


def _dist_all_reduce(t: torch.Tensor) -> None:
    import torch.distributed as dist

    dist.all_reduce(t)


def _dist_all_gather(t: torch.Tensor) -> list[torch.Tensor]:
    import torch.distributed as dist

    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t)
    return parts


class TPLlama(Llama):
    """One rank of a `tp`-way decoder (module docstring); `config` is the whole model's."""

    def __init__(
        self,
        config: ModelConfig,
        weights: Weights,
        tp: int,
        rank: int,
        backend: str | Mapping[str, str] = "torch",
        all_reduce: Callable[[torch.Tensor], None] = _dist_all_reduce,
        all_gather: Callable[[torch.Tensor], list[torch.Tensor]] = _dist_all_gather,
    ):
        super().__init__(shard(config, tp), shard_weights(config, weights, tp, rank), backend)
        self.whole, self.tp, self.rank = config, tp, rank
        self._all_reduce, self._all_gather = all_reduce, all_gather
        # The row-parallel weights, by identity: their products are partial sums.
        self._row_parallel = {
            id(t) for layer in self.weights.layers for t in (layer.wo, layer.w_down)
        }

    def _linear(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None):
        if id(w) not in self._row_parallel:
            return super()._linear(x, w, b)
        y = super()._linear(x, w)
        self._all_reduce(y)
        return y if b is None else y.add_(b)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's vocab rows, gathered into the whole [rows, vocab] logits."""
        return torch.cat(self._all_gather(super()._logits(x).contiguous()), dim=-1)
