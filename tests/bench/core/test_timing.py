"""bench.timing: statistics, stop rule and sampling loop on a scripted timer; CUDA paths on GPU."""

from __future__ import annotations

import math
import random

import pytest
import torch

from roofbench.bench.core import sampling, timing
from roofbench.bench.core.sampling import (
    StopRule,
    TimingStats,
    args_nbytes,
    build_arg_sets,
    graph_calls,
    percentile,
    relative_spread,
    sample_until_stable,
    stream_escaped,
)
from roofbench.bench.core.timing import (
    cold_l2_replay_s,
    time_gpu,
)
from roofbench.kernels._util import Rotation, l2_bytes, rotation_sets


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class ScriptedTimer:
    """Returns scripted GPU times; each sample advances the fake host clock by `host_s`."""

    def __init__(self, times_s, clock: FakeClock, host_s: float = 1e-3):
        self.script = iter(times_s)
        self.clock = clock
        self.host_s = host_s
        self.batches: list[int] = []

    def measure(self, n: int) -> list[float]:
        self.batches.append(n)
        self.clock.now += n * self.host_s
        return [next(self.script) for _ in range(n)]


# --- statistics --------------------------------------------------------------------------------


def test_percentile_interpolates_linearly():
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 50) == 3.0
    assert percentile(values, 100) == 5.0
    assert percentile(values, 20) == pytest.approx(1.8)
    assert percentile(values, 80) == pytest.approx(4.2)
    assert percentile([7.0], 80) == 7.0


def test_percentile_rejects_empty_and_bad_q():
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_relative_spread_ignores_one_outlier():
    quiet = [1.0] * 9 + [100.0]
    assert relative_spread(quiet) == 0.0
    assert relative_spread([1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx((4.2 - 1.8) / 3.0)


def test_stats_from_times():
    stats = TimingStats.from_times([3e-6, 1e-6, 2e-6, 4e-6, 5e-6], "events", "converged")
    assert stats.median_s == pytest.approx(3e-6)
    assert stats.p20_s == pytest.approx(1.8e-6)
    assert stats.p80_s == pytest.approx(4.2e-6)
    assert stats.mean_s == pytest.approx(3e-6)
    assert stats.min_s == 1e-6
    assert stats.samples == 5
    assert stats.times_s == [3e-6, 1e-6, 2e-6, 4e-6, 5e-6]
    assert stats.spread == pytest.approx(0.8)
    assert stats.method == "events" and stats.stop == "converged"


def test_stats_need_samples():
    with pytest.raises(ValueError):
        TimingStats.from_times([], "events")


# --- stop rule ---------------------------------------------------------------------------------


def test_stop_rule_converges_only_after_min_samples():
    rule = StopRule(target_spread=0.02, min_samples=10)
    assert rule.stop_reason([1.0] * 9, 0.0) is None
    assert rule.stop_reason([1.0] * 10, 0.0) == "converged"


def test_stop_rule_caps_count_and_time():
    rule = StopRule(target_spread=0.01, min_samples=2, max_samples=6, max_time_s=1.0)
    noisy = [1.0, 2.0, 1.0, 2.0, 1.0, 2.0]
    assert rule.stop_reason(noisy[:4], 0.5) is None
    assert rule.stop_reason(noisy, 0.5) == "max_samples"
    assert rule.stop_reason(noisy[:4], 1.0) == "time_cap"


def test_stop_rule_rejects_bad_settings():
    with pytest.raises(ValueError):
        StopRule(min_samples=0)
    with pytest.raises(ValueError):
        StopRule(min_samples=10, max_samples=5)
    with pytest.raises(ValueError):
        StopRule(max_time_s=0)


def test_next_batch_fills_min_then_grows_and_respects_time_left():
    rule = StopRule(min_samples=20, max_samples=100, max_time_s=1.0)
    assert rule.next_batch(0, 0.0, None) == 20
    assert rule.next_batch(20, 0.0, None) == 5
    assert rule.next_batch(98, 0.0, None) == 2  # never past max_samples
    assert rule.next_batch(40, 0.9, 0.01) == 10  # 0.1 s left at 10 ms a sample
    assert rule.next_batch(40, 0.999, 0.01) == 1  # always at least one


# --- sampling loop on a scripted timer ---------------------------------------------------------


def test_quiet_case_stops_early_and_discards_warmup():
    clock = FakeClock()
    warm = [1.0, 0.5, 0.2]  # cold first calls, far off the steady time
    timer = ScriptedTimer(warm + [10e-6] * 1000, clock)
    rule = StopRule(target_spread=0.02, min_samples=20, max_samples=1000, max_time_s=1.0)
    times, stop = sample_until_stable(timer, rule, warmup=3, clock=clock)
    assert stop == "converged"
    assert len(times) == 20
    assert timer.batches == [3, 20]
    assert not set(warm) & set(times)


def test_noisy_case_stops_at_max_samples():
    clock = FakeClock()
    rng = random.Random(0)
    timer = ScriptedTimer([rng.uniform(1e-5, 2e-5) for _ in range(500)], clock, host_s=1e-6)
    rule = StopRule(target_spread=0.02, min_samples=10, max_samples=100, max_time_s=1.0)
    times, stop = sample_until_stable(timer, rule, warmup=0, clock=clock)
    assert stop == "max_samples"
    assert len(times) == 100


def test_noisy_case_stops_at_time_cap():
    clock = FakeClock()
    rng = random.Random(1)
    # Every sample costs 10 ms of host time: the 1 s cap allows about 100 of them.
    timer = ScriptedTimer([rng.uniform(1e-3, 2e-3) for _ in range(10_000)], clock, host_s=0.01)
    rule = StopRule(target_spread=0.02, min_samples=10, max_samples=10_000, max_time_s=1.0)
    times, stop = sample_until_stable(timer, rule, warmup=2, clock=clock)
    assert stop == "time_cap"
    assert 90 <= len(times) <= 110
    assert clock.now - 2 * 0.01 == pytest.approx(len(times) * 0.01)


def test_slow_warmup_keeps_first_batch_inside_the_time_cap():
    clock = FakeClock()
    timer = ScriptedTimer([0.3] * 100, clock, host_s=0.3)  # 300 ms a sample
    rule = StopRule(min_samples=20, max_time_s=1.0)
    times, stop = sample_until_stable(timer, rule, warmup=1, clock=clock)
    assert timer.batches[1] == 3  # 1 s / 0.3 s, not min_samples
    assert stop in ("converged", "time_cap")


# --- argument sets and graph sizing ------------------------------------------------------------


def test_args_nbytes_counts_shared_tensors_once():
    weight = torch.empty(1000, dtype=torch.float16)  # 2000 bytes, shared
    sets = [(torch.empty(10, dtype=torch.float32), weight, 3) for _ in range(3)]
    assert args_nbytes(sets) == 3 * 40 + 2000
    assert args_nbytes([([weight, {"x": torch.empty(4, dtype=torch.int8)}],)]) == 2004
    assert args_nbytes([()]) == 0


def test_build_arg_sets_stops_at_min_bytes_or_max_sets():
    make = lambda i: (torch.full((256,), float(i)),)  # 1 KiB each
    sets = build_arg_sets(make, min_bytes=4096 + 1)
    assert len(sets) == 5
    assert [float(s[0][0]) for s in sets] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert len(build_arg_sets(make, min_bytes=10**9, max_sets=7)) == 7
    assert len(build_arg_sets(make, min_bytes=0)) == 1


def test_graph_calls_fill_target_in_whole_rotations():
    assert graph_calls(10e-6, 1, target_s=1e-3) == 100
    assert graph_calls(10e-6, 3, target_s=1e-3) == 102  # rounded up to whole rotations
    assert graph_calls(1e-3, 8, target_s=1e-3) == 8  # at least one rotation
    assert graph_calls(1e-9, 1, target_s=1e-3, max_calls=500) == 500


def test_rotating_call_cycles_through_sets():
    seen = []
    call = sampling.rotating(lambda x: seen.append(x), [(0,), (1,), (2,)])
    for _ in range(7):
        call()
    assert seen == [0, 1, 2, 0, 1, 2, 0]


def test_stream_escaped():
    assert not stream_escaped(2e-6, 50e-6)  # a synchronize's own noise
    assert stream_escaped(900e-6, 30e-6)  # a 1 ms kernel still running on another stream
    assert not stream_escaped(40e-6, 2e-3)  # under 5% of a long kernel: noise


# --- argument checks that need no GPU ----------------------------------------------------------


def test_time_gpu_rejects_unknown_method():
    with pytest.raises(ValueError, match="method"):
        time_gpu(lambda: None, method="host")


def test_time_gpu_rejects_args_and_make_args_together():
    with pytest.raises(ValueError, match="not both"):
        time_gpu(lambda: None, args=[()], make_args=lambda i: ())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without CUDA")
def test_time_gpu_without_cuda_says_so():
    with pytest.raises(RuntimeError, match="CUDA"):
        time_gpu(lambda: None)


# --- GPU ---------------------------------------------------------------------------------------

QUICK = StopRule(target_spread=0.02, min_samples=10, max_samples=200, max_time_s=0.5)


@pytest.mark.gpu
def test_events_time_a_large_copy_near_bandwidth():
    src = torch.rand(2**28, device="cuda")  # 1 GiB
    dst = torch.empty_like(src)
    stats = time_gpu(lambda: dst.copy_(src), method="events", rule=QUICK)
    gbps = 2 * src.numel() * 4 / stats.median_s / 1e9
    assert stats.method == "events"
    assert stats.p20_s <= stats.median_s <= stats.p80_s
    assert 500 < gbps < 6000


@pytest.mark.gpu
def test_auto_replays_a_graph_for_a_short_kernel_and_matches_events():
    # Each set is 64 MiB of reads; four sets hold more than twice any Hopper L2.
    make = lambda i: (torch.rand(2**24, device="cuda"),)
    graph = time_gpu(lambda x: x.sum(), make_args=make, method="auto", rule=QUICK)
    assert graph.method == "graph"
    assert graph.calls_per_sample >= 4
    events = time_gpu(lambda x: x.sum(), make_args=make, method="events", rule=QUICK)
    # Graph replay drops launch gaps, so it is not slower; both read the same 64 MiB from HBM.
    assert graph.median_s < events.median_s * 1.2
    assert graph.median_s > events.median_s * 0.5


@pytest.mark.gpu
def test_a_rotation_is_replayed_cold_without_a_flush():
    # 16 MiB fits in L2; a rotation over copies holding twice L2 must still read from HBM.
    x = torch.rand(2**22, device="cuda")
    sets = rotation_sets((x,), 2 * l2_bytes(x.device))
    assert len(sets) >= 4
    rotation = Rotation([lambda t=t[0]: t.sum() for t in sets])
    cold = cold_l2_replay_s(rotation)  # the tuner's timer hands a Rotation to rotating replay
    hot = timing.rotating_replay_s(Rotation([lambda: x.sum()]))  # one set: L2-resident
    read_s = x.numel() * 4 / 6e12  # no HBM on these GPUs reads 6 TB/s
    assert cold > read_s and cold > 1.2 * hot, (cold, hot, read_s)
    events = time_gpu(lambda t: t.sum(), args=sets, method="graph", rule=QUICK)
    assert 0.7 < cold / events.median_s < 1.3  # as the sweep's rotating graph times it


@pytest.mark.gpu
def test_tiny_kernel_graph_time_is_microseconds():
    x = torch.zeros(1, device="cuda")
    stats = time_gpu(lambda: x.add_(1), method="graph", flush_l2=False, rotate_min_bytes=0)
    assert stats.method == "graph"
    assert 0.2e-6 < stats.median_s < 20e-6


@pytest.mark.gpu
def test_side_stream_kernel_is_still_timed():
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    side = torch.cuda.Stream()

    def on_side_stream():
        # The current stream does not wait for `side`: events on it alone would see ~nothing.
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            torch.matmul(a, a)

    joined = time_gpu(lambda: torch.matmul(a, a), method="events", rule=QUICK)
    escaped = time_gpu(on_side_stream, method="events", rule=QUICK)
    assert escaped.method == "events-sync"
    assert escaped.median_s == pytest.approx(joined.median_s, rel=0.3)


@pytest.mark.gpu
def test_graph_refuses_a_side_stream_kernel():
    a = torch.randn(4096, 4096, device="cuda")
    side = torch.cuda.Stream()

    def on_side_stream():
        with torch.cuda.stream(side):
            torch.matmul(a, a)

    with pytest.raises(ValueError, match="stream"):
        time_gpu(on_side_stream, method="graph")
    torch.cuda.synchronize()


@pytest.mark.gpu
def test_l2_flush_writes_twice_the_l2():
    flush = timing.L2Flush()
    l2_bytes = torch.cuda.get_device_properties(torch.cuda.current_device()).L2_cache_size
    assert flush.nbytes == 2 * l2_bytes
    flush()
    torch.cuda.synchronize()
    assert math.isclose(flush.buffer.float().sum().item(), 0.0)


def test_an_escape_must_show_in_both_rounds_of_checks(monkeypatch):
    rounds = []

    def scripted(residuals):
        def residual(fn, checks):
            rounds.append(checks)
            return residuals[len(rounds) - 1], 30e-6

        return residual

    # A passing stall in the first round only: not an escape, and the second round ran.
    monkeypatch.setattr(timing, "_escape_residual", scripted([50e-6, 1e-6]))
    assert timing._escape_check(lambda: None) == (False, "")
    assert rounds == [5, 20]
    # Work that outlives the end event in both rounds is an escape, with the evidence in words.
    rounds.clear()
    monkeypatch.setattr(timing, "_escape_residual", scripted([900e-6, 880e-6]))
    escaped, evidence = timing._escape_check(lambda: None)
    assert escaped and "880.0 us" in evidence and "20 checks" in evidence
    # A clean first round decides at once.
    rounds.clear()
    monkeypatch.setattr(timing, "_escape_residual", scripted([1e-6]))
    assert timing._escape_check(lambda: None) == (False, "")
    assert rounds == [5]


@pytest.mark.gpu
def test_read_flush_reads_twice_the_l2_and_writes_one_element():
    flush = timing.ReadFlush()
    l2_bytes = torch.cuda.get_device_properties(0).L2_cache_size
    assert flush.buffer.numel() * 4 == 2 * l2_bytes
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):  # the tuner's timer replays it in a graph
        flush()
    graph.replay()
    torch.cuda.synchronize()
    assert flush.total.item() == pytest.approx(flush.buffer.double().sum().item(), rel=1e-4)


@pytest.mark.gpu
def test_cold_l2_replay_time_matches_events_for_a_long_copy_and_drops_launch_gaps():
    src = torch.randn(64 << 20, device="cuda")  # 256 MiB: launch gaps are noise against it
    dst = torch.empty_like(src)
    replay_s = cold_l2_replay_s(lambda: dst.copy_(src))
    events = []
    for _ in range(5):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        torch.cuda.synchronize()
        events.append(start.elapsed_time(end) * 1e-3)
    assert replay_s == pytest.approx(sorted(events)[2], rel=0.15)

    # Two launches of a tiny kernel cost about twice one, not two launch gaps more.
    small = torch.randn(1024, device="cuda")
    one_s = cold_l2_replay_s(lambda: small.mul_(1.0))
    two_s = cold_l2_replay_s(lambda: (small.mul_(1.0), small.mul_(1.0)))
    assert 0 < one_s < 10e-6 and one_s < two_s < 4 * one_s + 2e-6
