"""GEMV, the decode projection: y[m, n] = x[m, k] @ W[n, k]^T for m = 1 ... 16 token rows.

The same arithmetic and call as GEMM (`fn(x, w, out=out)`), a separate op because at so few rows
the product is a weight read (about m FLOP per byte) and kernels are built for that.
Sweeps: M in 1, 2, 4, 8, 16 (quick: 1, 4, 16) through the linear layers of the GEMM sweep (a
named model's, or Llama 3's).
Implementations: `triton` (kernels.gemv), `torch` (F.linear, cuBLAS; the baseline).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from roofbench.kernels import gemv as _gemv
from roofbench.kernels._util import default_device, linear_reference, num_sms
from roofbench.kernels.ops.gemm import GEMV_MAX_M, GemmCase, linear_sweep
from roofbench.kernels.registry import register_impl
from roofbench.kernels.spec import register_op, vendor_then_copy
from roofbench.theory.llm import ModelConfig
from roofbench.theory.ops import dtype_bytes


@register_op
@dataclass(frozen=True)
class GemvCase(GemmCase):
    """The decode-shaped product: 1 <= m <= 16."""

    op: ClassVar[str] = "gemv"
    order: ClassVar[int] = 20

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.m > GEMV_MAX_M:
            raise ValueError(f"gemv takes 1..{GEMV_MAX_M} rows, got m={self.m} (that is a gemm)")

    @classmethod
    def small_cases(cls, dtype: str = "fp16") -> list[GemvCase]:
        return [cls(m=1, n=96, k=128, dtype=dtype), cls(m=5, n=64, k=200, dtype=dtype)]

    @classmethod
    def odd_cases(cls, dtype: str = "fp16") -> list[GemvCase]:
        return [cls(m=16, n=1, k=7, dtype=dtype), cls(m=3, n=129, k=1000, dtype=dtype)]

    @classmethod
    def sweep(cls, name: str, model: ModelConfig | None = None) -> list[GemvCase]:
        # With the LM head: the one projection a decode step runs once, and its largest GEMV.
        return linear_sweep(cls, name, model, lambda m: m <= GEMV_MAX_M, lm_head=True)


def triton_plan(case: GemvCase):
    size = dtype_bytes(case.dtype)
    return _gemv.launch_plan(case.m, case.n, case.k, size, num_sms(default_device()))


register_impl(
    "gemv",
    "triton",
    _gemv.gemv,
    plan=triton_plan,
    description="Triton GEMV (one weight read for all rows, split-K when the grid is small)",
)
register_impl(
    "gemv",
    "torch",
    linear_reference,
    baseline=True,
    plan=vendor_then_copy("cublas"),
    description="torch.nn.functional.linear (cuBLAS on the GPU)",
)
