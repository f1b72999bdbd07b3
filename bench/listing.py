"""`roofbench list`: every op, its implementations, and which can run here and why not."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from roofbench.kernels import catalog
from roofbench.kernels.catalog import op_names, op_spec


def listing() -> dict:
    """{"ops": [{op, spec, sweeps, impls: [{name, baseline, available, reason, origin,
    description}]}], "plugin_errors": [...]}"""
    ops = []
    for op in op_names():
        spec = op_spec(op)
        impls = []
        for impl in catalog.impls(op):
            why = impl.unavailable()
            impls.append(
                {
                    "name": impl.name,
                    "baseline": impl.baseline,
                    "available": why is None,
                    "reason": why or "",
                    "origin": impl.origin,
                    "description": impl.description,
                }
            )
        sweeps = {name: len(spec.sweep(name)) for name in ("quick", "full")}
        ops.append({"op": op, "spec": spec.__name__, "cases": sweeps, "impls": impls})
    return {"ops": ops, "plugin_errors": list(catalog.plugin_errors)}


def render_listing(data: dict, console: Console) -> None:
    wide = console.width >= 140  # the descriptions only where they fit beside the rest
    table = Table(title="ops and implementations")
    for column in ("op", "impl", "baseline", "here", "from") + (("what",) if wide else ()):
        table.add_column(column)
    for op in data["ops"]:
        cases = op["cases"]
        label = f"{op['op']}\n({cases['quick']} quick / {cases['full']} full cases)"
        for i, impl in enumerate(op["impls"]):
            here = "yes" if impl["available"] else f"no: {impl['reason']}"
            row = [label if i == 0 else "", impl["name"], "yes" if impl["baseline"] else ""]
            row += [here, impl["origin"]] + ([impl["description"]] if wide else [])
            table.add_row(*row)
    console.print(table)
    for error in data["plugin_errors"]:
        console.print(f"[red]plugin not loaded: {error}[/]")
