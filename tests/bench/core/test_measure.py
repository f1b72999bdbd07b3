"""bench/measure and bench/timing glue that needs no GPU: records from theory and from times."""

import pytest

from roofbench.bench.core.gpu_clock import GpuClock
from roofbench.bench.core.measure import (
    RunContext,
    base_record,
    declared_plan,
    fill_plan,
    fill_timing,
)
from roofbench.bench.core.timing import TimingStats, warm_up
from roofbench.kernels.catalog import get_impl, make_case
from roofbench.theory import ops
from roofbench.theory.roofline import Roof

MEASURED = Roof(peak_flops=700e12, bandwidth_bytes_per_s=4.2e12, launch_s=1e-6, source="m")
DATASHEET = Roof(peak_flops=989e12, bandwidth_bytes_per_s=4.8e12, launch_s=4e-6, source="d")
CTX = RunContext(DATASHEET, MEASURED, telemetry=None, rule=None, identity={"gpu": "G", "x": 1})


def test_base_record_carries_the_theory_and_both_predictions():
    case = make_case("gemv", m=1, n=14336, k=4096)
    record = base_record(case, "triton", CTX)
    cost = ops.gemm(1, 14336, 4096)
    assert (record.flops, record.bytes, record.intensity) == (
        cost.flops,
        cost.bytes_,
        cost.intensity,
    )
    assert record.predicted_s == pytest.approx(1e-6 + cost.bytes_ / 4.2e12)
    assert record.predicted_datasheet_s == pytest.approx(4e-6 + cost.bytes_ / 4.8e12)
    assert record.bound == "memory" and record.gpu == "G"
    assert (record.m, record.n, record.k, record.seq) == (1, 14336, 4096, None)


def test_fill_timing_derives_error_rates_and_roof_fraction():
    case = make_case("gemm", m=4096, n=4096, k=4096)
    record = base_record(case, "torch", CTX)
    stats = TimingStats.from_times([2e-4] * 5 + [2.2e-4] * 5, "events")
    filled = fill_timing(record, stats, MEASURED)
    flops = 2 * 4096**3
    assert filled.measured_s == stats.median_s
    assert filled.error == pytest.approx(stats.median_s / record.predicted_s - 1)
    assert filled.achieved_tflops == pytest.approx(flops / stats.median_s / 1e12)
    assert filled.roof_fraction == pytest.approx((flops / 700e12) / stats.median_s)
    assert filled.p20_s <= filled.measured_s <= filled.p80_s and filled.samples == 10


@pytest.mark.parametrize(
    "op,shape,gate_shape",
    [
        ("gemv", {"m": 4, "n": 64, "k": 32}, (4, 64)),
        ("gemm", {"m": 8192, "n": 64, "k": 32}, (2048, 64)),
        (
            "prefill_attention",
            {"batch": 8, "seq": 32768, "heads": 32, "kv_heads": 8, "head_dim": 128},
            (2, 32, 4096, 128),
        ),
        (
            "decode_attention",
            {"batch": 3, "seq": 100000, "heads": 32, "kv_heads": 8, "head_dim": 128},
            (2, 32, 128),
        ),
    ],
)
def test_the_gate_shrinks_only_the_axes_that_keep_the_code_path(op, shape, gate_shape):
    case = make_case(op, **shape)
    small = case.gate_case()
    assert type(small) is type(case) and small.out_shape == gate_shape
    assert small.head_dim == case.head_dim if hasattr(case, "head_dim") else small.n == case.n
    assert small.empty_output("meta").numel() <= case.empty_output("meta").numel()


def test_fill_plan_records_the_declared_launches_and_partials():
    case = make_case("decode_attention", batch=1, seq=8192, heads=32, kv_heads=8, head_dim=128)
    record = fill_plan(
        base_record(case, "triton", CTX), *declared_plan(get_impl(case.op, "triton"), case)
    )
    # One sequence of 8 KV heads on 132 SMs: the context is split, so pass 2 combines them.
    assert record.launches == 2 and record.plan_source == "declared"
    assert record.partial_bytes > 0 and record.plan.startswith("2 kernels: decode_split")
    torch_record = fill_plan(
        base_record(case, "torch", CTX), *declared_plan(get_impl(case.op, "torch"), case)
    )
    # The reference: SDPA (its own kernels undeclared, counted as one), then the copy into out.
    assert torch_record.launches == 2 and torch_record.plan.startswith("2 kernels: sdpa")


class ScriptedTimer:
    def __init__(self):
        self.calls = 0

    def measure(self, n):
        self.calls += n
        return [1e-5] * n


def test_warm_up_runs_for_the_time_asked():
    ticks = iter(range(100))
    timer = ScriptedTimer()
    drawn = warm_up(timer, seconds=5, clock=lambda: next(ticks))
    assert drawn == timer.calls == 5


def test_gpu_clock_advances_only_by_what_it_is_given():
    clock = GpuClock()
    start = clock()
    clock.advance(3e-5)
    clock.advance(2e-5)
    assert clock() - start == pytest.approx(5e-5)
    with pytest.raises(ValueError):
        clock.advance(-1e-6)


def test_a_wrong_registered_implementation_is_failed_and_never_timed(monkeypatch):
    """The gate runs before any timer exists: a wrong kernel's record is `failed`, untimed."""
    from pathlib import Path

    from roofbench.bench.core import measure
    from roofbench.kernels.catalog import load_plugin
    from roofbench.kernels.registry import unregister

    plugin = Path(__file__).resolve().parents[2] / "plugins" / "wrong_decode.py"
    (wrong,) = load_plugin(str(plugin))
    timers = []
    monkeypatch.setattr(measure, "choose_timer", lambda *a, **k: timers.append(a))
    try:
        case = make_case("decode_attention", batch=2, seq=96, heads=8, kv_heads=2, head_dim=64,
                         dtype="fp32")  # fmt: skip
        record = measure.measure(case, wrong, CTX, "cpu")
        assert record.status == "failed" and record.reason.startswith("gate: relative error")
        assert record.measured_s is None and record.samples is None and timers == []
        assert record.impl == "wrong" and record.rel_err > 1e-2
    finally:
        unregister("decode_attention", "wrong")


def test_a_refused_case_is_skipped_with_the_reason_before_the_gate():
    case = make_case("prefill_attention", batch=1, seq=32, heads=2, kv_heads=1, head_dim=320,
                     dtype="fp32")  # fmt: skip
    record = measure_on_cpu(case, "triton")
    assert record.status == "skipped" and "outside 16..256" in record.reason
    assert record.max_abs_err is None  # the gate never ran


def measure_on_cpu(case, impl):
    from roofbench.bench.core import measure

    return measure.measure(case, impl, CTX, "cpu")


def test_a_signal_during_a_case_stops_the_sweep_instead_of_failing_the_case(monkeypatch):
    """A SIGTERM that lands while a case is timed is not "one broken case" to record and move
    past: it leaves measure() so the sweep can write what it has and exit 143."""
    import signal

    from roofbench.bench.core import measure
    from roofbench.bench.core.signals import Interrupted

    def interrupted(*args, **kwargs):
        raise Interrupted(signal.SIGTERM)

    monkeypatch.setattr(measure, "time_case", interrupted)
    monkeypatch.setattr(measure, "choose_timer", interrupted)
    case = make_case("gemv", m=1, n=64, k=128, dtype="fp32")
    with pytest.raises(Interrupted):
        measure_on_cpu(case, "triton")
    # A case that breaks is still recorded and the sweep goes on.
    monkeypatch.setattr(measure, "time_case", lambda *a, **k: 1 / 0)
    assert measure_on_cpu(case, "triton").reason.startswith("raised ZeroDivisionError")
