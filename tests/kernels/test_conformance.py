"""Every registered implementation of every op, gated on the op's own small shapes.

On the CPU the Triton kernels run under the interpreter (fp16/fp32: the interpreter's bf16
dots are wrong); on a GPU every implementation runs in bf16. On every `small_cases` and
`odd_cases` shape an implementation passes or refuses with a reason (`unsupported`: a skip,
never a wrong answer), and it must pass at least one small case. Our kernels and the baselines
refuse no small case. Implementations that cannot run on this machine are GPU tests and skip
with that reason.
"""

import pytest
import torch

from roofbench.kernels.catalog import impls, op_names, op_spec
from roofbench.kernels.check import check

ON_GPU = torch.cuda.is_available()
DEVICE = "cuda" if ON_GPU else "cpu"
DTYPES = ("bf16",) if ON_GPU else ("fp16", "fp32")


def _params():
    for op in op_names():
        for impl in impls(op):
            why = impl.unavailable()
            # On a GPU every implementation runs there (a GPU test, which `pytest -m gpu`
            # selects); on a CPU those that cannot run here are GPU tests that skip.
            marks = [pytest.mark.gpu] if why or ON_GPU else []
            yield pytest.param(impl, id=f"{op}-{impl.name}", marks=marks)


@pytest.mark.parametrize("impl", list(_params()))
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_implementation_passes_the_small_cases_it_does_not_refuse(impl, dtype):
    passed = 0
    for case in op_spec(impl.op).small_cases(dtype):
        res = check(impl, case, DEVICE)
        if res.unsupported and impl.name not in ("triton", "torch"):
            assert res.reason and not res.ok
            continue
        assert res.ok, f"{case.id}: {res.reason}"
        passed += 1
    assert passed, f"{impl.op}/{impl.name} refused every small case"


@pytest.mark.parametrize("impl", list(_params()))
@pytest.mark.parametrize("dtype", DTYPES)
def test_odd_cases_are_passed_or_refused_with_a_reason(impl, dtype):
    for case in op_spec(impl.op).odd_cases(dtype):
        res = check(impl, case, DEVICE)
        if res.unsupported:
            assert res.reason and not res.ok
        else:
            assert res.ok, f"{case.id}: {res.reason}"


def test_every_op_declares_cases_to_gate_and_to_sweep():
    for op in op_names():
        spec = op_spec(op)
        assert spec.small_cases() and spec.sweep("quick") and spec.sweep("full")
        quick = {c.id for c in spec.sweep("quick")}
        assert quick <= {c.id for c in spec.sweep("full")}
        for case in spec.small_cases():
            assert case.gate_case() == case, "a small case is already the gate's size"


def test_sdpa_refusal_becomes_unsupported_not_failed(monkeypatch):
    """A forced backend that finds no kernel is a skip with torch's reason: here cuDNN's
    attention forced on CPU tensors, which it cannot take."""
    from roofbench.kernels import sdpa
    from roofbench.kernels.attention import attention_reference
    from roofbench.kernels.ops.prefill_attention import PrefillAttentionCase

    monkeypatch.setattr(sdpa, "unavailable", lambda backend: None)
    forced = sdpa.forced("cudnn", attention_reference)
    case = PrefillAttentionCase(batch=1, heads=2, kv_heads=2, seq=16, head_dim=64, dtype="fp32")
    res = check(forced, case, "cpu")
    assert res.unsupported and not res.ok and "cudnn backend refused" in res.reason
