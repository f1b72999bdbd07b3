"""theory/roofline: time, bound and ridge."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roofbench.theory.hardware import get_gpu
from roofbench.theory.ops import OpCost
from roofbench.theory.roofline import Roof


def test_h100_ridge_is_about_300_flop_per_byte():
    # Seed, chapter 8: "inflection threshold ... roughly 300 FLOPs/Byte" = 989e12 / 3.35e12.
    assert Roof.from_spec(get_gpu("h100-sxm")).ridge == pytest.approx(295, rel=0.02)


def test_each_bound_is_named_by_the_largest_term():
    roof = Roof(peak_flops=1e12, bandwidth_bytes_per_s=1e9, launch_s=1e-6)
    assert roof.predict(OpCost(1e9, 1)).bound == "compute"  # 1 ms of math
    assert roof.predict(OpCost(1, 1e6)).bound == "memory"  # 1 ms of traffic
    assert roof.predict(OpCost(1, 1)).bound == "latency"  # nothing but the launch


def test_time_is_launch_plus_the_larger_of_compute_and_memory():
    roof = Roof(peak_flops=2e12, bandwidth_bytes_per_s=1e9, launch_s=5e-6)
    prediction = roof.predict(OpCost(4e9, 1e6))
    assert prediction.compute_s == pytest.approx(2e-3)
    assert prediction.memory_s == pytest.approx(1e-3)
    assert prediction.time_s == pytest.approx(5e-6 + 2e-3)


@given(intensity=st.floats(0.01, 1e5))
def test_attainable_rate_never_exceeds_either_roof(intensity):
    roof = Roof.from_spec(get_gpu("h200"))
    rate = roof.attainable_flops(intensity)
    assert rate <= roof.peak_flops
    assert rate <= intensity * roof.bandwidth_bytes_per_s * (1 + 1e-12)


def test_a_roof_must_be_positive():
    with pytest.raises(ValueError):
        Roof(peak_flops=0, bandwidth_bytes_per_s=1)
