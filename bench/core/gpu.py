"""Which GPU this machine has, as a theory spec: the table entry for its NVML name, or one derived
from NVML's run-time facts. Used by every command that defaults to "the GPU here"."""

from __future__ import annotations

from roofbench.theory.hardware import DEFAULT_GPU, GpuSpec, find_gpu, get_gpu, spec_from_nvml


def nvml_spec(index: int = 0) -> GpuSpec | None:
    """The spec of GPU `index` as NVML names it, or None when NVML or the GPU is absent."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        name = pynvml.nvmlDeviceGetName(handle)
        name = name.decode() if isinstance(name, bytes) else name
        known = find_gpu(name)
        if known is not None:
            return known
        major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
        return spec_from_nvml(
            name=name,
            bus_width_bits=pynvml.nvmlDeviceGetMemoryBusWidth(handle),
            max_mem_clock_mhz=pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_MEM),
            sm_count=_sm_count(handle),
            max_sm_clock_mhz=pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM),
            l2_bytes=_l2_bytes(index),
            compute_capability=(major, minor),
            memory_bytes=pynvml.nvmlDeviceGetMemoryInfo(handle).total,
        )
    except (pynvml.NVMLError, ValueError):
        return None
    finally:
        pynvml.nvmlShutdown()


def _sm_count(handle) -> int:
    """SM count: NVML has no direct query on every driver, the CUDA runtime does."""
    import torch

    del handle
    return torch.cuda.get_device_properties(0).multi_processor_count


def _l2_bytes(index: int) -> int:
    import torch

    return torch.cuda.get_device_properties(index).L2_cache_size


def resolve_gpu(slug: str | None) -> GpuSpec:
    """`slug` from the table if given; else the GPU NVML finds here; else the default GPU."""
    if slug:
        return get_gpu(slug)
    return nvml_spec() or get_gpu(DEFAULT_GPU)
