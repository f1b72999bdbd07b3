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

`random_shard` draws one rank's part of random weights without the whole model ever existing in
one process (Llama 3 70B at TP >= 2 does not fit on one GPU). Every split dimension (Q heads, KV
heads, intermediate rows, vocab rows) is cut into `draw_blocks(config)` equal blocks, the
greatest common divisor of the four sizes, so that every TP the split allows (theory.tp.shard:
a divisor of all four) gives each rank a whole number of blocks. Each block is drawn from a
generator seeded by (seed, layer, tensor, block), and what every rank holds whole (norms,
embedding, the row-parallel biases) by (seed, layer, tensor); so a rank's blocks are exactly the
blocks the same draw at TP = 1 puts at its slice: `random_shard(c, tp, r) ==
shard_weights(c, random_shard(c, 1, 0), tp, r)`. The distributions are `llama_weights`': each
matrix N(0, 1/fan_in) of the whole model's fan-in, embedding N(0, 1), norm gains 1 + N(0, 0.1^2),
biases N(0, 0.1^2).
"""

from __future__ import annotations

import hashlib
import math
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


def draw_blocks(config: ModelConfig) -> int:
    """Blocks every split dimension is drawn in: gcd(heads, KV heads, intermediate, vocab)."""
    sizes = (config.num_heads, config.num_kv_heads, config.intermediate_size, config.vocab_size)
    return math.gcd(*sizes)


def block_seed(seed: int, *key: object) -> int:
    """A generator seed for one drawn tensor or block, from the run's seed and its name."""
    text = "/".join(str(part) for part in (seed, *key)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


class _Draw:
    """Draws the blocks of one rank (see the module docstring)."""

    def __init__(self, config: ModelConfig, tp: int, rank: int, device, dtype, seed: int):
        self.blocks = draw_blocks(config)
        if self.blocks % tp:
            raise ValueError(f"model {config.name} does not split over TP={tp}")
        per_rank = self.blocks // tp
        self.mine = range(rank * per_rank, (rank + 1) * per_rank)
        self.device, self.dtype, self.seed = torch.device(device), dtype, seed

    def normal(self, shape: tuple[int, ...], *key: object) -> torch.Tensor:
        gen = torch.Generator(device=self.device).manual_seed(block_seed(self.seed, *key))
        return torch.randn(shape, generator=gen, device=self.device, dtype=self.dtype)

    def whole(self, n: int, mean: float, *key: object) -> torch.Tensor:
        """A vector every rank holds: mean + N(0, 0.1^2)."""
        return self.normal((n,), *key).mul_(0.1).add_(mean)

    def rows(self, parts: list[tuple[str, int]], cols: int | None, fan_in: int, *key: object):
        """This rank's blocks of row-split tensors, each of `parts` (name, whole rows) in turn,
        concatenated by rows: a [rows, cols] matrix of N(0, 1/fan_in), or a bias vector of
        N(0, 0.1^2) when `cols` is None."""
        height = sum(whole // self.blocks for _, whole in parts) * len(self.mine)
        shape = (height,) if cols is None else (height, cols)
        out = torch.empty(shape, device=self.device, dtype=self.dtype)
        scale = 0.1 if cols is None else 1.0 / math.sqrt(fan_in)
        at = 0
        for name, whole in parts:
            step = whole // self.blocks
            for b in self.mine:
                block_shape = (step,) if cols is None else (step, cols)
                out[at : at + step] = self.normal(block_shape, *key, name, b).mul_(scale)
                at += step
        return out

    def cols(self, rows: int, whole: int, *key: object) -> torch.Tensor:
        """This rank's column blocks of a row-parallel [rows, whole] matrix, N(0, 1/whole)."""
        step = whole // self.blocks
        out = torch.empty((rows, step * len(self.mine)), device=self.device, dtype=self.dtype)
        for i, b in enumerate(self.mine):
            block = self.normal((rows, step), *key, b).mul_(1.0 / math.sqrt(whole))
            out[:, i * step : (i + 1) * step] = block
        return out


def random_shard(
    config: ModelConfig,
    tp: int,
    rank: int,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> Weights:
    """Rank `rank`'s part of the whole model's random weights at TP = `tp`, drawing only that
    part (and what every rank holds whole); TP = 1 draws the whole model the same way."""
    shard(config, tp)  # a split that does not exist is named
    if not 0 <= rank < tp:
        raise ValueError(f"rank must be in 0..{tp - 1}, got {rank}")
    draw = _Draw(config, tp, rank, device, dtype, seed)
    h, inter, q, kv = config.hidden_size, config.intermediate_size, config.q_dim, config.kv_dim
    qkv = [("q", q), ("k", kv), ("v", kv)]
    gate_up = [("gate", inter), ("up", inter)]
    layers = []
    for i in range(config.num_layers):
        layers.append(
            LayerWeights(
                attn_norm=draw.whole(h, 1.0, i, "attn_norm"),
                wqkv=draw.rows(qkv, h, h, i, "wqkv"),
                wo=draw.cols(h, q, i, "wo"),
                mlp_norm=draw.whole(h, 1.0, i, "mlp_norm"),
                w_gate_up=draw.rows(gate_up, h, h, i, "w_gate_up"),
                w_down=draw.cols(h, inter, i, "w_down"),
                bqkv=draw.rows(qkv, None, h, i, "bqkv") if config.has_qkv_bias else None,
                bo=draw.whole(h, 0.0, i, "bo") if config.attention_bias else None,
                b_gate_up=draw.rows(gate_up, None, h, i, "b_gate_up") if config.mlp_bias else None,
                b_down=draw.whole(h, 0.0, i, "b_down") if config.mlp_bias else None,
            )
        )
    embed = draw.normal((config.vocab_size, h), "embed")
    if config.tie_word_embeddings:
        vocab = config.vocab_size // tp
        head = embed if tp == 1 else embed[rank * vocab : (rank + 1) * vocab]
    else:
        head = draw.rows([("vocab", config.vocab_size)], h, h, "lm_head")
    return Weights(embed=embed, layers=layers, norm=draw.whole(h, 1.0, "norm"), lm_head=head)


def weights_to(weights: Weights, device, dtype: torch.dtype) -> Weights:
    """`weights` moved and cast, tensor by tensor (a tied LM head stays the embedding)."""

    def to(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.to(device=device, dtype=dtype)

    layers = [LayerWeights(**{k: to(v) for k, v in vars(t).items()}) for t in weights.layers]
    embed = to(weights.embed)
    head = embed if weights.lm_head is weights.embed else to(weights.lm_head)
    return Weights(embed=embed, layers=layers, norm=to(weights.norm), lm_head=head)


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
        *,
        sharded: bool = False,
    ):
        """`weights`: the whole model's, or with `sharded` this rank's part already."""
        part = weights if sharded else shard_weights(config, weights, tp, rank)
        super().__init__(shard(config, tp), part, backend)
        self.whole, self.tp, self.rank = config, tp, rank
        self._all_reduce, self._all_gather = all_reduce, all_gather
        # The row-parallel weights, by identity: their products are partial sums.
        self._row_parallel = {
            id(t) for layer in self.weights.layers for t in (layer.wo, layer.w_down)
        }

    @classmethod
    def random_rank(
        cls,
        config: ModelConfig,
        tp: int,
        rank: int,
        backend: str | Mapping[str, str] = "torch",
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        seed: int = 0,
        **collectives,
    ) -> TPLlama:
        """This rank of a decoder on `random_shard` weights (only its part is ever drawn)."""
        weights = random_shard(config, tp, rank, device, dtype, seed)
        return cls(config, weights, tp, rank, backend, **collectives, sharded=True)

    def _linear(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None):
        if id(w) not in self._row_parallel:
            return super()._linear(x, w, b)
        y = super()._linear(x, w)
        self._all_reduce(y)
        return y if b is None else y.add_(b)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's vocab rows, gathered into the whole [rows, vocab] logits."""
        return torch.cat(self._all_gather(super()._logits(x).contiguous()), dim=-1)
