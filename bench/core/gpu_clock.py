"""A clock for pytest-benchmark that advances by GPU time only.

pytest-benchmark reads a host clock before and after each round. Around an asynchronous CUDA
launch that measures the launch, not the kernel. So the suite hands pytest-benchmark this clock
instead (as its `--benchmark-timer`): each round draws one GPU-timed sample (CUDA events, or one
CUDA-graph replay divided by its calls) and advances the clock by exactly that many seconds. The
durations pytest-benchmark computes, prints and saves are then GPU times per kernel call.
"""

from __future__ import annotations


class GpuClock:
    """Seconds of GPU time accumulated by `advance`; calling it reads the current value."""

    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"GPU time cannot run backwards ({seconds} s)")
        self.now_s += seconds


GPU_CLOCK = GpuClock()
TIMER_NAME = f"{__name__}.GPU_CLOCK"
