"""theory/hardware: the spec table and specs derived from NVML facts."""

import pytest

from roofbench.theory.hardware import (
    GPUS,
    get_gpu,
    spec_from_nvml,
    theoretical_bandwidth_gbps,
)

REQUIRED = ("h100-sxm", "h100-pcie", "h200", "a100-sxm-80gb", "l40s", "l4", "b200")


def test_the_table_holds_the_required_gpus_each_with_a_source():
    for slug in REQUIRED:
        spec = GPUS[slug]
        assert spec.source
        assert spec.hbm_gbps > 0 and spec.sm_count > 0 and spec.l2_mib > 0
        # Matrix units beat the plain fp32 pipes on every part listed, and tf32 is half of bf16.
        assert spec.peak_tflops("bf16") > spec.peak_tflops("tf32") > spec.peak_tflops("fp32")


@pytest.mark.parametrize(
    "key,slug",
    [
        ("h100-sxm", "h100-sxm"),
        ("NVIDIA H100 80GB HBM3", "h100-sxm"),
        ("nvidia h200", "h200"),
        ("NVIDIA A100-SXM4-80GB", "a100-sxm-80gb"),
        ("NVIDIA H100 PCIe", "h100-pcie"),
    ],
)
def test_lookup_by_slug_or_nvml_name(key, slug):
    assert get_gpu(key).slug == slug


def test_unknown_gpu_names_the_known_ones():
    with pytest.raises(KeyError, match="h100-sxm"):
        get_gpu("nvidia rtx 9999")


def test_fp8_peak_is_refused_where_the_part_has_none():
    with pytest.raises(ValueError, match="no fp8 peak"):
        get_gpu("a100-sxm-80gb").peak_tflops("fp8")


def test_bandwidth_from_nvml_matches_the_h200_and_h100_readings():
    # DESIGN.md: H200 reports 6016 bit at 3201 MHz -> 4814 GB/s; H100 5120 bit at 2619 -> 3352.
    assert theoretical_bandwidth_gbps(6016, 3201) == pytest.approx(4814, rel=1e-3)
    assert theoretical_bandwidth_gbps(5120, 2619) == pytest.approx(3352, rel=1e-3)


def test_a_derived_hopper_spec_is_within_ten_percent_of_the_datasheet():
    derived = spec_from_nvml(
        name="NVIDIA H100 Prototype",
        bus_width_bits=5120,
        max_mem_clock_mhz=2619,
        sm_count=132,
        max_sm_clock_mhz=1980,
        l2_bytes=50 * 2**20,
        compute_capability=(9, 0),
    )
    sheet = get_gpu("h100-sxm")
    for dtype in ("fp32", "tf32", "bf16", "fp8"):
        assert derived.peak_tflops(dtype) == pytest.approx(sheet.peak_tflops(dtype), rel=0.10)
    assert derived.hbm_gbps == pytest.approx(sheet.hbm_gbps, rel=0.01)
    assert derived.slug == "h100-prototype"


def test_a_derived_spec_refuses_an_unknown_architecture():
    with pytest.raises(ValueError, match="compute capability"):
        spec_from_nvml("x", 64, 1000, 10, 1000, 1, (3, 5))
