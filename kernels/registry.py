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
op files in `kernels/ops/`; `kernels.catalog` imports them, loads plugins (a user's file with
`--plugin`, installed packages through the `roofbench.plugins` entry point group) and is where
the suite looks implementations up. This module is only the mechanism.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from roofbench.kernels.spec import OpCase, registered_ops
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
        if op not in registered_ops():
            known = ", ".join(registered_ops()) or "none"
            raise KeyError(f"unknown op {op!r} (known: {known})")
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


def registered(op: str) -> dict[str, Impl]:
    """The implementations of `op` registered so far, by name (see `kernels.catalog`)."""
    return dict(_IMPLS.get(op, {}))


@contextlib.contextmanager
def registering_as(origin: str) -> Iterator[None]:
    """Implementations registered inside this block record `origin` (a plugin's path)."""
    _origin.append(origin)
    try:
        yield
    finally:
        _origin.pop()
