"""theory/step (and the element-wise formulas of theory/ops): a step as the sum of its kernels'
tiers, its breakdown, and the costs of the decoder's element-wise kernels, on the committed
H200 calibration."""

import json
from pathlib import Path

import pytest

from roofbench.theory import ops, tiers
from roofbench.theory.hardware import get_gpu
from roofbench.theory.plan import KernelLaunch, LaunchPlan
from roofbench.theory.roofline import Roof
from roofbench.theory.step import BREAKDOWN, StepKernel, kernel_breakdown, predict_step
from roofbench.theory.tiers import Calibration, Work

CALIBRATION = Path(__file__).resolve().parents[2] / "results" / "h200" / "calibration.json"
CAL = Calibration.from_dict(json.loads(CALIBRATION.read_text())["calibration"])
DATASHEET = Roof.from_spec(get_gpu("h200"))


# --- the element-wise formulas -------------------------------------------------------------------


def test_elementwise_moves_what_it_reads_and_writes_and_counts_no_flops():
    cost = ops.elementwise(300, 100)
    assert (cost.flops, cost.bytes_, cost.bytes_written, cost.bytes_read) == (0, 400, 100, 300)
    assert ops.elementwise(0, 8).bytes_ == 8  # a fill (arange) reads nothing
    with pytest.raises(ValueError):
        ops.elementwise(8, 0)


def test_rms_norm_reads_the_rows_and_the_gain_and_writes_the_rows():
    # 3 rows of 4096 bf16: x 3*4096*2 = 24576 B and gain 4096*2 = 8192 B read, 24576 B written.
    cost = ops.rms_norm(3, 4096, "bf16")
    assert cost.bytes_read == 24576 + 8192 and cost.bytes_written == 24576
    assert ops.rms_norm(3, 4096, "fp32").bytes_ == 2 * cost.bytes_


def test_gather_reads_the_index_and_the_rows_once():
    # 5 embedding rows of 4096 bf16 (8192 B each) by 5 int64 ids: 40 + 40960 read, 40960 written.
    cost = ops.gather(5, 8192, 40)
    assert cost.bytes_read == 40 + 40960 and cost.bytes_written == 40960
    with pytest.raises(ValueError):
        ops.gather(0, 8192, 8)


# --- a step ------------------------------------------------------------------------------------


def _kernels(layers: int) -> list[StepKernel]:
    """A small decode-like step: a norm and a GEMV per layer, an attention over 4096 keys, the
    LM head; the GEMV declares a split-K plan of two kernels."""
    split = LaunchPlan(
        (KernelLaunch("gemv", (64, 4), (1, 4, 512), 4, 65536.0), KernelLaunch("sum", (16,)))
    )
    attention = Work(
        ops.decode_attention(1, 32, 8, 4096, 128),
        "attention",
        batch=1,
        heads=32,
        q_len=1,
        kv_len=4096,
        head_dim=128,
        causal=True,
    )
    return [
        StepKernel("norm", "norm", Work(ops.rms_norm(1, 4096)), count=2 * layers),
        StepKernel(
            "proj",
            "projection",
            Work(ops.gemv(4096, 14336), "matmul", m=1, n=4096, k=14336),
            plan=split,
            count=layers,
        ),
        StepKernel("attention", "attention", attention, count=layers),
        StepKernel(
            "lm_head",
            "lm_head",
            Work(ops.gemv(128256, 4096), "matmul", m=1, n=128256, k=4096),
        ),
    ]


def test_the_step_is_the_sum_of_its_kernels_tiers():
    kernels = _kernels(layers=3)
    step = predict_step(kernels, CAL, DATASHEET)
    alone = [
        tiers.predict(k.work, CAL, DATASHEET, method="graph", plan=k.plan).time_s for k in kernels
    ]
    summed = sum(k.count * t for k, t in zip(kernels, alone, strict=True))
    assert step.time_s == pytest.approx(summed)
    assert step.launches == 6 + 3 * 2 + 3 + 1
    assert sum(step.breakdown.values()) == pytest.approx(step.time_s, rel=1e-9)
    assert sum(step.by_kind().values()) == pytest.approx(step.time_s, rel=1e-9)


def test_the_breakdown_puts_each_body_under_its_kind():
    step = predict_step(_kernels(layers=2), CAL, DATASHEET)
    b = step.breakdown
    # Every kernel pays a launch floor: 11 kernels at the calibrated floor.
    assert b["launch"] == pytest.approx(11 * CAL.launch_s)
    # The GEMV and the LM head read their weights at about the read roof.
    weights = 2 * 4096 * 14336 * 2 / CAL.read_bytes_per_s
    assert b["weights"] == pytest.approx(weights, rel=0.05)
    assert b["lm_head"] == pytest.approx(128256 * 4096 * 2 / CAL.read_bytes_per_s, rel=0.05)
    # Decode attention streams the cache: memory-bound, all of its body is the KV cache.
    assert b["kv_cache"] > 0 and b["attention"] == 0
    assert b["elementwise"] > 0
    assert set(b) == set(BREAKDOWN)


def test_compute_bound_attention_goes_under_attention():
    work = Work(
        ops.prefill_attention(1, 32, 8, 8192, 128),
        "attention",
        batch=1,
        heads=32,
        q_len=8192,
        kv_len=8192,
        head_dim=128,
        causal=True,
    )
    kernel = StepKernel("attention", "attention", work)
    tiered = tiers.predict(work, CAL, DATASHEET, method="graph")
    split = kernel_breakdown(kernel, tiered)
    assert split["attention"] > 10 * split["kv_cache"]
    assert sum(split.values()) == pytest.approx(tiered.time_s)


def test_more_layers_take_more_time_and_launches():
    times = [predict_step(_kernels(n), CAL, DATASHEET) for n in (1, 2, 8)]
    assert times[0].time_s < times[1].time_s < times[2].time_s
    assert times[0].launches < times[1].launches < times[2].launches
    # Each layer adds the same: the step is affine in the depth.
    per_layer = times[1].time_s - times[0].time_s
    assert times[2].time_s - times[1].time_s == pytest.approx(6 * per_layer)


def test_a_kernel_of_an_unknown_kind_or_no_count_is_refused():
    with pytest.raises(ValueError, match="kind"):
        StepKernel("x", "sampling", Work(ops.elementwise(8, 8)))
    with pytest.raises(ValueError, match="count"):
        StepKernel("x", "norm", Work(ops.elementwise(8, 8)), count=0)
    with pytest.raises(ValueError):
        predict_step([], CAL, DATASHEET)
