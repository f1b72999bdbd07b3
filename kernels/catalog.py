"""Every op and implementation the suite can measure: the built-in ones (importing this module
imports each op file of `kernels/ops/`), installed packages' (`roofbench.plugins` entry points)
and a user's files (`load_plugin`). The suite looks ops and implementations up here.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import warnings
from pathlib import Path

from roofbench.kernels import ops as _builtin_ops  # noqa: F401 - registers every built-in op
from roofbench.kernels.registry import BUILTIN, Impl, registered, registering_as
from roofbench.kernels.spec import OpCase, registered_ops

ENTRY_POINT_GROUP = "roofbench.plugins"
plugin_errors: list[str] = []  # entry points that failed to load, for `roofbench list`
_state = {"entry_points": False}

__all__ = ["BUILTIN", "ENTRY_POINT_GROUP", "Impl"]


def op_names() -> tuple[str, ...]:
    """Every registered op, built-in ones first in their declared order."""
    _load_entry_points_once()
    specs = registered_ops()
    return tuple(sorted(specs, key=lambda op: (specs[op].order, op)))


def op_spec(op: str) -> type[OpCase]:
    """The spec class of `op`; KeyError naming the known ops."""
    specs = registered_ops()
    if op not in specs:
        raise KeyError(f"unknown op {op!r} (known: {', '.join(op_names())})")
    return specs[op]


def make_case(op: str, **shape) -> OpCase:
    """A case of `op` from its fields (shape, dtype, source); a bad size raises ValueError."""
    return op_spec(op)(**shape)


def impls(op: str) -> list[Impl]:
    """The implementations of `op`, baseline last (otherwise in the order they registered)."""
    _load_entry_points_once()
    op_spec(op)
    return sorted(registered(op).values(), key=lambda i: i.baseline)


def get_impl(op: str, name: str) -> Impl:
    """Implementation `name` of `op`; KeyError naming the known ones."""
    _load_entry_points_once()
    table = registered(op)
    if name not in table:
        raise KeyError(f"{op} has no implementation {name!r} (known: {', '.join(table) or 'none'})")
    return table[name]


def baseline(op: str) -> Impl | None:
    """The implementation the others of `op` are compared against (None if none is declared)."""
    return next((i for i in impls(op) if i.baseline), None)


def impl_names(ops: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """Every implementation name of `ops` (default: all ops), each once, in registration order."""
    names: dict[str, None] = {}
    for op in ops or op_names():
        names.update(dict.fromkeys(i.name for i in impls(op)))
    return tuple(names)


def _all() -> set[tuple[str, str, int]]:
    return {(op, i.name, id(i.fn)) for op in registered_ops() for i in registered(op).values()}


def load_plugin(target: str) -> list[Impl]:
    """Import a plugin: a path to a .py file, or an importable module name. Returns the
    implementations it registered. Raises ValueError (one line) when it cannot be imported."""
    _load_entry_points_once()
    before = _all()
    path = Path(target)
    with registering_as(target):
        try:
            if target.endswith(".py") or path.is_file():
                if not path.is_file():
                    raise ValueError(f"plugin {target}: no such file")
                name = f"roofbench_plugin_{abs(hash(str(path.resolve())))}"
                spec = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                spec.loader.exec_module(module)
            else:
                importlib.import_module(target)
        except ValueError:
            raise
        except Exception as err:
            raise ValueError(f"plugin {target}: raised {type(err).__name__}: {err}") from err
    added = _all() - before
    return [
        i
        for op in registered_ops()
        for i in registered(op).values()
        if (op, i.name, id(i.fn)) in added
    ]


def load_plugins(targets) -> list[Impl]:
    added: list[Impl] = []
    for target in targets or ():
        added += load_plugin(target)
    return added


def _load_entry_points_once() -> None:
    if not _state["entry_points"]:
        _state["entry_points"] = True
        load_entry_points()


def load_entry_points() -> None:
    """Import every installed `roofbench.plugins` entry point (a module, or a callable that
    registers); one that fails is remembered in `plugin_errors` and warned about, not fatal."""
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        with registering_as(f"entry point {ep.name} ({ep.value})"):
            try:
                loaded = ep.load()
                if callable(loaded):
                    loaded()
            except Exception as err:  # noqa: BLE001 - one broken package must not stop the suite
                message = f"entry point {ep.name}: {type(err).__name__}: {err}"
                plugin_errors.append(message)
                warnings.warn(message, stacklevel=2)
