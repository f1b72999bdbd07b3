"""GEMM, the prefill projection: C[m, n] = A[m, k] @ W[n, k]^T (W in nn.Linear's layout).

Call: `fn(a, w, out=out)` with a [M, K], w [N, K], out [M, N], all of the case's dtype.
Sweeps: M = 17 ... 8192 token rows through each distinct linear layer of Llama 3 8B (quick: M
in 64, 256, 1024, 4096) and 70B (full: every power of two), or of the model a run names
(`roofbench run --model`); M <= 16 is the GEMV op.
Implementations: `triton` (kernels.gemm), `torch` (F.linear, cuBLAS; the baseline).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from roofbench.kernels import gemm as _gemm
from roofbench.kernels._util import default_device, linear_reference
from roofbench.kernels.gemv import TOKENS_PER_DOT
from roofbench.kernels.registry import register_impl
from roofbench.kernels.spec import (
    OpCase,
    generator,
    linear_layers,
    powers_of_two,
    randn,
    register_op,
    vendor_then_copy,
)
from roofbench.theory import ops
from roofbench.theory.llm import ModelConfig
from roofbench.theory.ops import OpCost
from roofbench.theory.tiers import Work

GEMV_MAX_M = TOKENS_PER_DOT  # M <= 16 token rows is the decode-shaped product (the GEMV op)
# The float64 oracle of an [M, K] x [K, N] product costs 8 bytes per element of A, W and C:
# above this many rows the gate checks a case with fewer rows (same N, K and code path).
GATE_MAX_M = 2048
QUICK_M = (1, 4, 16, 64, 256, 1024, 4096)
FULL_M = powers_of_two(1, 8192)


@register_op
@dataclass(frozen=True)
class GemmCase(OpCase):
    """C[m, n] = A[m, k] @ W[n, k]^T."""

    m: int
    n: int
    k: int
    dtype: str = "bf16"
    source: str = ""
    op: ClassVar[str] = "gemm"
    order: ClassVar[int] = 10

    @property
    def id(self) -> str:
        return f"{self.op}/m{self.m}_n{self.n}_k{self.k}/{self.dtype}"

    def cost(self) -> OpCost:
        return ops.gemm(self.m, self.n, self.k, self.dtype)

    def shape_fields(self) -> dict:
        return {"m": self.m, "n": self.n, "k": self.k}

    def work(self) -> Work:
        return Work(self.cost(), "matmul", m=self.m, n=self.n, k=self.k)

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (self.m, self.n)

    def make_inputs(self, device, seed: int) -> tuple[torch.Tensor, ...]:
        gen = generator(device, seed)
        a = randn((self.m, self.k), gen, device, self.torch_dtype)
        w = randn((self.n, self.k), gen, device, self.torch_dtype, 1.0 / math.sqrt(self.k))
        return a, w

    def exact(self, inputs) -> torch.Tensor:
        a, w = (t.double() for t in inputs)
        return a @ w.T

    def gate_case(self) -> GemmCase:
        return self.with_fields(m=min(self.m, GATE_MAX_M))

    @classmethod
    def small_cases(cls, dtype: str = "fp16") -> list[GemmCase]:
        return [cls(m=64, n=96, k=128, dtype=dtype), cls(m=33, n=40, k=72, dtype=dtype)]

    @classmethod
    def odd_cases(cls, dtype: str = "fp16") -> list[GemmCase]:
        return [cls(m=17, n=1, k=9, dtype=dtype), cls(m=129, n=257, k=31, dtype=dtype)]

    @classmethod
    def sweep(cls, name: str, model: ModelConfig | None = None) -> list[GemmCase]:
        return linear_sweep(cls, name, model, lambda m: m > GEMV_MAX_M)


def linear_sweep(cls, name: str, model: ModelConfig | None, keep, lm_head: bool = False) -> list:
    """Cases of `cls` for each distinct linear-layer shape of `model` (default: the sweep's
    Llama 3 models, `kernels.spec.linear_layers`; with `lm_head` the LM head's too), at each of
    the sweep's M values that `keep` accepts; `source` names the layers that have the shape."""
    ms = {"quick": QUICK_M, "full": FULL_M}[name]
    return [
        cls(m=m, n=n, k=k, source=layers)
        for (n, k), layers in linear_layers(name, model, lm_head).items()
        for m in ms
        if keep(m)
    ]


def triton_plan(case: GemmCase):
    return _gemm.launch_plan(case.m, case.n, case.k, case.torch_dtype, default_device())


register_impl(
    "gemm",
    "triton",
    _gemm.gemm,
    plan=triton_plan,
    description="Triton GEMM (TMA persistent / split-K on Hopper, tuned per shape)",
)
register_impl(
    "gemm",
    "torch",
    linear_reference,
    baseline=True,
    plan=vendor_then_copy("cublas"),
    description="torch.nn.functional.linear (cuBLAS on the GPU)",
)
