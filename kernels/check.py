"""Correctness gate: a kernel that fails `check` is never timed.

`check(impl, case, device)` runs one implementation once on fresh random inputs and compares it
with an oracle computed in float64 from the same (upcast) inputs:

- the output buffer is poisoned with NaN before the run and passed as `out=`; a NaN left after
  the run (an element never written, or a NaN produced) fails the gate, and so does an
  implementation that returns some other tensor than `out`;
- rel_err = ||out - ref||_2 / ||ref||_2 over the whole output must be <= TOLERANCE[dtype];
- max_abs_err = max |out - ref| must be <= ELEMENT_FACTOR * TOLERANCE[dtype] * max |ref|, which
  catches a wrong row or tile that a norm over a large output would dilute.

Inputs are never zeros: randn, scaled so outputs are O(1). A case is a frozen dataclass per op
(GemmCase, GemvCase, AttentionCase, DecodeCase) that makes its inputs, an output buffer, calls an
implementation and computes the oracle. `impl` is a callable or a name in IMPLS[case.op]
("triton" for the kernels here, "torch" for the baselines they are timed against; the baselines
pass the same gate).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch

from . import attention as _attention
from . import decode_attention as _decode
from . import gemm as _gemm
from . import gemv as _gemv

# Relative error allowed per dtype, from the arithmetic each dtype implies (the oracle sees the
# same rounded inputs, so input rounding does not count; accumulation is always fp32):
TOLERANCE: dict[torch.dtype, float] = {
    # fp32 operands: tl.dot runs tf32 on the GPU (10-bit mantissa, unit roundoff 2^-11 = 4.9e-4,
    # typical relative error ~3e-4); plain fp32 (interpreter, cuBLAS) lands near 1e-6.
    torch.float32: 2e-3,
    # fp16: output rounding alone is <= 2^-11 relative (rms ~1.4e-4); attention also rounds P to
    # fp16 before P @ V. Seen: ~2e-4 to 5e-4.
    torch.float16: 2e-3,
    # bf16: output rounding <= 2^-8 relative (rms ~1.1e-3), P rounded to bf16 in attention.
    # Seen: ~1.5e-3 to 4e-3.
    torch.bfloat16: 1e-2,
}
ELEMENT_FACTOR = 10.0

_DTYPES = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "fp32": torch.float32,
    "float32": torch.float32,
}

IMPLS: dict[str, dict[str, Callable]] = {
    "gemm": {"triton": _gemm.gemm, "torch": _gemm.gemm_reference},
    "gemv": {"triton": _gemv.gemv, "torch": _gemv.gemv_reference},
    "attention": {"triton": _attention.attention, "torch": _attention.attention_reference},
    "decode_attention": {
        "triton": _decode.decode_attention,
        "torch": _decode.decode_attention_reference,
    },
}


def as_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """torch dtype from a torch dtype or a short name ("bf16", "fp16", "fp32")."""
    return dtype if isinstance(dtype, torch.dtype) else _DTYPES[dtype]


def _randn(shape, gen: torch.Generator, device, dtype, scale: float = 1.0) -> torch.Tensor:
    x = torch.randn(shape, generator=gen, device=device, dtype=torch.float32)
    return (x * scale).to(dtype)


def _generator(device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


class _Case:
    """Shared behaviour of the cases: dtype normalisation and the output buffer."""

    op: ClassVar[str]

    def __post_init__(self):
        object.__setattr__(self, "dtype", as_dtype(self.dtype))

    def empty_output(self, device) -> torch.Tensor:
        return torch.empty(self.out_shape, dtype=self.dtype, device=device)


@dataclass(frozen=True)
class GemmCase(_Case):
    """C[m, n] = A[m, k] @ W[n, k]^T."""

    m: int
    n: int
    k: int
    dtype: torch.dtype | str = torch.bfloat16
    op: ClassVar[str] = "gemm"

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (self.m, self.n)

    def make_inputs(self, device, seed: int) -> tuple[torch.Tensor, ...]:
        gen = _generator(device, seed)
        a = _randn((self.m, self.k), gen, device, self.dtype)
        w = _randn((self.n, self.k), gen, device, self.dtype, 1.0 / math.sqrt(self.k))
        return a, w

    def run(self, impl: Callable, inputs, out: torch.Tensor) -> torch.Tensor:
        return impl(*inputs, out=out)

    def exact(self, inputs) -> torch.Tensor:
        a, w = (t.double() for t in inputs)
        return a @ w.T


@dataclass(frozen=True)
class GemvCase(GemmCase):
    """The decode-shaped product (m = 1..16 tokens), same arithmetic as GemmCase."""

    op: ClassVar[str] = "gemv"


@dataclass(frozen=True)
class AttentionCase(_Case):
    """Prefill attention: q [batch, heads, seq, head_dim], k/v [batch, kv_heads, seq, head_dim]."""

    batch: int
    heads: int
    kv_heads: int
    seq: int
    head_dim: int
    causal: bool = True
    dtype: torch.dtype | str = torch.bfloat16
    op: ClassVar[str] = "attention"

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (self.batch, self.heads, self.seq, self.head_dim)

    def make_inputs(self, device, seed: int) -> tuple[torch.Tensor, ...]:
        gen = _generator(device, seed)
        kv = (self.batch, self.kv_heads, self.seq, self.head_dim)
        q = _randn(self.out_shape, gen, device, self.dtype)
        return q, _randn(kv, gen, device, self.dtype), _randn(kv, gen, device, self.dtype)

    def run(self, impl: Callable, inputs, out: torch.Tensor) -> torch.Tensor:
        return impl(*inputs, causal=self.causal, out=out)

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


@dataclass(frozen=True)
class DecodeCase(_Case):
    """Decode attention: q [batch, heads, head_dim] over caches [batch, kv_heads, s_max, head_dim];
    sequence b sees its first context_lens[b] positions (batch = len(context_lens)). Cache slots
    past a sequence's length hold random values that must not leak into its output."""

    heads: int
    kv_heads: int
    context_lens: tuple[int, ...]
    head_dim: int
    dtype: torch.dtype | str = torch.bfloat16
    s_max: int | None = None
    op: ClassVar[str] = "decode_attention"

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "context_lens", tuple(int(n) for n in self.context_lens))
        if self.s_max is None:
            object.__setattr__(self, "s_max", max(self.context_lens))

    @property
    def batch(self) -> int:
        return len(self.context_lens)

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (self.batch, self.heads, self.head_dim)

    def make_inputs(self, device, seed: int) -> tuple[torch.Tensor, ...]:
        gen = _generator(device, seed)
        cache = (self.batch, self.kv_heads, self.s_max, self.head_dim)
        q = _randn(self.out_shape, gen, device, self.dtype)
        k = _randn(cache, gen, device, self.dtype)
        v = _randn(cache, gen, device, self.dtype)
        lens = torch.tensor(self.context_lens, dtype=torch.int32, device=device)
        return q, k, v, lens

    def run(self, impl: Callable, inputs, out: torch.Tensor) -> torch.Tensor:
        return impl(*inputs, out=out)

    def exact(self, inputs) -> torch.Tensor:
        q, k, v = (t.double() for t in inputs[:3])
        group = self.heads // self.kv_heads
        scale = 1.0 / math.sqrt(self.head_dim)
        out = torch.empty_like(q)
        for b, n in enumerate(self.context_lens):
            kb = k[b, :, :n].repeat_interleave(group, dim=0)  # [heads, n, d]
            vb = v[b, :, :n].repeat_interleave(group, dim=0)
            scores = (kb @ q[b, :, :, None])[..., 0] * scale  # [heads, n]
            out[b] = (torch.softmax(scores, dim=-1)[:, None, :] @ vb)[:, 0, :]
        return out


Case = GemmCase | GemvCase | AttentionCase | DecodeCase


@dataclass(frozen=True)
class CheckResult:
    max_abs_err: float
    rel_err: float
    ok: bool
    reason: str
    tol: float = float("nan")
    seed: int = -1


def check(
    impl: Callable | str,
    case: Case,
    device: torch.device | str | None = None,
    seed: int | None = None,
) -> CheckResult:
    """Run `impl` once on `case` with fresh random inputs (or `seed`'s) and grade it.

    device defaults to CUDA when present, else the CPU. Never raises for a failing
    implementation: an exception becomes a failed result whose reason names it.
    """
    device = torch.device(device if device is not None else _default_device())
    fn = IMPLS[case.op][impl] if isinstance(impl, str) else impl
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little")
    tol = TOLERANCE[case.dtype]
    inputs = case.make_inputs(device, seed)
    out = case.empty_output(device).fill_(float("nan"))
    try:
        result = case.run(fn, inputs, out)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    except Exception as exc:  # a broken kernel is a failed check, not a crash of the suite
        return CheckResult(
            math.nan, math.nan, False, f"raised {type(exc).__name__}: {exc}", tol, seed
        )
    if not isinstance(result, torch.Tensor) or result.data_ptr() != out.data_ptr():
        return CheckResult(
            math.nan, math.nan, False, "did not write its result into out=", tol, seed
        )

    ref = case.exact(inputs)
    diff = out.double() - ref
    max_abs = diff.abs().max().item()
    rel = (torch.linalg.vector_norm(diff) / torch.linalg.vector_norm(ref)).item()
    ref_max = ref.abs().max().item()
    nan = int(torch.isnan(out).sum().item())
    if nan:
        reason = f"{nan} of {out.numel()} outputs NaN (unwritten or computed NaN)"
    elif not torch.isfinite(out).all():
        reason = "non-finite outputs"
    elif not rel <= tol:
        reason = f"relative error {rel:.3g} > {tol:g}"
    elif not max_abs <= ELEMENT_FACTOR * tol * ref_max:
        reason = (
            f"max abs error {max_abs:.3g} > {ELEMENT_FACTOR:g} * {tol:g} * max|ref| {ref_max:.3g}"
        )
    else:
        return CheckResult(max_abs, rel, True, "ok", tol, seed)
    return CheckResult(max_abs, rel, False, reason, tol, seed)


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"
