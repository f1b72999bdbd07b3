"""The cases a sweep measures: each op spec's own sweep (`OpCase.sweep`), op by op.

A case is one op at one shape and dtype (an instance of the op's spec in `kernels/ops/`); every
case is measured for each registered implementation of its op that the run asks for. Sweeps:
`quick` (the default, a few minutes) and `full`; what each holds is declared beside each op.
"""

from __future__ import annotations

from roofbench.kernels.catalog import make_case, op_names, op_spec
from roofbench.kernels.spec import OpCase

SWEEPS = ("quick", "full")
Case = OpCase  # the sweep's name for a case of any op

__all__ = ["SWEEPS", "Case", "make_case", "op_names", "sweep"]


def sweep(name: str, ops: tuple[str, ...] | None = None) -> list[OpCase]:
    """The cases of sweep `name` for `ops` (default: every registered op), in measuring order."""
    if name not in SWEEPS:
        raise ValueError(f"unknown sweep {name!r} (known: {', '.join(SWEEPS)})")
    return [case for op in ops or op_names() for case in op_spec(op).sweep(name)]
