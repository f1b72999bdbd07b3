"""bench/cases: sweeps declared as data, costs from theory."""

import pytest

from roofbench.bench.sweep.cases import SWEEPS, make_case, sweep
from roofbench.kernels.ops.gemm import GEMV_MAX_M
from roofbench.theory import ops


def test_every_sweep_covers_every_op_with_unique_ids():
    for name in SWEEPS:
        cases = sweep(name)
        assert {c.op for c in cases} == {"gemm", "gemv", "prefill_attention", "decode_attention"}
        ids = [c.id for c in cases]
        assert len(ids) == len(set(ids)), f"{name} repeats a case"


def test_full_sweep_spans_the_declared_ranges():
    cases = sweep("full")
    linear = [c for c in cases if c.op in ("gemm", "gemv")]
    assert sorted({c.m for c in linear}) == [1 << e for e in range(14)]  # 1 .. 8192
    assert (14336, 4096) in {(c.n, c.k) for c in linear}  # Llama 3 8B gate/up projection
    assert (8192, 28672) in {(c.n, c.k) for c in linear}  # Llama 3 70B down projection
    prefill = [c for c in cases if c.op == "prefill_attention"]
    assert sorted({c.seq for c in prefill}) == [512 << e for e in range(7)]  # 512 .. 32768
    assert {c.batch for c in prefill} == {1, 8}
    decode = [c for c in cases if c.op == "decode_attention"]
    assert sorted({c.batch for c in decode}) == [1 << e for e in range(9)]  # 1 .. 256
    assert max(c.seq for c in decode) == 131072 and min(c.seq for c in decode) == 512


def test_quick_is_a_subset_of_full():
    full = {c.id for c in sweep("full")}
    assert {c.id for c in sweep("quick")} <= full


def test_small_m_is_gemv_and_large_m_is_gemm():
    for case in sweep("full"):
        if case.op in ("gemm", "gemv"):
            assert (case.op == "gemv") == (case.m <= GEMV_MAX_M)


def test_case_cost_is_the_theory_cost():
    case = make_case("gemm", m=64, n=1024, k=4096)
    assert case.cost() == ops.gemm(64, 1024, 4096, "bf16")
    attn = make_case("prefill_attention", batch=2, seq=100, heads=32, kv_heads=8, head_dim=128)
    assert attn.cost() == ops.prefill_attention(2, 32, 8, 100, 128, True, "bf16")


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"op": "gemv", "m": 17, "n": 1, "k": 1}, "that is a gemm"),
        ({"op": "gemm", "m": 0, "n": 1, "k": 1}, "positive"),
        (
            {
                "op": "decode_attention",
                "batch": 1,
                "seq": 8,
                "heads": 6,
                "kv_heads": 4,
                "head_dim": 8,
            },
            "multiple",
        ),
    ],
)
def test_invalid_cases_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_case(**kwargs)


def test_an_unknown_op_names_the_known_ones():
    with pytest.raises(KeyError, match="gemm"):
        make_case("conv", m=1)


def test_unknown_sweep_names_the_known_ones():
    with pytest.raises(ValueError, match="quick"):
        sweep("huge")
