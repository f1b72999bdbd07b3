"""Correctness gate: an implementation that fails `check` is never timed.

`check(impl, case, device)` runs one implementation once on fresh random inputs and compares it
with the op's oracle (`OpCase.exact`), computed in float64 from the same (upcast) inputs:

- the output buffer is poisoned with NaN before the run and passed as `out=`; a NaN left after
  the run (an element never written, or a NaN produced) fails the gate, and so does an
  implementation that returns some other tensor than `out`;
- rel_err = ||out - ref||_2 / ||ref||_2 over the whole output must be <= the case's tolerance
  (`kernels.spec.TOLERANCE` by dtype);
- max_abs_err = max |out - ref| must be <= ELEMENT_FACTOR * tolerance * max |ref|, which
  catches a wrong row or tile that a norm over a large output would dilute.

Inputs are never zeros: the op spec draws them from randn, scaled so outputs are O(1).
`impl` is a registered `Impl` (its `prepare` runs first, as it will before timing), a name in
the registry, or a bare callable with the op's signature. An implementation that raises
`Unsupported` is not failed: the result says `unsupported` with its reason.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from roofbench.kernels._util import default_device
from roofbench.kernels.catalog import get_impl
from roofbench.kernels.registry import Impl, Unsupported
from roofbench.kernels.spec import ELEMENT_FACTOR, OpCase, relative_error


@dataclass(frozen=True)
class CheckResult:
    max_abs_err: float
    rel_err: float
    ok: bool
    reason: str
    tol: float = float("nan")
    seed: int = -1
    unsupported: bool = False  # the implementation refused the case (Unsupported)


def _callable(impl: Impl | Callable, case: OpCase) -> Callable:
    return impl.bind(case) if isinstance(impl, Impl) else impl


def check(
    impl: Impl | Callable | str,
    case: OpCase,
    device: torch.device | str | None = None,
    seed: int | None = None,
) -> CheckResult:
    """Run `impl` once on `case` with fresh random inputs (or `seed`'s) and grade it.

    device defaults to CUDA when present, else the CPU. Never raises for a failing
    implementation: an exception becomes a failed result whose reason names it.
    """
    device = torch.device(device) if device is not None else default_device()
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little")
    tol = case.tolerance
    if isinstance(impl, str):
        impl = get_impl(case.op, impl)
    refused = impl.refuses(case) if isinstance(impl, Impl) else None
    if refused:
        return CheckResult(math.nan, math.nan, False, refused, tol, seed, unsupported=True)
    inputs = case.make_inputs(device, seed)
    out = case.empty_output(device).fill_(float("nan"))
    try:
        fn = _callable(impl, case)
        result = case.call(fn, inputs, out)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    except Unsupported as exc:
        return CheckResult(math.nan, math.nan, False, str(exc), tol, seed, unsupported=True)
    except Exception as exc:  # a broken kernel is a failed check, not a crash of the suite
        return CheckResult(
            math.nan, math.nan, False, f"raised {type(exc).__name__}: {exc}", tol, seed
        )
    if not isinstance(result, torch.Tensor) or result.data_ptr() != out.data_ptr():
        return CheckResult(
            math.nan, math.nan, False, "did not write its result into out=", tol, seed
        )

    ref = case.exact(inputs)
    rel, max_abs, ref_max = relative_error(out, ref)
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
