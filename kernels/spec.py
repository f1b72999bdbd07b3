"""Op specs: what an op is, apart from any implementation of it.

An op spec is a frozen dataclass subclassing `OpCase`, one per op, registered with `@register_op`
(the files in `kernels/ops/`). One instance is one case: the op at one shape and dtype. The class
declares everything the suite needs to measure any implementation of the op:

- `id`: the stable case name shared by every implementation (the key `roofbench compare` uses);
- `cost()`: FLOPs and compulsory bytes, from `theory.ops` (the one place for the formulas);
- `shape_fields()`: the shape columns of a record;
- `make_inputs(device, seed)`: fresh random inputs (randn, never zeros), and `empty_output`;
- `call(fn, inputs, out)`: how an implementation is called (its signature is the op's contract);
- `exact(inputs)`: the float64 oracle; `tolerance`: the relative error allowed for the dtype;
- `gate_case()`: the shape the correctness gate runs when the case is too big for the oracle;
- `small_cases()`: small shapes for the conformance gate (an implementation passes them or
  refuses with a reason, and passes at least one); `odd_cases()`: awkward shapes (ragged, off
  every tile) that it may refuse likewise, but never silently mis-run;
- `sweep(name, model)`: the cases of the `quick` and `full` sweeps, at a model's shapes if given.

Adding an op: its cost in `theory/ops.py`, one file in `kernels/ops/`, and its kernel(s).
`kernels.catalog` imports every op file and is where the suite looks ops up.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import fields, replace
from typing import Any, ClassVar

import torch

from roofbench.theory.llm import MODELS, ModelConfig
from roofbench.theory.ops import OpCost
from roofbench.theory.plan import KernelLaunch, LaunchPlan
from roofbench.theory.tiers import Work

# Relative error allowed per dtype, from the arithmetic each dtype implies (the oracle sees the
# same rounded inputs, so input rounding does not count; accumulation is always fp32):
TOLERANCE: dict[str, float] = {
    # fp32 operands: tl.dot runs tf32 on the GPU (10-bit mantissa, unit roundoff 2^-11 = 4.9e-4,
    # typical relative error ~3e-4); plain fp32 (interpreter, cuBLAS) lands near 1e-6.
    "fp32": 2e-3,
    # fp16: output rounding alone is <= 2^-11 relative (rms ~1.4e-4); attention also rounds P to
    # fp16 before P @ V. Seen: ~2e-4 to 5e-4.
    "fp16": 2e-3,
    # bf16: output rounding <= 2^-8 relative (rms ~1.1e-3), P rounded to bf16 in attention.
    # Seen: ~1.5e-3 to 4e-3.
    "bf16": 1e-2,
}
# max |out - ref| may reach this many times the relative tolerance of max |ref|: one wrong row or
# tile, which a norm over a large output would dilute, still fails.
ELEMENT_FACTOR = 10.0

TORCH_DTYPES: dict[str, torch.dtype] = {
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp32": torch.float32,
}
_ALIASES = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32"}


def powers_of_two(low: int, high: int) -> tuple[int, ...]:
    """The powers of two from the one at or below `low` up to `high`: sweep axes."""
    return tuple(1 << e for e in range(low.bit_length() - 1, high.bit_length()))


# Whose shapes a sweep takes when no model is named: Llama 3 8B's linear layers (and 70B's in
# `full`), Llama 3 8B's attention heads.
DEFAULT_LINEAR_MODELS = {"quick": ("llama3-8b",), "full": ("llama3-8b", "llama3-70b")}
DEFAULT_ATTENTION_MODEL = "llama3-8b"


def linear_layers(
    sweep: str, model: ModelConfig | None = None, lm_head: bool = False
) -> dict[tuple[int, int], str]:
    """Each distinct weight shape (n, k) of the layers' projections (`ModelConfig.linear_shapes`,
    the per-layer ops theory.llm costs) of `model`, or of the sweep's default models, -> the
    layers that have it, e.g. "llama3-8b k_proj, llama3-8b v_proj"; with `lm_head` the LM head's
    [vocab, hidden] too (a decode step's largest GEMV)."""
    models = (model,) if model else tuple(MODELS[name] for name in DEFAULT_LINEAR_MODELS[sweep])
    layers: dict[tuple[int, int], list[str]] = {}
    for config in models:
        shapes = config.linear_shapes()
        if lm_head:
            shapes["lm_head"] = (config.vocab_size, config.hidden_size)
        for layer, shape in shapes.items():
            layers.setdefault(shape, []).append(f"{config.name} {layer}")
    return {shape: ", ".join(names) for shape, names in layers.items()}


def attention_heads(model: ModelConfig | None = None) -> tuple[dict[str, int], str]:
    """(heads, kv_heads and head_dim of `model`'s attention, or the default model's; source)."""
    config = model or MODELS[DEFAULT_ATTENTION_MODEL]
    heads = {"heads": config.num_heads, "kv_heads": config.num_kv_heads}
    return {**heads, "head_dim": config.head_dim}, f"{config.name} attention"


def dtype_name(dtype: torch.dtype | str) -> str:
    """The short name ("bf16", "fp16", "fp32") of a torch dtype or a name."""
    if isinstance(dtype, torch.dtype):
        for name, value in TORCH_DTYPES.items():
            if value == dtype:
                return name
        raise ValueError(f"unsupported dtype {dtype}")
    name = _ALIASES.get(dtype, dtype)
    if name not in TORCH_DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r} (known: {', '.join(TORCH_DTYPES)})")
    return name


def randn(shape, gen: torch.Generator, device, dtype: torch.dtype, scale: float = 1.0):
    """Standard normal values times `scale`, drawn in fp32 from `gen`, then cast: never zeros."""
    x = torch.randn(shape, generator=gen, device=device, dtype=torch.float32)
    return (x * scale).to(dtype)


def generator(device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


class OpCase:
    """Base of every op spec; subclasses are frozen dataclasses whose fields are the shape, then
    `dtype` and `source` (where the shape comes from, e.g. "llama3-8b down_proj")."""

    op: ClassVar[str]
    # Where the op sits in listings and sweeps (plugins' ops come after the built-in ones).
    order: ClassVar[int] = 100
    dtype: str
    source: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", dtype_name(self.dtype))
        self.cost()  # validates the sizes through theory

    # --- what a record needs -----------------------------------------------------------------

    @property
    def id(self) -> str:
        raise NotImplementedError

    def cost(self) -> OpCost:
        raise NotImplementedError

    def work(self) -> Work:
        """What the tiered model needs of the case: its cost and its shape family (default: a
        stream of bytes and flops, no tiles)."""
        return Work(self.cost())

    def shape_fields(self) -> dict[str, int | None]:
        """The record columns this op fills (a subset of batch, seq, m, n, k, heads, kv_heads,
        head_dim)."""
        raise NotImplementedError

    # --- what the gate and the timer need ----------------------------------------------------

    @property
    def torch_dtype(self) -> torch.dtype:
        return TORCH_DTYPES[self.dtype]

    @property
    def tolerance(self) -> float:
        return TOLERANCE[self.dtype]

    @property
    def out_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    def make_inputs(self, device, seed: int) -> tuple[Any, ...]:
        raise NotImplementedError

    def empty_output(self, device) -> torch.Tensor:
        return torch.empty(self.out_shape, dtype=self.torch_dtype, device=device)

    def call(self, fn: Callable, inputs: tuple, out: torch.Tensor):
        """Run implementation `fn` on `inputs`, writing into `out`; returns what fn returns."""
        return fn(*inputs, out=out)

    def exact(self, inputs: tuple) -> torch.Tensor:
        raise NotImplementedError

    def gate_case(self) -> OpCase:
        """The case the gate checks for this one: itself unless the float64 oracle would not
        afford it (then the same kind of case, smaller along the axes that do not change the
        code path: rows, batch, sequence)."""
        return self

    def with_fields(self, **changes) -> OpCase:
        return replace(self, **changes)

    # --- shapes for tests and sweeps ---------------------------------------------------------

    @classmethod
    def small_cases(cls, dtype: str = "fp16") -> list[OpCase]:
        """Small shapes for the conformance gate (CPU interpreter and GPU alike)."""
        raise NotImplementedError

    @classmethod
    def odd_cases(cls, dtype: str = "fp16") -> list[OpCase]:
        """Awkward shapes (ragged, not a multiple of any tile) an implementation may refuse."""
        return []

    @classmethod
    def sweep(cls, name: str, model: ModelConfig | None = None) -> list[OpCase]:
        """The cases of sweep `name` (`quick` or `full`) for this op: at the shapes of `model`
        where given (`roofbench run --model`), else at the op's default shapes. An op whose shapes
        come from no model may leave `model` out of its signature."""
        return []

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


def vendor_then_copy(vendor: str):
    """plan(case) of a reference that calls a vendor library and copies its result into `out`
    (`out.copy_(result)`: our wrapper's code). The vendor's own kernels are not ours to declare
    and count as one; the copy reads the result and writes `out` again, each beyond the
    compulsory bytes (partial bytes count both sides: the result's bytes on each kernel)."""

    def plan(case: OpCase) -> LaunchPlan:
        out_bytes = case.cost().bytes_written
        return LaunchPlan(
            (
                KernelLaunch(vendor, partial_bytes=out_bytes),
                KernelLaunch("copy_out", partial_bytes=out_bytes),
            ),
            notes=(f"{vendor}'s own kernels are not declared",),
            opaque=True,
        )

    return plan


_OPS: dict[str, type[OpCase]] = {}


def register_op(cls: type[OpCase]) -> type[OpCase]:
    """Class decorator: make `cls` the spec of op `cls.op`."""
    if not getattr(cls, "op", None):
        raise ValueError(f"{cls.__name__} has no op name")
    known = _OPS.get(cls.op)
    if known is not None and known.__qualname__ != cls.__qualname__:
        raise ValueError(f"op {cls.op!r} is already specified by {known.__name__}")
    _OPS[cls.op] = cls
    return cls


def registered_ops() -> dict[str, type[OpCase]]:
    """The op specs registered so far (the built-in ones once `kernels.catalog` is imported)."""
    return dict(_OPS)


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> tuple[float, float, float]:
    """(||out - ref||_2 / ||ref||_2, max |out - ref|, max |ref|), in float64."""
    diff = out.double() - ref
    ref_norm = torch.linalg.vector_norm(ref).item()
    rel = torch.linalg.vector_norm(diff).item() / ref_norm if ref_norm else math.inf
    return rel, diff.abs().max().item(), ref.abs().max().item()
