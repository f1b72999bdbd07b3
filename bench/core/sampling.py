"""The pure half of timing: statistics of samples, the noise-based stop rule and its sampling
loop (over a small `Timer` protocol), and the sizing of a graph's rotating argument sets.

Nothing here touches a GPU, so it is tested on the CPU with scripted timers and fake clocks;
`bench.core.timing` builds the CUDA timers on it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

# A captured graph should run about this long, so the two events around it add well under 1%.
GRAPH_TARGET_S = 1e-3
MAX_GRAPH_CALLS = 1000
MAX_ARG_SETS = 256
# After the end event completed, a device-wide synchronize that still waits longer than this
# means the callable's work ran on another stream.
ESCAPE_FLOOR_S = 10e-6


# --- statistics (pure) -------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between order statistics.

    The same definition as numpy's default, written out so the statistics need no numpy.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be in [0, 100], got {q}")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def relative_spread(values: Sequence[float]) -> float:
    """(p80 - p20) / median: a spread measure that one outlier cannot move (unlike the stdev)."""
    median = percentile(values, 50)
    if median <= 0:
        return math.inf
    return (percentile(values, 80) - percentile(values, 20)) / median


@dataclass(frozen=True)
class TimingStats:
    """GPU time per call, in seconds, over `samples` samples.

    `times_s` are the raw samples; for `graph` each is a replay's time over `calls_per_sample`
    calls. `method` is `events`, `graph` or `events-sync` (a side-stream callable timed with a
    device-wide synchronize). `stop` says why sampling ended: `converged`, `max_samples` or
    `time_cap`.
    """

    median_s: float
    p20_s: float
    p80_s: float
    mean_s: float
    min_s: float
    samples: int
    method: str
    times_s: list[float] = field(repr=False)
    stop: str = ""
    calls_per_sample: int = 1

    @property
    def spread(self) -> float:
        """Relative spread (p80 - p20) / median."""
        return (self.p80_s - self.p20_s) / self.median_s if self.median_s > 0 else math.inf

    @classmethod
    def from_times(
        cls, times_s: Sequence[float], method: str, stop: str = "", calls_per_sample: int = 1
    ) -> TimingStats:
        times = list(times_s)
        if not times:
            raise ValueError("no timing samples")
        return cls(
            median_s=percentile(times, 50),
            p20_s=percentile(times, 20),
            p80_s=percentile(times, 80),
            mean_s=sum(times) / len(times),
            min_s=min(times),
            samples=len(times),
            method=method,
            times_s=times,
            stop=stop,
            calls_per_sample=calls_per_sample,
        )


# --- the stop rule and sampling loop (pure, CPU-testable) ------------------------------------


@dataclass(frozen=True)
class StopRule:
    """When to stop sampling one case.

    Stop when at least `min_samples` samples have a relative spread <= `target_spread`
    (converged), or at `max_samples`, or once `max_time_s` of host time has passed since
    sampling began (warm-up not counted). A noisy case therefore costs at most about
    `max_time_s`; a quiet one stops at `min_samples`.
    """

    target_spread: float = 0.02
    min_samples: int = 20
    max_samples: int = 2000
    max_time_s: float = 1.0

    def __post_init__(self) -> None:
        if not 1 <= self.min_samples <= self.max_samples:
            raise ValueError(f"need 1 <= min_samples <= max_samples, got {self}")
        if self.target_spread < 0 or self.max_time_s <= 0:
            raise ValueError(f"need target_spread >= 0 and max_time_s > 0, got {self}")

    def stop_reason(self, times_s: Sequence[float], elapsed_s: float) -> str | None:
        """`converged`, `max_samples`, `time_cap`, or None to keep sampling."""
        n = len(times_s)
        if n >= self.min_samples and relative_spread(times_s) <= self.target_spread:
            return "converged"
        if n >= self.max_samples:
            return "max_samples"
        if n and elapsed_s >= self.max_time_s:
            return "time_cap"
        return None

    def next_batch(self, done: int, elapsed_s: float, per_sample_s: float | None) -> int:
        """How many samples to draw before checking again.

        Up to `min_samples` first, then a quarter more each time (one synchronize per batch keeps
        the GPU queue full); never past `max_samples`, and no more than the time left allows at
        `per_sample_s` host seconds per sample, when that is known.
        """
        want = self.min_samples - done if done < self.min_samples else max(1, done // 4)
        want = min(want, self.max_samples - done)
        if per_sample_s and per_sample_s > 0:
            # The epsilon keeps 0.1 / 0.01 from flooring to 9.
            fits = math.floor((self.max_time_s - elapsed_s) / per_sample_s + 1e-9)
            want = min(want, fits)
        return max(1, want)


class Timer(Protocol):
    """Draws `n` timed samples; returns their GPU times in seconds."""

    def measure(self, n: int) -> list[float]: ...


def sample_until_stable(
    timer: Timer,
    rule: StopRule | None = None,
    *,
    warmup: int = 3,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[list[float], str]:
    """Warm up (`warmup` samples, discarded), then sample in batches until `rule` says stop.

    Returns the kept samples and the stop reason. `clock` is the host clock for the time cap.
    """
    rule = rule or StopRule()
    per_sample_s = None
    if warmup > 0:
        began = clock()
        timer.measure(warmup)
        per_sample_s = (clock() - began) / warmup
    times: list[float] = []
    began = clock()
    while True:
        elapsed_s = clock() - began
        if times:
            per_sample_s = elapsed_s / len(times)
        times.extend(timer.measure(rule.next_batch(len(times), elapsed_s, per_sample_s)))
        reason = rule.stop_reason(times, clock() - began)
        if reason:
            return times, reason


# --- argument sets and graph sizing (pure apart from tensor attributes) ------------------------


def args_nbytes(arg_sets: Sequence[Sequence[Any]]) -> int:
    """Bytes of the distinct tensors in `arg_sets` (a tensor shared by several sets counts once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for arg_set in arg_sets:
        for arg in _flatten(arg_set):
            if hasattr(arg, "data_ptr") and hasattr(arg, "element_size"):
                key = (arg.data_ptr(), arg.numel() * arg.element_size())
                if key not in seen:
                    seen.add(key)
                    total += key[1]
    return total


def _flatten(items: Any) -> list[Any]:
    if isinstance(items, (list, tuple)):
        return [leaf for item in items for leaf in _flatten(item)]
    if isinstance(items, dict):
        return [leaf for item in items.values() for leaf in _flatten(item)]
    return [items]


def build_arg_sets(
    make_args: Callable[[int], Sequence[Any]], min_bytes: int, max_sets: int = MAX_ARG_SETS
) -> list[Sequence[Any]]:
    """Call `make_args(0), make_args(1), ...` until the sets hold `min_bytes` (or `max_sets`)."""
    sets = [make_args(0)]
    while args_nbytes(sets) < min_bytes and len(sets) < max_sets:
        sets.append(make_args(len(sets)))
    return sets


def graph_calls(
    estimate_s: float,
    n_sets: int,
    target_s: float = GRAPH_TARGET_S,
    max_calls: int = MAX_GRAPH_CALLS,
) -> int:
    """Calls to capture in one graph: enough for `target_s` of work, a whole number of rotations
    over the `n_sets` argument sets (each set used equally), at least one rotation."""
    per_call_s = max(estimate_s, 1e-7)
    calls = min(max_calls, max(1, math.ceil(target_s / per_call_s)))
    return max(n_sets, math.ceil(calls / n_sets) * n_sets)


def stream_escaped(residual_s: float, event_s: float, floor_s: float = ESCAPE_FLOOR_S) -> bool:
    """Whether work outlived the end event: a synchronize after the end event completed still
    waited `residual_s` (over its idle cost), more than `floor_s` and than 5% of the event time."""
    return residual_s > max(floor_s, 0.05 * event_s)


def rotating(fn: Callable[..., object], arg_sets: Sequence[Sequence[Any]]) -> Callable[[], None]:
    """A no-argument call of `fn` that moves to the next argument set on every call."""
    state = {"next": 0}

    def call() -> None:
        i = state["next"]
        state["next"] = (i + 1) % len(arg_sets)
        fn(*arg_sets[i])

    return call
