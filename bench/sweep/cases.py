"""The cases a sweep measures: each op spec's own sweep (`OpCase.sweep`), op by op.

A case is one op at one shape and dtype (an instance of the op's spec in `kernels/ops/`); every
case is measured for each registered implementation of its op that the run asks for. Sweeps:
`quick` (the default, a few minutes) and `full`; what each holds is declared beside each op.
With a model (`roofbench run --model`) each op whose sweep takes one sweeps that model's shapes
(its linear layers for GEMM and GEMV, its heads for attention) over the same M values,
lengths and batches; `kernels.spec.linear_layers` and `attention_heads` are where they come
from. An op whose sweep takes no model (a plugin's, say) keeps its own cases.
"""

from __future__ import annotations

import inspect

from roofbench.kernels.catalog import make_case, op_names, op_spec
from roofbench.kernels.spec import OpCase
from roofbench.theory.llm import ModelConfig, load_model

SWEEPS = ("quick", "full")
Case = OpCase  # the sweep's name for a case of any op

__all__ = ["SWEEPS", "Case", "make_case", "op_names", "run_cases", "sweep", "sweep_label"]


def takes_model(spec: type[OpCase]) -> bool:
    """Whether the op's sweep takes a model's shapes (a `model` parameter)."""
    return "model" in inspect.signature(spec.sweep).parameters


def sweep(
    name: str, ops: tuple[str, ...] | None = None, model: ModelConfig | None = None
) -> list[OpCase]:
    """The cases of sweep `name` for `ops` (default: every registered op), in measuring order;
    at `model`'s shapes where given (for the ops whose sweep takes a model)."""
    if name not in SWEEPS:
        raise ValueError(f"unknown sweep {name!r} (known: {', '.join(SWEEPS)})")
    cases: list[OpCase] = []
    for op in ops or op_names():
        spec = op_spec(op)
        given = model is not None and takes_model(spec)
        cases += spec.sweep(name, model=model) if given else spec.sweep(name)
    return cases


def sweep_label(name: str, model_arg: str | None = None) -> str:
    """What records and run.json say of the sweep: its name, and the model its shapes came from
    as `roofbench run` was given it ("quick --model qwen2.json"), so that a resume must name the
    same model."""
    return name if not model_arg else f"{name} --model {model_arg}"


def run_cases(
    name: str, ops: tuple[str, ...] | None, model_arg: str | None
) -> tuple[list[OpCase], str]:
    """The cases and the sweep's label of `roofbench run --sweep name [--model model_arg]`; an
    unknown model or a config the decoder cannot build raises ValueError/KeyError naming it."""
    model = load_model(model_arg) if model_arg else None
    return sweep(name, ops, model), sweep_label(name, model_arg)
