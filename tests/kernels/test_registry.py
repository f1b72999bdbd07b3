"""kernels/registry.py: registration rules, lookups, plugins from a file, a module and an entry
point, and the verdicts an implementation gives about itself."""

import sys
import textwrap

import pytest

from roofbench.kernels import catalog, registry
from roofbench.kernels.catalog import get_impl, impls, load_plugin, make_case, op_names
from roofbench.kernels.registry import register_impl, unregister


def _copy(a, w, out=None):
    return out.copy_(a @ w.T)


@pytest.fixture
def scratch():
    """Names registered by a test, removed after it."""
    names: list[tuple[str, str]] = []
    yield names
    for op, name in names:
        unregister(op, name)


def test_every_op_has_ours_and_exactly_one_baseline():
    for op in op_names():
        names = [i.name for i in impls(op)]
        assert "triton" in names and "torch" in names
        assert [i.name for i in impls(op) if i.baseline] == ["torch"]
        assert catalog.baseline(op).name == "torch"


def test_attention_ops_register_every_sdpa_backend():
    for op in ("prefill_attention", "decode_attention"):
        names = {i.name for i in impls(op)}
        assert {"sdpa_flash", "sdpa_cudnn", "sdpa_efficient"} <= names


def test_a_second_registration_of_a_name_is_refused_unless_replacing(scratch):
    register_impl("gemm", "copy_mm", _copy)
    scratch.append(("gemm", "copy_mm"))
    with pytest.raises(ValueError, match="already has an implementation 'copy_mm'"):
        register_impl("gemm", "copy_mm", _copy)
    register_impl("gemm", "copy_mm", _copy, replace=True, description="again")
    assert get_impl("gemm", "copy_mm").description == "again"


def test_a_second_baseline_is_refused(scratch):
    with pytest.raises(ValueError, match="already has the baseline 'torch'"):
        register_impl("gemm", "other_base", _copy, baseline=True)
    assert "other_base" not in {i.name for i in impls("gemm")}


def test_unknown_ops_and_names_say_what_is_known(scratch):
    with pytest.raises(KeyError, match="gemm"):
        register_impl("conv2d", "mine", _copy)
    with pytest.raises(KeyError, match="known: triton"):
        get_impl("gemm", "nope")
    with pytest.raises(ValueError, match="letters"):
        register_impl("gemm", "bad name!", _copy)


def test_the_decorator_returns_the_function_and_takes_its_docstring(scratch):
    @register_impl("gemv", "doc_mm")
    def documented(x, w, out=None):
        """A one-line description."""
        return _copy(x, w, out)

    scratch.append(("gemv", "doc_mm"))
    impl = get_impl("gemv", "doc_mm")
    assert impl.fn is documented and impl.description == "A one-line description."
    assert impl.origin == registry.BUILTIN and not impl.baseline


def test_refuses_asks_the_machine_first_then_the_case(scratch):
    register_impl(
        "gemm",
        "picky",
        _copy,
        available=lambda: None,
        supports=lambda case: "odd K" if case.k % 2 else None,
    )
    register_impl(
        "gemm", "absent", _copy, available=lambda: "no such device", supports=lambda c: None
    )
    scratch += [("gemm", "picky"), ("gemm", "absent")]
    odd, even = make_case("gemm", m=32, n=8, k=9), make_case("gemm", m=32, n=8, k=8)
    assert get_impl("gemm", "picky").refuses(odd) == "odd K"
    assert get_impl("gemm", "picky").refuses(even) is None
    assert get_impl("gemm", "absent").refuses(even) == "no such device"


def test_bind_runs_prepare_once_per_case(scratch):
    prepared = []

    def prepare(case):
        prepared.append(case.id)
        return _copy

    register_impl("gemm", "prepped", _copy, prepare=prepare)
    scratch.append(("gemm", "prepped"))
    case = make_case("gemm", m=32, n=8, k=8)
    assert get_impl("gemm", "prepped").bind(case) is _copy and prepared == [case.id]


PLUGIN = '''
from roofbench.kernels.registry import register_impl


@register_impl("gemv", "from_file")
def from_file(x, w, out=None):
    """registered from a file"""
    return out.copy_(x @ w.T)
'''


def test_a_plugin_file_registers_with_its_path_as_origin(tmp_path):
    path = tmp_path / "plugin_file.py"
    path.write_text(PLUGIN)
    try:
        added = load_plugin(str(path))
        assert [(i.op, i.name, i.origin) for i in added] == [("gemv", "from_file", str(path))]
        assert get_impl("gemv", "from_file").description == "registered from a file"
    finally:
        unregister("gemv", "from_file")


def test_a_plugin_module_is_imported_by_name(tmp_path, monkeypatch):
    (tmp_path / "plugin_module_x.py").write_text(PLUGIN.replace("from_file", "from_module"))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        added = load_plugin("plugin_module_x")
        assert [i.name for i in added] == ["from_module"]
        assert added[0].origin == "plugin_module_x"
    finally:
        unregister("gemv", "from_module")
        sys.modules.pop("plugin_module_x", None)


def test_a_broken_plugin_is_one_line_naming_it(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ValueError, match=r"plugin .*broken.py: raised RuntimeError: boom"):
        load_plugin(str(path))
    with pytest.raises(ValueError, match="no such file"):
        load_plugin(str(tmp_path / "missing.py"))
    with pytest.raises(ValueError, match="ModuleNotFoundError"):
        load_plugin("no_such_plugin_module_anywhere")


class _EntryPoint:
    def __init__(self, name, loaded):
        self.name, self.value, self._loaded = name, f"pkg:{name}", loaded

    def load(self):
        if isinstance(self._loaded, Exception):
            raise self._loaded
        return self._loaded


def test_entry_points_register_and_a_broken_one_is_reported(monkeypatch):
    def register():
        register_impl("gemv", "from_entry_point", _copy)

    found = [_EntryPoint("good", register), _EntryPoint("bad", ImportError("missing dep"))]
    monkeypatch.setattr("importlib.metadata.entry_points", lambda group=None: found)
    monkeypatch.setattr(catalog, "plugin_errors", [])
    try:
        with pytest.warns(UserWarning, match="missing dep"):
            catalog.load_entry_points()
        impl = get_impl("gemv", "from_entry_point")
        assert impl.origin == "entry point good (pkg:good)"
        assert catalog.plugin_errors == ["entry point bad: ImportError: missing dep"]
    finally:
        unregister("gemv", "from_entry_point")


def test_readme_recipe_is_a_working_plugin(tmp_path):
    """The plugin the README shows loads and passes the gate on the CPU."""
    from pathlib import Path

    from roofbench.kernels.check import check

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Benchmark your own kernel", 1)[1]
    code = section.split("```python", 1)[1].split("```", 1)[0]
    path = tmp_path / "mine.py"
    path.write_text(textwrap.dedent(code))
    try:
        (impl,) = load_plugin(str(path))
        assert (impl.op, impl.name) == ("decode_attention", "mine")
        for case in impl_cases("decode_attention"):
            res = check(impl, case, "cpu")
            assert res.ok, (case.id, res.reason)
    finally:
        unregister("decode_attention", "mine")


def impl_cases(op):
    from roofbench.kernels.catalog import op_spec

    spec = op_spec(op)
    return spec.small_cases("fp32") + spec.odd_cases("fp32")
