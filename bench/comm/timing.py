"""The time of one collective, agreed by every rank.

A sample is `iters` back-to-back calls after all ranks have met (a one-element all-reduce, and
on a GPU a synchronize), timed as nccl-tests times them, divided by `iters`:
- on GPUs (NCCL), between two CUDA events on the current stream, which NCCL's kernels run on;
- on CPUs (gloo, whose calls block the host until done), by the host clock around the calls.
Each rank times its own calls; the sample is the slowest rank's time (the collective is done
when the last rank is), all-reduced with MAX so that every rank holds the same samples. The stop
rule (bench.core.sampling) then decides alike on every rank, because its clock is the sum of
those agreed times rather than each host's own: ranks never disagree on when to stop, so none
is left waiting in a collective the others skipped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
import torch.distributed as dist

from roofbench.bench.core.sampling import StopRule, TimingStats, sample_until_stable

SAMPLE_TARGET_S = 1e-3  # calls per sample: enough for about this long (events add ~us)
MAX_ITERS = 1000
WARMUP = 3


def meet(device: torch.device) -> None:
    """Every rank waits here for every other (a barrier that works on every backend)."""
    token = torch.zeros(1, device=device)
    dist.all_reduce(token)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def agreed(times_s: list[float], device: torch.device) -> list[float]:
    """Each sample's slowest rank: the element-wise MAX over ranks."""
    held = torch.tensor(times_s, dtype=torch.float64, device=device)
    dist.all_reduce(held, op=dist.ReduceOp.MAX)
    return held.tolist()


class CommTimer:
    """Draws agreed samples of `fn` (see the module docstring); `clock()` is their sum."""

    def __init__(self, fn: Callable[[], object], device: torch.device, iters: int = 1):
        self.fn, self.device, self.iters = fn, device, iters
        self.elapsed_s = 0.0

    @property
    def method(self) -> str:
        """`events` (CUDA events) or `host` (the host clock around blocking calls)."""
        return "events" if self.device.type == "cuda" else "host"

    def clock(self) -> float:
        return self.elapsed_s

    def measure(self, n: int) -> list[float]:
        meet(self.device)
        own = self._events(n) if self.device.type == "cuda" else self._host(n)
        times = agreed(own, self.device)
        self.elapsed_s += sum(times) * self.iters
        return times

    def _events(self, n: int) -> list[float]:
        pairs = [
            (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            for _ in range(n)
        ]
        for start, end in pairs:
            start.record()
            for _ in range(self.iters):
                self.fn()
            end.record()
        torch.cuda.synchronize(self.device)
        return [s.elapsed_time(e) * 1e-3 / self.iters for s, e in pairs]

    def _host(self, n: int) -> list[float]:
        times = []
        for _ in range(n):
            began = time.perf_counter()
            for _ in range(self.iters):
                self.fn()
            times.append((time.perf_counter() - began) / self.iters)
        return times


def iters_for(estimate_s: float) -> int:
    """Calls per sample for a call of about `estimate_s` (agreed, so the same on every rank)."""
    return max(1, min(MAX_ITERS, math.ceil(SAMPLE_TARGET_S / max(estimate_s, 1e-7))))


def time_collective(
    fn: Callable[[], object], device: torch.device, rule: StopRule
) -> tuple[TimingStats, CommTimer]:
    """Warm once, size the samples from one agreed call, then sample until `rule` stops."""
    fn()
    estimate = CommTimer(fn, device).measure(1)[0]
    timer = CommTimer(fn, device, iters_for(estimate))
    times, stop = sample_until_stable(timer, rule, warmup=WARMUP, clock=timer.clock)
    return TimingStats.from_times(times, timer.method, stop, timer.iters), timer
