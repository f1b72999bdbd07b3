"""GPU specifications: a datasheet table, and a spec derived from what NVML reports.

Peaks are dense (no 2:4 sparsity) tensor-core rates for matrix work, except `fp32`, which is the
plain CUDA-core rate (what an fp32 matmul gets with TF32 disabled). Datasheets quote peaks at the
boost clock; under load a power-capped part runs below it, which is why the suite also measures
its own ceilings (bench/ceilings) and records clocks with every measurement.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from roofbench.theory.ops import dtype_bytes


@dataclass(frozen=True)
class GpuSpec:
    """One GPU's peaks (TFLOP/s by dtype), memory bandwidth (decimal GB/s) and shape."""

    slug: str
    name: str
    peaks_tflops: dict[str, float] = field(hash=False)
    hbm_gbps: float
    memory_gb: float
    l2_mib: float
    sm_count: int
    max_sm_clock_mhz: int
    source: str
    nvml_names: tuple[str, ...] = ()
    # The GPU-to-GPU link, per GPU and per direction (decimal GB/s): the rate NCCL's bus
    # bandwidth is held against. Datasheets quote both directions together ("NVLink 900 GB/s"
    # is 450 GB/s each way). 0: not known (a spec derived from NVML).
    link: str = ""
    link_gbps: float = 0.0
    link_source: str = ""

    def peak_tflops(self, dtype: str) -> float:
        """Dense peak for `dtype`; fp16 falls back to bf16 (equal on every part listed)."""
        dtype_bytes(dtype)  # rejects unknown dtypes with a clear message
        key = "bf16" if dtype == "fp16" and "fp16" not in self.peaks_tflops else dtype
        if key not in self.peaks_tflops:
            raise ValueError(
                f"{self.slug} has no {dtype} peak (has: {', '.join(self.peaks_tflops)})"
            )
        return self.peaks_tflops[key]

    @property
    def l2_bytes(self) -> int:
        return int(self.l2_mib * 2**20)


def _peaks(fp32: float, tf32: float, bf16: float, fp8: float | None) -> dict[str, float]:
    peaks = {"fp32": fp32, "tf32": tf32, "bf16": bf16, "fp16": bf16}
    if fp8 is not None:
        peaks["fp8"] = fp8
    return peaks


_HOPPER_SOURCE = "NVIDIA H100 Tensor Core GPU datasheet; sparse peaks halved to dense"
_NVLINK4_SOURCE = (
    "NVIDIA H100 datasheet (SXM): NVLink 900 GB/s both ways; 18 NVLink 4 links of 25 GB/s each "
    "way (Hopper architecture paper)"
)

GPUS: dict[str, GpuSpec] = {
    spec.slug: spec
    for spec in (
        GpuSpec(
            slug="h100-sxm",
            name="NVIDIA H100 SXM5 80GB",
            peaks_tflops=_peaks(fp32=66.9, tf32=494.7, bf16=989.4, fp8=1978.9),
            hbm_gbps=3350,
            memory_gb=80,
            l2_mib=50,
            sm_count=132,
            max_sm_clock_mhz=1980,
            source=_HOPPER_SOURCE + "; 132 SMs and 50 MB L2 from the Hopper architecture paper",
            nvml_names=("NVIDIA H100 80GB HBM3", "NVIDIA H100 SXM5 80GB"),
            link="NVLink 4 (18 links)",
            link_gbps=450.0,
            link_source=_NVLINK4_SOURCE,
        ),
        GpuSpec(
            slug="h100-pcie",
            name="NVIDIA H100 PCIe 80GB",
            peaks_tflops=_peaks(fp32=51.2, tf32=378.0, bf16=756.5, fp8=1513.0),
            hbm_gbps=2000,
            memory_gb=80,
            l2_mib=50,
            sm_count=114,
            max_sm_clock_mhz=1755,
            source=_HOPPER_SOURCE + " (PCIe column)",
            nvml_names=("NVIDIA H100 PCIe",),
            link="PCIe Gen5 x16",
            link_gbps=64.0,
            link_source="NVIDIA H100 datasheet (PCIe column): PCIe Gen5 128 GB/s both ways",
        ),
        GpuSpec(
            slug="h200",
            name="NVIDIA H200 SXM 141GB",
            peaks_tflops=_peaks(fp32=66.9, tf32=494.7, bf16=989.4, fp8=1978.9),
            hbm_gbps=4800,
            memory_gb=141,
            l2_mib=60,
            sm_count=132,
            max_sm_clock_mhz=1980,
            source="NVIDIA H200 Tensor Core GPU datasheet (SXM); sparse peaks halved to dense; "
            "L2 size as the CUDA runtime reports it",
            nvml_names=("NVIDIA H200",),
            link="NVLink 4 (18 links)",
            link_gbps=450.0,
            link_source="NVIDIA H200 datasheet (SXM): NVLink 900 GB/s both ways",
        ),
        GpuSpec(
            slug="a100-sxm-80gb",
            name="NVIDIA A100 SXM4 80GB",
            peaks_tflops=_peaks(fp32=19.5, tf32=156.0, bf16=312.0, fp8=None),
            hbm_gbps=2039,
            memory_gb=80,
            l2_mib=40,
            sm_count=108,
            max_sm_clock_mhz=1410,
            source="NVIDIA A100 Tensor Core GPU datasheet (80GB SXM); Ampere architecture paper",
            nvml_names=("NVIDIA A100-SXM4-80GB",),
            link="NVLink 3 (12 links)",
            link_gbps=300.0,
            link_source="NVIDIA A100 datasheet (SXM): NVLink 600 GB/s both ways",
        ),
        GpuSpec(
            slug="l40s",
            name="NVIDIA L40S",
            peaks_tflops=_peaks(fp32=91.6, tf32=183.0, bf16=362.05, fp8=733.0),
            hbm_gbps=864,
            memory_gb=48,
            l2_mib=96,
            sm_count=142,
            max_sm_clock_mhz=2520,
            source="NVIDIA L40S datasheet; sparse peaks halved to dense (GDDR6, not HBM)",
            nvml_names=("NVIDIA L40S",),
            link="PCIe Gen4 x16",
            link_gbps=32.0,
            link_source="NVIDIA L40S datasheet: PCIe Gen4 x16 64 GB/s both ways (no NVLink)",
        ),
        GpuSpec(
            slug="l4",
            name="NVIDIA L4",
            peaks_tflops=_peaks(fp32=30.3, tf32=60.0, bf16=121.0, fp8=242.5),
            hbm_gbps=300,
            memory_gb=24,
            l2_mib=48,
            sm_count=58,
            max_sm_clock_mhz=2040,
            source="NVIDIA L4 datasheet; sparse peaks halved to dense (GDDR6, not HBM)",
            nvml_names=("NVIDIA L4",),
            link="PCIe Gen4 x16",
            link_gbps=32.0,
            link_source="NVIDIA L4 datasheet: PCIe Gen4 x16 64 GB/s both ways (no NVLink)",
        ),
        GpuSpec(
            slug="b200",
            name="NVIDIA B200 180GB",
            peaks_tflops=_peaks(fp32=75.0, tf32=1100.0, bf16=2250.0, fp8=4500.0),
            hbm_gbps=8000,
            memory_gb=180,
            l2_mib=126,
            sm_count=148,
            max_sm_clock_mhz=1965,
            source="NVIDIA HGX B200 datasheet, one eighth of the 8-GPU figures, sparse halved to "
            "dense; SM count, L2 and clock as the CUDA runtime and NVML report them",
            nvml_names=("NVIDIA B200",),
            link="NVLink 5 (18 links)",
            link_gbps=900.0,
            link_source="NVIDIA HGX B200 datasheet: NVLink 1.8 TB/s per GPU both ways",
        ),
    )
}

DEFAULT_GPU = "h100-sxm"


def get_gpu(key: str) -> GpuSpec:
    """Look a GPU up by slug (`h100-sxm`) or by the name NVML reports (`NVIDIA H100 80GB HBM3`)."""
    wanted = key.strip().lower()
    for spec in GPUS.values():
        names = (spec.slug, spec.name, *spec.nvml_names)
        if wanted in (name.lower() for name in names):
            return spec
    raise KeyError(f"unknown GPU {key!r} (known: {', '.join(GPUS)})")


def find_gpu(nvml_name: str) -> GpuSpec | None:
    """The table entry for an NVML name, or None when the GPU is not in the table."""
    try:
        return get_gpu(nvml_name)
    except KeyError:
        return None


# Dense FLOP per clock per SM by compute capability (major, minor) and dtype: the datasheet peaks
# above divided by SM count and boost clock (H100 SXM bf16: 989.4e12 / (132 * 1.83e9) = 4096).
FLOP_PER_CLOCK_PER_SM: dict[tuple[int, int], dict[str, int]] = {
    (8, 0): {"fp32": 128, "tf32": 1024, "bf16": 2048},
    (8, 6): {"fp32": 256, "tf32": 512, "bf16": 1024},
    (8, 9): {"fp32": 256, "tf32": 512, "bf16": 1024, "fp8": 2048},
    (9, 0): {"fp32": 256, "tf32": 2048, "bf16": 4096, "fp8": 8192},
    (10, 0): {"fp32": 256, "tf32": 4096, "bf16": 8192, "fp8": 16384},
}


def theoretical_bandwidth_gbps(bus_width_bits: int, max_mem_clock_mhz: float) -> float:
    """Peak DRAM bandwidth from NVML's bus width and memory clock: 2 transfers per clock (DDR).

    GB/s = 2 * clock_hz * bus_width_bits / 8 / 1e9; an H200 reports 6016 bit at 3201 MHz: 4814.
    """
    return 2.0 * max_mem_clock_mhz * 1e6 * bus_width_bits / 8 / 1e9


def spec_from_nvml(
    name: str,
    bus_width_bits: int,
    max_mem_clock_mhz: float,
    sm_count: int,
    max_sm_clock_mhz: int,
    l2_bytes: int,
    compute_capability: tuple[int, int],
    memory_bytes: int = 0,
) -> GpuSpec:
    """A spec for a GPU not in the table, from run-time facts (NVML and the CUDA runtime).

    Bandwidth from `theoretical_bandwidth_gbps`; peaks = SMs x max SM clock x FLOP/clock/SM of
    the architecture. The max clock is above the clock datasheets quote peaks at (1980 vs 1830 MHz
    on H100), so derived peaks are about 8% high there: a lead, not a ceiling.
    """
    per_sm = FLOP_PER_CLOCK_PER_SM.get(tuple(compute_capability))
    if per_sm is None:
        known = ", ".join(f"{a}.{b}" for a, b in FLOP_PER_CLOCK_PER_SM)
        raise ValueError(f"no per-SM rates for compute capability {compute_capability} ({known})")
    peaks = {dt: rate * sm_count * max_sm_clock_mhz * 1e6 / 1e12 for dt, rate in per_sm.items()}
    peaks["fp16"] = peaks["bf16"]
    slug = "-".join(name.lower().replace("nvidia", "").split()) or "gpu"
    return GpuSpec(
        slug=slug,
        name=name,
        peaks_tflops=peaks,
        hbm_gbps=theoretical_bandwidth_gbps(bus_width_bits, max_mem_clock_mhz),
        memory_gb=memory_bytes / 1e9,
        l2_mib=l2_bytes / 2**20,
        sm_count=sm_count,
        max_sm_clock_mhz=max_sm_clock_mhz,
        source="derived at run time from NVML (bus width x memory clock; SMs x clock x "
        "per-SM rate of the architecture)",
        nvml_names=(name,),
    )
