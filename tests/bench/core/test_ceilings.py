"""bench.ceilings: the measured roof's arithmetic on CPU; the measurement itself on a GPU."""

from __future__ import annotations

import pytest
import torch

from roofbench.bench.core.ceilings import Ceilings, measure_ceilings, measured_roof
from roofbench.theory import ops


def h100_like() -> Ceilings:
    return Ceilings(copy_gbps=3016.0, read_gbps=3100.0, matmul_tflops=679.0, launch_s=2.5e-6)


def test_measured_roof_takes_matmul_copy_and_launch():
    roof = measured_roof(h100_like())
    assert roof.peak_flops == pytest.approx(679e12)
    assert roof.bandwidth_bytes_per_s == pytest.approx(3016e9)
    assert roof.launch_s == 2.5e-6
    assert roof.ridge == pytest.approx(679e12 / 3016e9)
    assert roof.source.startswith("measured")
    assert "679 TFLOP/s" in roof.source and "3016 GB/s" in roof.source


def test_measured_roof_predicts_with_measured_figures():
    roof = measured_roof(h100_like())
    copy = ops.copy(2**30)  # 2 GiB moved
    assert roof.predict(copy).time_s == pytest.approx(2.5e-6 + 2 * 2**30 / 3016e9)
    assert roof.predict(copy).bound == "memory"
    gemm = ops.gemm(8192, 8192, 8192)
    assert roof.predict(gemm).bound == "compute"
    assert roof.predict(gemm).compute_s == pytest.approx(2 * 8192**3 / 679e12)


def test_measured_roof_rejects_a_failed_measurement():
    with pytest.raises(ValueError):
        measured_roof(Ceilings(copy_gbps=0.0, read_gbps=1.0, matmul_tflops=1.0, launch_s=1e-6))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without CUDA")
def test_measure_without_cuda_says_so():
    with pytest.raises(RuntimeError, match="CUDA"):
        measure_ceilings()


@pytest.mark.gpu
@pytest.mark.slow
def test_measured_ceilings_are_sane_against_the_datasheet():
    from roofbench.bench.core.gpu import resolve_gpu

    spec = resolve_gpu(None)
    c = measure_ceilings()
    # No copy or read exceeds the DRAM's peak; a healthy Hopper reaches ~90% of it.
    assert 0.5 * spec.hbm_gbps < c.copy_gbps < 1.01 * spec.hbm_gbps
    assert 0.5 * spec.hbm_gbps < c.read_gbps < 1.01 * spec.hbm_gbps
    # Datasheet peaks assume the boost clock; the max clock is ~8% above it, power caps pull below.
    peak = spec.peak_tflops("bf16")
    assert 0.3 * peak < c.matmul_tflops < 1.1 * peak
    if c.matmul_sustained_tflops is not None:  # a power cap may pull it under the burst
        assert 0.3 * peak < c.matmul_sustained_tflops < 1.05 * c.matmul_tflops
    assert 0.2e-6 < c.launch_s < 20e-6
    assert set(c.timings) == {"copy", "read", "matmul", "launch"}
    assert c.timings["launch"].method == "graph"
    assert set(c.telemetry) == set(c.timings)
    roof = measured_roof(c)
    assert roof.bandwidth_bytes_per_s == pytest.approx(c.copy_gbps * 1e9)
    gpm = c.gpm.get("copy")
    if gpm is not None and gpm.dram_gbps is not None:
        # The hardware's own count of DRAM traffic agrees with bytes over time within 10%.
        assert gpm.dram_gbps == pytest.approx(c.copy_gbps, rel=0.1)
