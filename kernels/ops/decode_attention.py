"""Decode attention: one new query token per sequence over its KV cache.

Call: `fn(q, k_cache, v_cache, context_lens, out=out)` with q [B, Hq, D], caches
[B, Hkv, S_max, D], context_lens an int32 device tensor [B] (sequence b sees its first
context_lens[b] positions; slots past it hold random values that must not leak into its output),
out [B, Hq, D]. `prepare` may turn the lengths into host ints for the timed call.
Sweeps: batch 1 ... 256 x context 512 ... 131072 (quick: batch 1, 16, 64 x context 1024, 8192,
32768), Llama 3 8B's heads or those of the model a run names.
Implementations: `triton` (kernels.decode_attention, split-KV), `torch` (SDPA on the cache
sliced to each length; the baseline), and each SDPA backend forced on its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from roofbench.kernels import decode_attention as _decode
from roofbench.kernels import sdpa
from roofbench.kernels._util import default_device, num_sms
from roofbench.kernels.ops.prefill_attention import head_dim_in_range
from roofbench.kernels.registry import register_impl
from roofbench.kernels.spec import (
    OpCase,
    attention_heads,
    generator,
    powers_of_two,
    randn,
    register_op,
    vendor_then_copy,
)
from roofbench.theory import ops
from roofbench.theory.llm import ModelConfig
from roofbench.theory.ops import OpCost, dtype_bytes
from roofbench.theory.tiers import Work

GATE_MAX_BATCH = 2
GATE_MAX_CONTEXT = 32768


@register_op
@dataclass(frozen=True)
class DecodeAttentionCase(OpCase):
    """`batch` sequences of `seq` cached tokens each, or, with `context_lens`, one length per
    sequence (a ragged batch: then seq is the longest); caches hold `s_max` >= seq positions."""

    batch: int
    seq: int
    heads: int
    kv_heads: int
    head_dim: int
    dtype: str = "bf16"
    source: str = ""
    context_lens: tuple[int, ...] | None = None
    s_max: int | None = None
    op: ClassVar[str] = "decode_attention"
    order: ClassVar[int] = 40

    def __post_init__(self) -> None:
        if self.context_lens is not None:
            lens = tuple(int(n) for n in self.context_lens)
            if len(lens) != self.batch or max(lens) != self.seq:
                raise ValueError(
                    f"context_lens {lens} must have batch={self.batch} entries, longest seq="
                    f"{self.seq}"
                )
            object.__setattr__(self, "context_lens", None if len(set(lens)) == 1 else lens)
        if self.s_max is None:
            object.__setattr__(self, "s_max", self.seq)
        if self.s_max < self.seq:
            raise ValueError(f"s_max {self.s_max} is shorter than the context {self.seq}")
        super().__post_init__()

    @classmethod
    def ragged(cls, lens, heads, kv_heads, head_dim, **rest) -> DecodeAttentionCase:
        lens = tuple(int(n) for n in lens)
        return cls(len(lens), max(lens), heads, kv_heads, head_dim, context_lens=lens, **rest)

    @property
    def lens(self) -> tuple[int, ...]:
        return self.context_lens or (self.seq,) * self.batch

    @property
    def id(self) -> str:
        shape = f"b{self.batch}_s{self.seq}_h{self.heads}_kv{self.kv_heads}_d{self.head_dim}"
        if self.context_lens is not None:
            shape += "_lens" + "-".join(map(str, self.context_lens))
        if self.s_max != self.seq:
            shape += f"_smax{self.s_max}"
        return f"{self.op}/{shape}/{self.dtype}"

    def cost(self) -> OpCost:
        return ops.decode_attention(
            self.batch, self.heads, self.kv_heads, list(self.lens), self.head_dim, self.dtype
        )

    def shape_fields(self) -> dict:
        keys = ("batch", "seq", "heads", "kv_heads", "head_dim")
        return {key: getattr(self, key) for key in keys}

    def work(self) -> Work:
        """One query per sequence over its keys (a ragged batch at its mean length)."""
        mean = round(sum(self.lens) / self.batch)
        return Work(
            self.cost(),
            "attention",
            batch=self.batch,
            heads=self.heads,
            kv_heads=self.kv_heads,
            q_len=1,
            kv_len=mean,
            head_dim=self.head_dim,
            causal=True,
        )

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (self.batch, self.heads, self.head_dim)

    def make_inputs(self, device, seed: int) -> tuple[torch.Tensor, ...]:
        gen = generator(device, seed)
        cache = (self.batch, self.kv_heads, self.s_max, self.head_dim)
        q = randn(self.out_shape, gen, device, self.torch_dtype)
        k = randn(cache, gen, device, self.torch_dtype)
        v = randn(cache, gen, device, self.torch_dtype)
        lens = torch.tensor(self.lens, dtype=torch.int32, device=device)
        return q, k, v, lens

    def exact(self, inputs) -> torch.Tensor:
        q, k, v = (t.double() for t in inputs[:3])
        group = self.heads // self.kv_heads
        scale = 1.0 / math.sqrt(self.head_dim)
        out = torch.empty_like(q)
        for b, n in enumerate(self.lens):
            kb = k[b, :, :n].repeat_interleave(group, dim=0)  # [heads, n, d]
            vb = v[b, :, :n].repeat_interleave(group, dim=0)
            scores = (kb @ q[b, :, :, None])[..., 0] * scale  # [heads, n]
            out[b] = (torch.softmax(scores, dim=-1)[:, None, :] @ vb)[:, 0, :]
        return out

    def gate_case(self) -> DecodeAttentionCase:
        if self.context_lens is not None:
            return self
        seq = min(self.seq, GATE_MAX_CONTEXT)
        return self.with_fields(batch=min(self.batch, GATE_MAX_BATCH), seq=seq, s_max=seq)

    @classmethod
    def small_cases(cls, dtype: str = "fp16") -> list[DecodeAttentionCase]:
        return [
            cls(batch=2, seq=96, heads=8, kv_heads=2, head_dim=64, dtype=dtype),
            cls(batch=1, seq=40, heads=4, kv_heads=4, head_dim=32, dtype=dtype),
        ]

    @classmethod
    def odd_cases(cls, dtype: str = "fp16") -> list[DecodeAttentionCase]:
        return [
            cls.ragged((1, 33, 70), heads=6, kv_heads=2, head_dim=64, dtype=dtype, s_max=80),
            cls(batch=1, seq=50, heads=2, kv_heads=1, head_dim=96, dtype=dtype),
        ]

    @classmethod
    def sweep(cls, name: str, model: ModelConfig | None = None) -> list[DecodeAttentionCase]:
        batches, contexts = {
            "quick": ((1, 16, 64), (1024, 8192, 32768)),
            "full": (powers_of_two(1, 256), powers_of_two(512, 131072)),
        }[name]
        heads, source = attention_heads(model)
        return [cls(batch=b, seq=c, source=source, **heads) for b in batches for c in contexts]


def with_host_lengths(fn):
    """prepare(): call `fn` with the case's lengths as host ints, not the device tensor, so that
    the SDPA reference reads nothing back to the host (a sync a CUDA graph cannot capture)."""

    def prepare(case: DecodeAttentionCase):
        lens = case.lens

        def call(q, k_cache, v_cache, context_lens, out=None):
            return fn(q, k_cache, v_cache, lens, out=out)

        return call

    return prepare


def _triton_plan(case: DecodeAttentionCase):
    size = dtype_bytes(case.dtype)
    sms = num_sms(default_device())
    return _decode.launch_plan(
        case.batch, case.heads, case.kv_heads, case.s_max, case.head_dim, sms, size
    )


register_impl(
    "decode_attention",
    "triton",
    _decode.decode_attention,
    supports=head_dim_in_range,
    plan=_triton_plan,
    description="Triton split-KV decode attention (flash-decoding, GQA heads share a K/V read)",
)
register_impl(
    "decode_attention",
    "torch",
    _decode.decode_attention_reference,
    baseline=True,
    prepare=with_host_lengths(_decode.decode_attention_reference),
    plan=vendor_then_copy("sdpa"),
    description="torch SDPA on the cache sliced to each length (native GQA)",
)
for _backend in sdpa.BACKENDS:
    _forced = sdpa.forced(_backend, _decode.decode_attention_reference)
    register_impl(
        "decode_attention",
        f"sdpa_{_backend}",
        _forced,
        prepare=with_host_lengths(_forced),
        available=lambda b=_backend: sdpa.unavailable(b),
        plan=vendor_then_copy(f"sdpa_{_backend}"),
        description=f"torch SDPA forced to its {_backend} backend",
    )
