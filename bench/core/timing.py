"""GPU-side time of one callable: CUDA events per call, or CUDA-graph replay for short kernels.

Two methods, both reading the GPU's own clock (a host clock around an asynchronous launch
measures the launch, not the kernel):

- `events`: each call sits between two CUDA events on the current stream, after an L2 flush
  (a write over twice the device's L2) that stays outside the timed region, so every call reads
  its inputs from HBM, and after a short spin kernel that holds the stream while the host
  launches the call, so host launch latency stays outside the region too. Good from tens of
  microseconds up; below that the per-launch gap shows.
- `graph`: R calls are captured in one CUDA graph, rotating over argument sets whose bytes
  together exceed twice the L2 (so a replayed call finds its inputs evicted by the others), and
  the whole replay is timed between two events: time per call = elapsed / R. This removes the
  host launch cost that decides microsecond kernels.

Sampling stops on noise, as nvbench does: after a warm-up, samples are drawn in batches until the
relative spread (p80 - p20) / median is under a target with at least a minimum count, or a count
or time cap is reached. The stop rule and statistics are pure functions and the loop talks to a
small `Timer` protocol, so both are tested on the CPU with a scripted timer and a fake clock.

Side streams: events measure the stream they are recorded on. A callable that launches its work
on a stream of its own, without making the current stream wait for it, would be timed as a few
microseconds. `time_gpu` checks for that before timing (`stream_escaped`: after the end event
completed, does a device-wide synchronize still wait?) and, if so, times with a device-wide
synchronize inside the timed region (`events-sync`), subtracting the measured cost of an empty
synchronize. Every batch ends with a device-wide synchronize, which also raises any asynchronous
CUDA error here rather than in a later, unrelated call.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from roofbench.bench.core.sampling import (
    StopRule,
    Timer,
    TimingStats,
    args_nbytes,
    build_arg_sets,
    graph_calls,
    percentile,
    rotating,
    sample_until_stable,
    stream_escaped,
)
from roofbench.kernels._util import Rotation, set_tuning_timer

METHODS = ("auto", "events", "graph")

# Below this first estimate, `auto` replays a CUDA graph: host launch gaps (a few microseconds
# each) would otherwise be a large part of the time.
GRAPH_BELOW_S = 50e-6
# The hold before each event-timed call, and the clock its spin is sized by (no current GPU runs
# its SMs faster, so the hold lasts at least this long).
HOLD_S = 100e-6
HOLD_CLOCK_HZ = 2.1e9
# The events timer's flush writes this many L2s between calls.
FLUSH_L2S = 2


# --- CUDA timers -------------------------------------------------------------------------------


def _flush_size(device: Any, factor: int) -> tuple[Any, int]:
    """(the device, `factor` x its L2 size in bytes): what a flush must touch to evict L2."""
    import torch

    dev = torch.device("cuda", torch.cuda.current_device()) if device is None else device
    l2_bytes = torch.cuda.get_device_properties(dev).L2_cache_size
    # A device that reports no L2 still gets a flush larger than any L2 shipped so far.
    return dev, factor * l2_bytes if l2_bytes > 0 else 256 * 2**20


class L2Flush:
    """Writes a buffer of `factor` x the device's L2 size, evicting whatever a call left there."""

    def __init__(self, device: Any = None, factor: int = FLUSH_L2S):
        import torch

        dev, self.nbytes = _flush_size(device, factor)
        self.buffer = torch.empty(self.nbytes, dtype=torch.uint8, device=dev)

    def __call__(self) -> None:
        self.buffer.zero_()


class ReadFlush:
    """Reads a buffer of `factor` x the device's L2 size (its sum into one element): it evicts
    what a call left in L2 as `L2Flush` does, but leaves clean lines, so the next call pays no
    write-back of the flush's own writes."""

    def __init__(self, device: Any = None, factor: int = FLUSH_L2S):
        import torch

        dev, nbytes = _flush_size(device, factor)
        self.buffer = torch.rand(nbytes // 4, dtype=torch.float32, device=dev)
        self.total = torch.empty((), dtype=torch.float32, device=dev)

    def __call__(self) -> None:
        import torch

        torch.sum(self.buffer, dim=0, out=self.total)


def _event_pair():
    import torch

    return torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)


def _hold_stream(seconds: float = HOLD_S) -> None:
    """Keep the stream busy for about `seconds` before the start event (nvbench's blocking kernel).

    The host launches the start event, the kernel(s) and the end event while the GPU spins, so
    the events bracket GPU work only: a Python launch that takes longer than the kernel before
    it (tens of microseconds for a Triton launch) would otherwise sit inside the timed region.
    """
    import torch

    sleep = getattr(torch.cuda, "_sleep", None)
    if sleep is not None:
        sleep(int(seconds * HOLD_CLOCK_HZ))


class EventTimer:
    """Each sample: flush (untimed), start event, `fn()`, end event, on the current stream.

    With `sync_inside`, the device is synchronized before the start event and before the end
    event, so work on any stream is inside the region; `offset_s` (the measured cost of an empty
    synchronize between two events) is then subtracted.
    """

    def __init__(
        self,
        fn: Callable[[], object],
        flush: Callable[[], object] | None = None,
        sync_inside: bool = False,
        offset_s: float = 0.0,
    ):
        self.fn, self.flush, self.sync_inside, self.offset_s = fn, flush, sync_inside, offset_s

    def measure(self, n: int) -> list[float]:
        import torch

        pairs = [_event_pair() for _ in range(n)]
        for start, end in pairs:
            if self.flush is not None:
                self.flush()
            if self.sync_inside:
                torch.cuda.synchronize()
            else:
                _hold_stream()
            start.record()
            self.fn()
            if self.sync_inside:
                torch.cuda.synchronize()
            end.record()
        torch.cuda.synchronize()
        return [max(s.elapsed_time(e) * 1e-3 - self.offset_s, 0.0) for s, e in pairs]


class GraphTimer:
    """Captures `calls` calls of `fn` in one CUDA graph; each sample replays it between events."""

    def __init__(self, fn: Callable[[], object], calls: int, warmup_calls: int = 3):
        import torch

        self.calls = calls
        # Warm up on a side stream before capture, as torch's graph documentation does: lazy set-up
        # (library handles, workspaces, Triton compilation and autotuning) must not be captured.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup_calls):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        self.graph = torch.cuda.CUDAGraph()
        # torch.cuda.graph captures on a stream of its own (capture needs a non-default stream).
        with torch.cuda.graph(self.graph):
            for _ in range(calls):
                fn()
        torch.cuda.synchronize()

    def measure(self, n: int) -> list[float]:
        import torch

        pairs = [_event_pair() for _ in range(n)]
        for start, end in pairs:
            start.record()
            self.graph.replay()
            end.record()
        torch.cuda.synchronize()
        return [s.elapsed_time(e) * 1e-3 / self.calls for s, e in pairs]


def _median_event_s(fn: Callable[[], object], flush: Callable[[], object] | None, n: int) -> float:
    return percentile(EventTimer(fn, flush).measure(n), 50)


def _escape_residual(fn: Callable[[], object], checks: int) -> tuple[float, float]:
    """Run `fn` between events `checks` times; return the smallest time a device-wide synchronize
    still waited once the end event had completed (over an idle synchronize's cost), and the
    median event time."""
    import torch

    residuals, events = [], []
    for _ in range(checks):
        torch.cuda.synchronize()
        start, end = _event_pair()
        start.record()
        fn()
        end.record()
        end.synchronize()
        t0 = time.perf_counter()
        torch.cuda.synchronize()  # waits only if work on another stream is still running
        t1 = time.perf_counter()
        torch.cuda.synchronize()  # the cost of a synchronize on an idle device
        t2 = time.perf_counter()
        residuals.append((t1 - t0) - (t2 - t1))
        events.append(start.elapsed_time(end) * 1e-3)
    # A real escape shows in every check; a host hiccup (a thread switch, garbage collection)
    # in one or two does not: the smallest residual decides.
    return min(residuals), percentile(events, 50)


def _escape_check(fn: Callable[[], object]) -> tuple[bool, str]:
    """Whether `fn` leaves work running past its end event, and the evidence in words.

    An escape must show in two rounds of checks (5, then 20 more): a real side stream waits in
    every check, while a passing device or host state once made all 5 checks of an ordinary
    one-stream kernel wait over the floor (4 of 164 measurements of one H100 run).
    """
    for checks in (5, 20):
        residual_s, event_s = _escape_residual(fn, checks)
        if not stream_escaped(residual_s, event_s):
            return False, ""
    return True, (
        f"a synchronize still waited {residual_s * 1e6:.1f} us after the end event "
        f"(least of {checks} checks; the events took {event_s * 1e6:.1f} us)"
    )


def _sync_offset_s(n: int = 10) -> float:
    """Median time between two events with only a device-wide synchronize between them."""
    import torch

    times = []
    for _ in range(n):
        start, end = _event_pair()
        start.record()
        torch.cuda.synchronize()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e-3)
    return percentile(times, 50)


@dataclass
class ChosenTimer:
    """A timer picked for one callable: draw samples with `timer.measure(n)`."""

    timer: Timer
    method: str  # events | graph | events-sync
    calls_per_sample: int = 1


def choose_timer(
    fn: Callable[..., object],
    *,
    args: Sequence[Sequence[Any]] | None = None,
    make_args: Callable[[int], Sequence[Any]] | None = None,
    method: str = "auto",
    graph_below_s: float = GRAPH_BELOW_S,
    flush_l2: bool = True,
    check_streams: bool = True,
    rotate_min_bytes: int | None = None,
) -> ChosenTimer:
    """The timer `time_gpu` samples with (exposed so a caller can draw samples one at a time).

    `args` is a list of argument sets, or `make_args(i)` builds set i; calls rotate over the sets.
    The graph method wants sets holding `rotate_min_bytes` (default 2x L2) together: from
    `make_args` it builds that many; given `args` below it, it warns that replayed calls may hit
    the cache. `method="auto"` replays a graph when a first event-timed estimate is under
    `graph_below_s`, and falls back to events (with a warning) if `fn` cannot be captured.
    The first call runs untimed (compilation, autotuning).
    """
    import torch

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if args is not None and make_args is not None:
        raise ValueError("give argument sets as args or make_args, not both")
    if not torch.cuda.is_available():
        raise RuntimeError("time_gpu needs a CUDA device; torch sees none")
    if args is not None:
        arg_sets = list(args)
        if not arg_sets:
            raise ValueError("args is empty: give at least one argument set")
    else:
        arg_sets = [make_args(0) if make_args is not None else ()]

    call = rotating(fn, arg_sets)
    call()
    torch.cuda.synchronize()
    flush = L2Flush() if flush_l2 else None
    estimate_s = _median_event_s(call, flush, 3)

    escaped, evidence = _escape_check(call) if check_streams else (False, "")
    if escaped:
        if method == "graph":
            raise ValueError(
                "fn runs work on a stream the current stream does not wait for; a CUDA graph "
                f"cannot capture it: join the stream back or time with method='events' ({evidence})"
            )
        timer = EventTimer(call, flush, sync_inside=True, offset_s=_sync_offset_s())
        return ChosenTimer(timer, "events-sync")

    if method == "graph" or (method == "auto" and estimate_s < graph_below_s):
        try:
            graph_timer = _graph_timer(fn, arg_sets, make_args, estimate_s, rotate_min_bytes)
        except RuntimeError as err:
            if method == "graph":
                raise RuntimeError(f"could not capture fn in a CUDA graph: {err}") from err
            warnings.warn(
                f"CUDA graph capture failed ({err}); timing with events", RuntimeWarning, 2
            )
            torch.cuda.synchronize()
        else:
            return ChosenTimer(graph_timer, "graph", graph_timer.calls)
    return ChosenTimer(EventTimer(call, flush), "events")


def cold_l2_replay_s(fn: Callable[[], object], budget_s: float = 2e-4, samples: int = 5) -> float:
    """GPU seconds per call of `fn()`, each call after an L2 flush, without host launch gaps.

    Two graphs of `calls` calls each (`calls` fills about `budget_s`, 1 to 16): (flush, fn) and
    the flush alone; the time per call is the difference of their median replay times. The flush
    only reads (`ReadFlush`): `L2Flush` leaves dirty lines whose write-back (8.5 us on an H200,
    the calibration's `writeback_s`) lands on the timed call. Per-call events (do_bench) add the
    host's launch gaps, which for a microsecond kernel outweigh what a tuner looks for (on an
    H200, two GEMMs of M=64, N=1024, K=4096 read 13.4 and 13.3 us there, 8.9 and 10.8 here).
    A `Rotation` is timed by `rotating_replay_s` instead, with no flush at all.
    """
    import torch

    if isinstance(fn, Rotation):
        return rotating_replay_s(fn, budget_s, samples)
    fn()  # compilation and lazy set-up stay out of every timing
    torch.cuda.synchronize()
    flush = ReadFlush()
    estimate_s = max(_median_event_s(fn, flush, 1), 1e-7)
    calls = max(1, min(16, int(budget_s / estimate_s)))

    def flush_then_fn() -> None:
        flush()
        fn()

    both = GraphTimer(flush_then_fn, calls).measure(samples)
    flush_only = GraphTimer(flush, calls).measure(samples)
    return max(percentile(both, 50) - percentile(flush_only, 50), 0.0)


def rotating_replay_s(fn: Rotation, budget_s: float = 2e-4, samples: int = 5) -> float:
    """GPU seconds per call of a `Rotation`, replayed back to back in one graph (whole rotations,
    about `budget_s` of work) with no flush: its sets exceed L2, so each call reads from DRAM, as
    the sweep's graph replay over rotating inputs times it."""
    import torch

    for _ in range(len(fn)):  # compilation and lazy set-up of every set, untimed
        fn()
    torch.cuda.synchronize()
    estimate_s = max(_median_event_s(fn, None, len(fn)), 1e-7)
    calls = graph_calls(estimate_s, len(fn), target_s=budget_s, max_calls=16 * len(fn))
    return percentile(GraphTimer(fn, calls).measure(samples), 50)


def warm_up(timer: Timer, seconds: float, clock: Callable[[], float] = time.perf_counter) -> int:
    """Draw (and drop) samples for at least `seconds` of host time; returns how many.

    A GPU that sat idle (between cases, during a correctness check) takes a moment to reach its
    working clocks and power state; a few warm-up samples of a microsecond kernel are not enough.
    """
    began, drawn = clock(), 0
    while drawn == 0 or clock() - began < seconds:
        timer.measure(1)
        drawn += 1
    return drawn


def time_gpu(
    fn: Callable[..., object],
    *,
    rule: StopRule | None = None,
    warmup: int = 3,
    **timer_options: Any,
) -> TimingStats:
    """GPU time per call of `fn(*args[i])` (or `fn()` when no arguments are given).

    The timer comes from `choose_timer` (same options: args, make_args, method, graph_below_s,
    flush_l2, check_streams, rotate_min_bytes); `warmup` samples are discarded, then samples
    are drawn until `rule` says stop.
    """
    chosen = choose_timer(fn, **timer_options)
    return _sample(chosen.timer, chosen.method, rule, warmup, chosen.calls_per_sample)


def _graph_timer(
    fn: Callable[..., object],
    arg_sets: list[Sequence[Any]],
    make_args: Callable[[int], Sequence[Any]] | None,
    estimate_s: float,
    rotate_min_bytes: int | None,
) -> GraphTimer:
    import torch

    if rotate_min_bytes is None:
        rotate_min_bytes = (
            2 * torch.cuda.get_device_properties(torch.cuda.current_device()).L2_cache_size
        )
    if make_args is not None:
        arg_sets = build_arg_sets(make_args, rotate_min_bytes)
    held = args_nbytes(arg_sets)
    if held < rotate_min_bytes:
        warnings.warn(
            f"graph replay rotates over {len(arg_sets)} argument set(s) of {held} bytes in all, "
            f"under {rotate_min_bytes}: replayed calls may read from L2, not HBM",
            RuntimeWarning,
            3,
        )
    calls = graph_calls(estimate_s, len(arg_sets))
    return GraphTimer(rotating(fn, arg_sets), calls, warmup_calls=max(3, len(arg_sets)))


def _sample(
    timer: Timer, method: str, rule: StopRule | None, warmup: int, calls_per_sample: int = 1
) -> TimingStats:
    import torch

    times, stop = sample_until_stable(timer, rule, warmup=warmup)
    torch.cuda.synchronize()  # surfaces any asynchronous CUDA error from the timed calls
    return TimingStats.from_times(times, method, stop, calls_per_sample)


# The kernels' tuners time their candidates the way the suite times short kernels.
set_tuning_timer(cold_l2_replay_s)
