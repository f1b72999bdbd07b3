"""Tensor-parallel decode: the decoder split Megatron-style over `tp` GPUs, and its step time.

The split (Shoeybi et al. 2019, "Megatron-LM", section 3): in attention, Q, K and V are
column-parallel (each GPU holds heads/tp query heads and kv_heads/tp KV heads, and their KV
cache) and O is row-parallel (the GPU's heads' share of the input features); in the MLP, gate and
up are column-parallel (intermediate/tp each) and down is row-parallel. A row-parallel product
leaves each GPU a partial sum of the full [tokens, hidden] output, so each layer ends its
attention and its MLP with one all-reduce of tokens x hidden elements: 2 per layer. The LM head
is vocab-parallel (vocab/tp rows each) and its logits are all-gathered: [rows, vocab]. Norms,
the residual stream and the embedding stay whole on every GPU.

So each GPU runs the decoder of shape `shard(config, tp)` (theory.llm costs it as it costs any
model) and the step takes

    time = per-GPU step + 2 * layers * all_reduce(tokens * hidden) + all_gather(rows * vocab)

with the collectives' times from theory.comm. Communication is taken not to overlap compute
(each all-reduce's result is the next kernel's input).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from roofbench.theory import comm, llm
from roofbench.theory.llm import ModelConfig
from roofbench.theory.ops import dtype_bytes
from roofbench.theory.roofline import Roof

ALL_REDUCES_PER_LAYER = 2  # after the O projection and after the down projection


def shard(config: ModelConfig, tp: int) -> ModelConfig:
    """The per-GPU decoder of a `tp`-way split; ValueError naming the size that does not divide."""
    if not isinstance(tp, int) or tp < 1:
        raise ValueError(f"tensor-parallel size must be a positive whole number, got {tp!r}")
    sizes = {
        "num_heads": config.num_heads,
        "num_kv_heads": config.num_kv_heads,
        "intermediate_size": config.intermediate_size,
        "vocab_size": config.vocab_size,
    }
    for key, value in sizes.items():
        if value % tp:
            raise ValueError(f"model {config.name}: {key} ({value}) does not split over TP={tp}")
    if tp == 1:
        return config
    return dataclasses.replace(
        config,
        name=f"{config.name}-tp{tp}",
        num_heads=config.num_heads // tp,
        num_kv_heads=config.num_kv_heads // tp,
        intermediate_size=config.intermediate_size // tp,
        vocab_size=config.vocab_size // tp,
        head_dim=config.head_dim,  # fixed: hidden / (heads / tp) would be wrong
    )


@dataclass(frozen=True)
class TPStep:
    """One step of a `tp`-way decoder: the per-GPU part and the collectives."""

    tp: int
    per_gpu_s: float
    all_reduce: comm.CommPrediction  # one of them
    all_reduces: int
    all_gather: comm.CommPrediction  # the logits'

    @property
    def comm_s(self) -> float:
        return self.all_reduces * self.all_reduce.time_s + self.all_gather.time_s

    @property
    def time_s(self) -> float:
        return self.per_gpu_s + self.comm_s


def activation_bytes(config: ModelConfig, tokens: int, dtype: str = "bf16") -> int:
    """One all-reduce's message: tokens x hidden elements."""
    return tokens * config.hidden_size * dtype_bytes(dtype)


def logits_bytes(config: ModelConfig, rows: int, dtype: str = "bf16") -> int:
    """The logits all-gather's message (the gathered output): rows x vocab elements."""
    return rows * config.vocab_size * dtype_bytes(dtype)


def tp_step(
    config: ModelConfig,
    tp: int,
    link: comm.Link,
    per_gpu_s: float,
    tokens: int,
    rows: int,
    dtype: str = "bf16",
) -> TPStep:
    """A step of `tokens` rows through the layers and `rows` logits rows, given the per-GPU
    step's time (any per-GPU model: the phase roofline, or a kernel-by-kernel sum)."""
    shard(config, tp)  # the split must exist
    reduce = comm.predict("all_reduce", tp, activation_bytes(config, tokens, dtype), link)
    gather = comm.predict("all_gather", tp, logits_bytes(config, rows, dtype), link)
    count = ALL_REDUCES_PER_LAYER * config.num_layers if tp > 1 else 0
    return TPStep(tp, per_gpu_s, reduce, count, gather)


def decode_step(
    config: ModelConfig,
    roof: Roof,
    link: comm.Link,
    tp: int,
    context: int,
    batch: int = 1,
    dtype: str = "bf16",
) -> TPStep:
    """One decode step (batch new tokens at `context`) on the per-GPU phase roofline."""
    per_gpu = llm.decode_step(shard(config, tp), roof, context, batch, dtype)
    return tp_step(config, tp, link, per_gpu.time_s, batch, batch, dtype)


def prefill(
    config: ModelConfig,
    roof: Roof,
    link: comm.Link,
    tp: int,
    prompt_tokens: int,
    batch: int = 1,
    dtype: str = "bf16",
    causal: bool = True,
) -> TPStep:
    """The prefill of `batch` prompts (TTFT) on the per-GPU phase roofline."""
    per_gpu = llm.prefill(shard(config, tp), roof, prompt_tokens, batch, dtype, causal)
    return tp_step(config, tp, link, per_gpu.time_s, batch * prompt_tokens, batch, dtype)


PHASES = ("ttft", "tbt")


def phase(
    config: ModelConfig,
    roof: Roof,
    link: comm.Link,
    tp: int,
    op: str,
    batch: int,
    seq: int,
    dtype: str = "bf16",
) -> TPStep:
    """`prefill` of `batch` prompts of `seq` tokens (op `ttft`) or one `decode_step` of `batch`
    sequences at context `seq` (op `tbt`)."""
    if op == "ttft":
        return prefill(config, roof, link, tp, seq, batch, dtype)
    if op == "tbt":
        return decode_step(config, roof, link, tp, seq, batch, dtype)
    raise ValueError(f"op must be one of {', '.join(PHASES)}, got {op!r}")
