"""Prefill attention: O = softmax(Q K^T / sqrt(d) [+ causal mask]) V over a whole prompt.

Call: `fn(q, k, v, causal=causal, out=out)` with q [B, Hq, S, D], k and v [B, Hkv, S, D] (GQA:
query head h reads KV head h // (Hq / Hkv)), out [B, Hq, S, D].
Sweeps: S = 512 ... 32768 (quick: 512, 2048, 8192), batch 1 and 8 (quick: 1), Llama 3 8B's
heads (32 query, 8 KV, d = 128) or those of the model a run names, causal.
Implementations: `triton` (kernels.attention, flash-attention forward), `torch` (SDPA as torch
dispatches it; the baseline), and each SDPA backend forced on its own: `sdpa_flash`,
`sdpa_cudnn`, `sdpa_efficient`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from roofbench.kernels import attention as _attention
from roofbench.kernels import sdpa
from roofbench.kernels._util import MAX_HEAD_DIM, MIN_HEAD_DIM
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
from roofbench.theory.ops import OpCost
from roofbench.theory.plan import LaunchPlan
from roofbench.theory.tiers import Work

# The float64 oracle holds score blocks of the whole case: above these sizes the gate runs the
# same heads on fewer sequences and tokens.
GATE_MAX_BATCH = 2
GATE_MAX_SEQ = 4096


@register_op
@dataclass(frozen=True)
class PrefillAttentionCase(OpCase):
    """q [batch, heads, seq, head_dim]; k, v [batch, kv_heads, seq, head_dim]."""

    batch: int
    heads: int
    kv_heads: int
    seq: int
    head_dim: int
    causal: bool = True
    dtype: str = "bf16"
    source: str = ""
    op: ClassVar[str] = "prefill_attention"
    order: ClassVar[int] = 30

    @property
    def id(self) -> str:
        mask = "causal" if self.causal else "full"
        shape = f"b{self.batch}_s{self.seq}_h{self.heads}_kv{self.kv_heads}_d{self.head_dim}"
        return f"{self.op}/{shape}_{mask}/{self.dtype}"

    def cost(self) -> OpCost:
        return ops.prefill_attention(
            self.batch, self.heads, self.kv_heads, self.seq, self.head_dim, self.causal, self.dtype
        )

    def shape_fields(self) -> dict:
        keys = ("batch", "seq", "heads", "kv_heads", "head_dim")
        return {key: getattr(self, key) for key in keys}

    def work(self) -> Work:
        return Work(
            self.cost(),
            "attention",
            batch=self.batch,
            heads=self.heads,
            kv_heads=self.kv_heads,
            q_len=self.seq,
            kv_len=self.seq,
            head_dim=self.head_dim,
            causal=self.causal,
        )

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (self.batch, self.heads, self.seq, self.head_dim)

    def make_inputs(self, device, seed: int) -> tuple[torch.Tensor, ...]:
        gen = generator(device, seed)
        kv = (self.batch, self.kv_heads, self.seq, self.head_dim)
        q = randn(self.out_shape, gen, device, self.torch_dtype)
        k = randn(kv, gen, device, self.torch_dtype)
        return q, k, randn(kv, gen, device, self.torch_dtype)

    def call(self, fn, inputs, out):
        return fn(*inputs, causal=self.causal, out=out)

    def exact(self, inputs) -> torch.Tensor:
        q, k, v = (t.double() for t in inputs)
        group = self.heads // self.kv_heads
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
        scale = 1.0 / math.sqrt(self.head_dim)
        out = torch.empty_like(q)
        keys = torch.arange(self.seq, device=q.device)
        # Query chunks bound the score block to ~2^27 float64 values.
        chunk = max(1, min(self.seq, 2**27 // max(1, self.batch * self.heads * self.seq)))
        for s0 in range(0, self.seq, chunk):
            s1 = min(self.seq, s0 + chunk)
            scores = (q[:, :, s0:s1] @ k.transpose(-1, -2)) * scale
            if self.causal:
                rows = torch.arange(s0, s1, device=q.device)
                scores.masked_fill_(keys[None, :] > rows[:, None], float("-inf"))
            out[:, :, s0:s1] = torch.softmax(scores, dim=-1) @ v
        return out

    def gate_case(self) -> PrefillAttentionCase:
        return self.with_fields(
            batch=min(self.batch, GATE_MAX_BATCH), seq=min(self.seq, GATE_MAX_SEQ)
        )

    @classmethod
    def small_cases(cls, dtype: str = "fp16") -> list[PrefillAttentionCase]:
        return [
            cls(batch=1, heads=4, kv_heads=2, seq=64, head_dim=64, dtype=dtype),
            cls(batch=2, heads=2, kv_heads=2, seq=48, head_dim=32, causal=False, dtype=dtype),
        ]

    @classmethod
    def odd_cases(cls, dtype: str = "fp16") -> list[PrefillAttentionCase]:
        return [
            cls(batch=1, heads=6, kv_heads=2, seq=37, head_dim=64, dtype=dtype),
            cls(batch=1, heads=2, kv_heads=1, seq=40, head_dim=96, dtype=dtype),
        ]

    @classmethod
    def sweep(cls, name: str, model: ModelConfig | None = None) -> list[PrefillAttentionCase]:
        seqs, batches = {
            "quick": ((512, 2048, 8192), (1,)),
            "full": (powers_of_two(512, 32768), (1, 8)),
        }[name]
        heads, source = attention_heads(model)
        return [cls(batch=b, seq=s, source=source, **heads) for b in batches for s in seqs]


def head_dim_in_range(case) -> str | None:
    """Our Triton attention kernels pad the head dimension to a power of two: 16..256."""
    d = case.head_dim
    if not MIN_HEAD_DIM <= d <= MAX_HEAD_DIM:
        return f"head_dim {d} is outside {MIN_HEAD_DIM}..{MAX_HEAD_DIM} (the Triton kernels)"
    return None


def _triton_plan(case: PrefillAttentionCase) -> LaunchPlan:
    return _attention.launch_plan(
        case.batch, case.heads, case.seq, case.head_dim, case.causal, case.torch_dtype
    )


register_impl(
    "prefill_attention",
    "triton",
    _attention.attention,
    supports=head_dim_in_range,
    plan=_triton_plan,
    description="Triton flash-attention forward (online softmax, causal blocks skipped)",
)
register_impl(
    "prefill_attention",
    "torch",
    _attention.attention_reference,
    baseline=True,
    plan=vendor_then_copy("sdpa"),
    description="torch SDPA, the backend torch picks (native GQA)",
)
for _backend in sdpa.BACKENDS:
    register_impl(
        "prefill_attention",
        f"sdpa_{_backend}",
        sdpa.forced(_backend, _attention.attention_reference),
        available=lambda b=_backend: sdpa.unavailable(b),
        plan=vendor_then_copy(f"sdpa_{_backend}"),
        description=f"torch SDPA forced to its {_backend} backend",
    )
