"""The rule of the house, enforced: who may import whom, and no import cycles anywhere.

Every import in every module counts, at the top or inside a function (a lazy import is still a
dependency). Modules are named as installed: roofbench.theory.x, roofbench.kernels.x,
roofbench.bench.x.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("theory", "kernels", "bench")
MAX_LINES = 450  # about: a module past this is doing more than one job


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found["roofbench." + ".".join(parts)] = path
    return found


MODULES = _modules()


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".")
    if MODULES[module].name != "__init__.py":
        package = package[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str) -> set[str]:
    """The roofbench modules (and torch/triton) `module` imports anywhere in its body."""
    tree = ast.parse(MODULES[module].read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            found.add(target)
            # `from roofbench.bench.core import timing` imports the module timing
            found |= {f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES}
    return found


def _internal(names: set[str]) -> set[str]:
    return {n for n in names if n in MODULES}


GRAPH = {m: _internal(imports_of(m)) - {m} for m in MODULES}


def test_theory_imports_neither_kernels_nor_bench_nor_torch():
    for module in (m for m in MODULES if m.startswith("roofbench.theory")):
        names = imports_of(module)
        bad = {n for n in names if n.startswith(("roofbench.kernels", "roofbench.bench"))}
        bad |= {n for n in names if n.split(".")[0] in ("torch", "triton", "numpy")}
        assert not bad, f"{module} imports {sorted(bad)}"


def test_kernels_import_only_theory_and_themselves():
    for module in (m for m in MODULES if m.startswith("roofbench.kernels")):
        bad = {n for n in imports_of(module) if n.startswith("roofbench.bench")}
        assert not bad, f"{module} imports {sorted(bad)}"


def test_sweep_and_model_never_import_each_other_and_core_neither():
    for module, deps in GRAPH.items():
        if module.startswith("roofbench.bench.sweep"):
            assert not {d for d in deps if d.startswith("roofbench.bench.model")}, module
        if module.startswith("roofbench.bench.model"):
            assert not {d for d in deps if d.startswith("roofbench.bench.sweep")}, module
        if module.startswith("roofbench.bench.core"):
            bad = {
                d for d in deps if d.startswith(("roofbench.bench.sweep", "roofbench.bench.model"))
            }
            assert not bad, f"{module} imports {sorted(bad)}"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the import graph as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return path[path.index(dep) :] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_find_cycle_finds_one_and_only_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles_anywhere():
    # A package's __init__ importing its own submodules (kernels.ops) is how it registers them,
    # not a cycle between two jobs: edges from a package to its own children are left out.
    graph = {m: {d for d in deps if not d.startswith(m + ".")} for m, deps in GRAPH.items()}
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_no_module_is_much_over_the_size_of_one_job():
    sizes = {m: len(p.read_text().splitlines()) for m, p in MODULES.items()}
    big = {m: n for m, n in sizes.items() if n > MAX_LINES}
    assert not big, big
