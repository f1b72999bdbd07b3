"""The registry of implementations: every kernel the suite measures is registered here.

    from roofbench.kernels.registry import register_impl

    @register_impl("decode_attention", "mine")
    def my_decode(q, k_cache, v_cache, context_lens, out): ...

`register_impl(op, name, fn, *, baseline, supports, prepare, plan, available, description)`:

- `fn` is called the way the op's spec calls it (`OpCase.call`; the op files in `kernels/ops/`
  give each signature) and must write its result into `out` and return it;
- `baseline=True` marks the implementation every other one of the op is compared against (one
  per op: the vendor library's);
- `available()` -> None, or why it cannot run on this machine at all (no GPU, a backend torch was
  built without); `supports(case)` -> None, or why it cannot run that case. Either reason makes
  the record `skipped`, never `failed`. An implementation may also raise `Unsupported(reason)`
  when it finds out only on the call (a library that refuses a shape at run time);
- `prepare(case)` -> the callable to time for that case (same signature as fn), built outside
  the timed region: plans, workspace, a weight layout, lengths as host ints;
- `plan(case)` -> a `theory.plan.LaunchPlan`: the kernels one call launches, declared from the
  implementation's own code (never measured), or None where it is not known.

The built-in implementations (ours in Triton, torch's, each SDPA backend) are registered by the
op files in `kernels/ops/`; installed packages add theirs through the `roofbench.plugins` entry
point group, a user's file through `load_plugin(path)` (`--plugin` on the command line).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from roofbench.kernels.spec import OpCase, op_names, op_spec
from roofbench.theory.plan import LaunchPlan

ENTRY_POINT_GROUP = "roofbench.plugins"
BUILTIN = "built-in"


class Unsupported(Exception):  # noqa: N818 - a verdict, not an error of the suite
    """Raised by an implementation that cannot run a case (the record is `skipped`)."""


@dataclass(frozen=True)
class Impl:
    """One registered implementation of one op."""

    op: str
    name: str
    fn: Callable
    baseline: bool = False
    supports: Callable[[OpCase], str | None] | None = None
    prepare: Callable[[OpCase], Callable] | None = None
    plan: Callable[[OpCase], LaunchPlan | None] | None = None
    available: Callable[[], str | None] | None = None
    description: str = ""
    origin: str = BUILTIN  # "built-in", or the plugin file / module / entry point it came from
    tags: tuple[str, ...] = field(default=())

    def unavailable(self) -> str | None:
        """None when it can run on this machine, else why not."""
        return self.available() if self.available else None

    def refuses(self, case: OpCase) -> str | None:
        """None when it can run `case` here, else why not (machine first, then the case)."""
        return self.unavailable() or (self.supports(case) if self.supports else None)

    def bind(self, case: OpCase) -> Callable:
        """The callable to run on `case` (prepare's, or fn itself)."""
        return self.prepare(case) if self.prepare else self.fn

    def launch_plan(self, case: OpCase) -> LaunchPlan | None:
        return self.plan(case) if self.plan else None


_IMPLS: dict[str, dict[str, Impl]] = {}
_origin: list[str] = [BUILTIN]
_state = {"builtins": False, "entry_points": False}
plugin_errors: list[str] = []  # entry points that failed to load, for `roofbench list`


def register_impl(
    op: str,
    name: str,
    fn: Callable | None = None,
    *,
    baseline: bool = False,
    supports: Callable[[OpCase], str | None] | None = None,
    prepare: Callable[[OpCase], Callable] | None = None,
    plan: Callable[[OpCase], LaunchPlan | None] | None = None,
    available: Callable[[], str | None] | None = None,
    description: str = "",
    replace: bool = False,
):
    """Register `fn` as implementation `name` of `op`; without `fn`, a decorator.

    A second registration of the same (op, name) raises ValueError unless `replace=True`; a
    second baseline of one op raises too.
    """

    def add(function: Callable) -> Callable:
        if not callable(function):
            raise TypeError(f"{op}/{name}: the implementation must be callable")
        if not name or not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"implementation name {name!r}: use letters, digits, _ and -")
        op_spec(op)  # an unknown op raises KeyError naming the known ones
        table = _IMPLS.setdefault(op, {})
        old = table.get(name)
        if old is not None and not replace:
            raise ValueError(f"{op} already has an implementation {name!r} (from {old.origin})")
        if baseline:
            other = next((i for i in table.values() if i.baseline and i.name != name), None)
            if other is not None:
                raise ValueError(f"{op} already has the baseline {other.name!r}")
        table[name] = Impl(
            op,
            name,
            function,
            baseline=baseline,
            supports=supports,
            prepare=prepare,
            plan=plan,
            available=available,
            description=description or (function.__doc__ or "").strip().split("\n")[0],
            origin=_origin[-1],
        )
        return function

    return add if fn is None else add(fn)


def unregister(op: str, name: str) -> None:
    """Remove one implementation (tests register throw-away ones)."""
    _IMPLS.get(op, {}).pop(name, None)


def _ensure_loaded() -> None:
    if not _state["builtins"]:
        _state["builtins"] = True
        op_names()  # imports kernels/ops, whose files register the built-in implementations
    if not _state["entry_points"]:
        _state["entry_points"] = True
        load_entry_points()


def impls(op: str) -> list[Impl]:
    """The implementations of `op`, baseline last (in the order they were registered)."""
    _ensure_loaded()
    op_spec(op)
    table = _IMPLS.get(op, {})
    return sorted(table.values(), key=lambda i: i.baseline)


def get_impl(op: str, name: str) -> Impl:
    """Implementation `name` of `op`; KeyError naming the known ones."""
    _ensure_loaded()
    table = _IMPLS.get(op, {})
    if name not in table:
        known = ", ".join(table) or "none"
        raise KeyError(f"{op} has no implementation {name!r} (known: {known})")
    return table[name]


def baseline(op: str) -> Impl | None:
    """The implementation the others of `op` are compared against (None if none is declared)."""
    return next((i for i in impls(op) if i.baseline), None)


def impl_names(ops: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """Every implementation name of `ops` (default: all ops), each once, in registration order."""
    _ensure_loaded()
    names: dict[str, None] = {}
    for op in ops or op_names():
        names.update(dict.fromkeys(i.name for i in impls(op)))
    return tuple(names)


@contextlib.contextmanager
def _registering_as(origin: str) -> Iterator[None]:
    _origin.append(origin)
    try:
        yield
    finally:
        _origin.pop()


def load_plugin(target: str) -> list[Impl]:
    """Import a plugin: a path to a .py file, or an importable module name. Returns the
    implementations it registered. Raises ValueError (one line) when it cannot be imported."""
    _ensure_loaded()
    before = {(i.op, i.name, i.fn) for table in _IMPLS.values() for i in table.values()}
    path = Path(target)
    with _registering_as(target):
        try:
            if target.endswith(".py") or path.is_file():
                if not path.is_file():
                    raise ValueError(f"plugin {target}: no such file")
                module_name = f"roofbench_plugin_{abs(hash(str(path.resolve())))}"
                spec = importlib.util.spec_from_file_location(module_name, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[module_name] = module
                spec.loader.exec_module(module)
            else:
                importlib.import_module(target)
        except ValueError:
            raise
        except Exception as err:
            raise ValueError(f"plugin {target}: raised {type(err).__name__}: {err}") from err
    return [
        i for table in _IMPLS.values() for i in table.values() if (i.op, i.name, i.fn) not in before
    ]


def load_plugins(targets: list[str] | tuple[str, ...] | None) -> list[Impl]:
    added: list[Impl] = []
    for target in targets or ():
        added += load_plugin(target)
    return added


def load_entry_points() -> None:
    """Import every installed `roofbench.plugins` entry point (a module, or a callable that
    registers); one that fails is remembered in `plugin_errors` and warned about, not fatal."""
    from importlib.metadata import entry_points

    try:
        found = entry_points(group=ENTRY_POINT_GROUP)
    except TypeError:  # pragma: no cover - Python < 3.10's entry_points() takes no group
        found = entry_points().get(ENTRY_POINT_GROUP, [])
    for ep in found:
        with _registering_as(f"entry point {ep.name} ({ep.value})"):
            try:
                loaded = ep.load()
                if callable(loaded) and not isinstance(loaded, type(sys)):
                    loaded()
            except Exception as err:  # noqa: BLE001 - one broken package must not stop the suite
                message = f"entry point {ep.name}: {type(err).__name__}: {err}"
                plugin_errors.append(message)
                warnings.warn(message, stacklevel=2)
