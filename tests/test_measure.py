"""bench/measure and bench/timing glue that needs no GPU: records from theory and from times."""

import pytest

from roofbench.bench.cases import Case
from roofbench.bench.gpu_clock import GpuClock
from roofbench.bench.measure import RunContext, base_record, fill_timing, kernel_case
from roofbench.bench.timing import TimingStats, warm_up
from roofbench.kernels import check as gate
from roofbench.theory import ops
from roofbench.theory.roofline import Roof

MEASURED = Roof(peak_flops=700e12, bandwidth_bytes_per_s=4.2e12, launch_s=1e-6, source="m")
DATASHEET = Roof(peak_flops=989e12, bandwidth_bytes_per_s=4.8e12, launch_s=4e-6, source="d")
CTX = RunContext(DATASHEET, MEASURED, telemetry=None, rule=None, identity={"gpu": "G", "x": 1})


def test_base_record_carries_the_theory_and_both_predictions():
    case = Case("gemv", m=1, n=14336, k=4096)
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
    case = Case("gemm", m=4096, n=4096, k=4096)
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
    "case,kind,shape",
    [
        (Case("gemv", m=4, n=64, k=32), gate.GemvCase, (4, 64)),
        (Case("gemm", m=8192, n=64, k=32), gate.GemmCase, (8192, 64)),
        (
            Case("prefill_attention", batch=8, seq=32768, heads=32, kv_heads=8, head_dim=128),
            gate.AttentionCase,
            (8, 32, 32768, 128),
        ),
        (
            Case("decode_attention", batch=3, seq=1000, heads=32, kv_heads=8, head_dim=128),
            gate.DecodeCase,
            (3, 32, 128),
        ),
    ],
)
def test_kernel_case_maps_each_op_and_shrinks_only_for_the_gate(case, kind, shape):
    full = kernel_case(case)
    assert isinstance(full, kind) and full.out_shape == shape
    small = kernel_case(case, shrink=True)
    assert isinstance(small, kind)
    assert small.empty_output("meta").numel() <= full.empty_output("meta").numel()


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
