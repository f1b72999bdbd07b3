"""The roofline: predicted time and bound of an op on a roof.

A roof is a peak arithmetic rate P (FLOP/s), a memory bandwidth W (byte/s) and a fixed launch
latency T0 (s). For an op of F FLOPs and B bytes (Williams, Waterman and Patterson, "Roofline",
CACM 2009, with an additive launch term for kernels of a few microseconds):

    time = T0 + max(F / P, B / W)

The bound is whichever of the three terms is largest: `compute` (F/P), `memory` (B/W) or
`latency` (T0, the launch floor, when both others are smaller). The ridge point P / W is the
intensity (FLOP/byte) above which an op is compute-bound.
"""

from __future__ import annotations

from dataclasses import dataclass

from roofbench.theory.hardware import GpuSpec
from roofbench.theory.ops import OpCost

# Launch floor of one kernel when nothing is known about the machine: a few microseconds is what a
# CUDA launch plus the smallest kernel costs on recent GPUs; a measured value replaces it.
DEFAULT_LAUNCH_S = 4e-6

BOUNDS = ("compute", "memory", "latency")


@dataclass(frozen=True)
class Prediction:
    """Predicted time of one op and the terms it was built from."""

    time_s: float
    bound: str
    compute_s: float
    memory_s: float
    launch_s: float


@dataclass(frozen=True)
class Roof:
    """Peak FLOP/s, bandwidth in byte/s and launch latency in s, with where they came from."""

    peak_flops: float
    bandwidth_bytes_per_s: float
    launch_s: float = DEFAULT_LAUNCH_S
    source: str = "given"

    def __post_init__(self) -> None:
        if self.peak_flops <= 0 or self.bandwidth_bytes_per_s <= 0 or self.launch_s < 0:
            raise ValueError(f"a roof needs positive peak and bandwidth, got {self}")

    @classmethod
    def from_spec(cls, spec: GpuSpec, dtype: str = "bf16", launch_s: float = DEFAULT_LAUNCH_S):
        """The datasheet roof of `spec` for matrix work in `dtype` (dense tensor-core peak)."""
        return cls(
            peak_flops=spec.peak_tflops(dtype) * 1e12,
            bandwidth_bytes_per_s=spec.hbm_gbps * 1e9,
            launch_s=launch_s,
            source=f"datasheet {spec.slug} {dtype}",
        )

    @property
    def ridge(self) -> float:
        """Intensity in FLOP/byte where compute time equals memory time: P / W."""
        return self.peak_flops / self.bandwidth_bytes_per_s

    def predict(self, cost: OpCost) -> Prediction:
        """time = launch + max(flops / peak, bytes / bandwidth); bound = the largest term."""
        compute_s = cost.flops / self.peak_flops
        memory_s = cost.bytes_ / self.bandwidth_bytes_per_s
        terms = {"compute": compute_s, "memory": memory_s, "latency": self.launch_s}
        bound = max(terms, key=terms.__getitem__)
        return Prediction(
            time_s=self.launch_s + max(compute_s, memory_s),
            bound=bound,
            compute_s=compute_s,
            memory_s=memory_s,
            launch_s=self.launch_s,
        )

    def time_s(self, cost: OpCost) -> float:
        return self.predict(cost).time_s

    def attainable_flops(self, intensity: float) -> float:
        """Roofline ceiling in FLOP/s at `intensity`, ignoring launch: min(P, I * W)."""
        return min(self.peak_flops, intensity * self.bandwidth_bytes_per_s)
