"""The probes `roofbench calibrate` runs, one function per group of constants (see
`bench.core.calibrate` for what each measures and why); each records its constants with method,
samples, spread, clock and power through `Probe`."""

from __future__ import annotations

import statistics
from collections.abc import Callable

from roofbench.bench.core.sampling import StopRule, percentile, relative_spread
from roofbench.theory import ops

STREAM_BYTES = 2 * 2**30
ROUNDS = 1024  # dependent load rounds per latency probe
CHAIN_ITERS = {"exp2": 4096, "fma": 16384}
# The fixed-cost probe's sizes: 256 KiB (a decode step's smallest kernels) to 64 MiB, by 2x.
FIXED_PROBE_BYTES = tuple(2**e for e in range(18, 27))
FIXED_PROBE_BLOCK = 1024  # fp32 elements per program: 4 KiB, so even 256 KiB fills 64 SMs
# The concurrency probe: 1 .. 1024 programs (a decode step's kernels have 8-64), each streaming
# its own 256 KiB; the largest count is 256 MiB, the probes' buffer.
CTA_PROBE_PROGRAMS = tuple(2**e for e in range(11))
CTA_PROBE_BYTES = 256 * 2**10
PROBE_BUFFER_BYTES = max(max(FIXED_PROBE_BYTES), max(CTA_PROBE_PROGRAMS) * CTA_PROBE_BYTES) * 4


class Probe:
    """Times one microbenchmark under a telemetry window and records it as a constant."""

    def __init__(self, telemetry, console):
        self.tel, self.console = telemetry, console
        self.constants: dict[str, dict] = {}

    def record(self, name, value, unit, method, times_s=(), window=None, **extra) -> float:
        entry = {"value": value, "unit": unit, "method": method, "samples": len(times_s)}
        if times_s:
            entry |= {
                "p20_s": percentile(times_s, 20),
                "median_s": percentile(times_s, 50),
                "p80_s": percentile(times_s, 80),
                "spread": relative_spread(times_s),
            }
        if window is not None:
            entry |= {
                "sm_clock_mhz": window.median_sm_clock_mhz,
                "power_w": window.max_power_w,
                "clock_event_reasons": "|".join(window.reasons),
            }
        self.constants[name] = entry | extra
        if self.console is not None:
            self.console.print(f"  {name}: {value:.4g} {unit} ({method})", highlight=False)
        return value

    def timed(self, fn: Callable[[], object], method: str = "graph"):
        from roofbench.bench.core.timing import time_gpu

        # Graph replay of one argument set: the probes' buffers are chosen far above the L2 (or,
        # for the launch floor, hold nothing), so no rotation is needed.
        options = {"rotate_min_bytes": 0} if method == "graph" else {}
        with self.tel.window() as win:
            stats = time_gpu(fn, method=method, rule=StopRule(max_time_s=0.3), **options)
        return stats.times_s, win.summary()


def probe_best_stream(probe: Probe, name: str, candidates: dict, nbytes: float) -> float:
    """The fastest candidate's bytes per second; each candidate's median is kept beside it."""
    medians, best = {}, None
    for label, fn in candidates.items():
        try:
            times, window = probe.timed(fn)
        except Exception as err:  # noqa: BLE001 - a tile that does not compile is not a roof
            medians[label] = f"failed: {type(err).__name__}: {str(err).splitlines()[0][:120]}"
            continue
        medians[label] = percentile(times, 50)
        if best is None or medians[label] < best[1]:
            best = (label, medians[label], times, window)
    if best is None:
        raise RuntimeError(f"every {name} candidate failed: {medians}")
    label, median_s, times, window = best
    return probe.record(
        name,
        nbytes / median_s,
        "B/s",
        f"fastest of {len(candidates)} streaming kernels over {nbytes / 2**30:.1f} GiB: {label}",
        times,
        window,
        candidates_median_s=medians,
    )


def probe_streams(probe: Probe, device) -> None:
    import torch

    from roofbench.bench.core import probes

    n = STREAM_BYTES // 4
    src = torch.rand(n, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    part = torch.empty(n // 1024, dtype=torch.float32, device=device)
    shapes = [(4096, 4, 8), (4096, 16, 8), (2048, 8, 4), (8192, 4, 8)]

    def launcher(kernel, args, block, iters, warps):
        grid = (n // (block * iters),)
        return lambda: kernel[grid](*args, BLOCK=block, ITERS=iters, num_warps=warps)

    reads = {f"read_sum {b}x{i} w{w}": launcher(probes.read_sum, (src, part), b, i, w)
             for b, i, w in shapes}  # fmt: skip
    reads["torch.sum"] = lambda: src.sum()
    probe_best_stream(probe, "read_bytes_per_s", reads, ops.read(n * 4, 4).bytes_read)
    writes = {f"fill {b}x{i} w{w}": launcher(probes.fill, (dst, 1.0), b, i, w)
              for b, i, w in shapes}  # fmt: skip
    writes["torch.fill_"] = lambda: dst.fill_(1.0)
    probe_best_stream(probe, "write_bytes_per_s", writes, ops.fill(n * 4).bytes_)
    copies = {f"copy {b}x{i} w{w}": launcher(probes.copy, (src, dst), b, i, w)
              for b, i, w in shapes}  # fmt: skip
    copies["torch.copy_"] = lambda: dst.copy_(src)
    probe_best_stream(probe, "copy_bytes_per_s", copies, ops.copy(n * 4).bytes_)


def probe_launches(probe: Probe, device) -> None:
    import torch

    from roofbench.bench.core.timing import EventTimer

    one = torch.zeros(1, device=device)
    times, window = probe.timed(lambda: one.add_(1.0), method="graph")
    probe.record("launch_s", percentile(times, 50), "s", "one-element add_, graph-replayed",
                 times, window)  # fmt: skip
    calls = 200

    def burst():
        for _ in range(calls):
            one.add_(1.0)

    burst()
    with probe.tel.window() as win:
        times = [t / calls for t in EventTimer(burst).measure(20)]
    probe.record("launch_stream_s", percentile(times, 50), "s",
                 f"one-element add_, {calls} launched back to back from the host, events",
                 times, win.summary())  # fmt: skip


def _graph_read_s(buf, nbytes: int, programs: int, iters: int) -> list[float]:
    """Times of read_sum over `nbytes` of `buf` in `programs` programs of `iters` blocks of
    FIXED_PROBE_BLOCK fp32 each, graph-replayed over rotating views of `buf` (as many as the
    sweep's graph timer rotates, so small sizes see the L2 the sweep's small cases see)."""
    import torch

    from roofbench.bench.core import probes
    from roofbench.bench.core.timing import time_gpu

    n = nbytes // 4
    slots = buf.numel() // n
    part = torch.empty(programs, dtype=torch.float32, device=buf.device)

    def make_args(i):
        return (buf[(i % slots) * n : (i % slots + 1) * n], part)

    def read(x, part):
        probes.read_sum[(programs,)](x, part, BLOCK=FIXED_PROBE_BLOCK, ITERS=iters, num_warps=4)

    stats = time_gpu(read, make_args=make_args, method="graph", rule=StopRule(max_time_s=0.2))
    return stats.times_s


def probe_fixed(probe: Probe, device) -> None:
    """Per size: graph-replayed read_sum of one block per program, the median time less
    launch and bytes at the read roof."""
    import torch

    read_roof = probe.constants["read_bytes_per_s"]["value"]
    launch_s = probe.constants["launch_s"]["value"]
    buf = torch.rand(PROBE_BUFFER_BYTES // 4, dtype=torch.float32, device=device)
    excess, medians, spreads, samples = [], [], [], 0
    with probe.tel.window() as win:
        for nbytes in FIXED_PROBE_BYTES:
            times = _graph_read_s(buf, nbytes, nbytes // (4 * FIXED_PROBE_BLOCK), 1)
            median_s = percentile(times, 50)
            medians.append(median_s)
            spreads.append(relative_spread(times))
            samples += len(times)
            excess.append(max(0.0, median_s - launch_s - nbytes / read_roof))
    sizes = ", ".join(
        f"{b // 1024} KiB {e * 1e6:.2f}" for b, e in zip(FIXED_PROBE_BYTES, excess, strict=True)
    )
    probe.record(
        "kernel_fixed_s",
        statistics.median(excess),
        "s",
        f"read_sum (4 KiB per program) over 256 KiB..64 MiB, graph-replayed over rotating views, "
        f"median less launch and bytes at the read roof; us by size: {sizes}",
        (),
        win.summary(),
        bytes=list(FIXED_PROBE_BYTES),
        excess_s=excess,
        median_s=medians,
        samples=samples,
        spread=max(spreads),  # the widest of the sizes' p20..p80 spreads
    )


def probe_concurrency(probe: Probe, device) -> None:
    """Per program count P: read_sum of P programs, each streaming CTA_PROBE_BYTES of its own in
    4 KiB blocks, graph-replayed; the rate is the bytes over the median time less launch and
    the fixed cost the fixed-cost probe measured at that size."""
    import torch

    from roofbench.theory.calibration import curve_value

    launch_s = probe.constants["launch_s"]["value"]
    fixed = probe.constants["kernel_fixed_s"]
    buf = torch.rand(PROBE_BUFFER_BYTES // 4, dtype=torch.float32, device=device)
    iters = CTA_PROBE_BYTES // (4 * FIXED_PROBE_BLOCK)
    rates, medians, spreads, samples = [], [], [], 0
    with probe.tel.window() as win:
        for programs in CTA_PROBE_PROGRAMS:
            nbytes = programs * CTA_PROBE_BYTES
            times = _graph_read_s(buf, nbytes, programs, iters)
            median_s = percentile(times, 50)
            fixed_s = curve_value(tuple(fixed["bytes"]), tuple(fixed["excess_s"]), nbytes)
            medians.append(median_s)
            spreads.append(relative_spread(times))
            samples += len(times)
            rates.append(nbytes / max(median_s - launch_s - fixed_s, 1e-9))
    listed = ", ".join(f"{p} {r / 1e9:.0f}" for p, r in zip(CTA_PROBE_PROGRAMS, rates, strict=True))
    probe.record(
        "cta_read_bytes_per_s",
        rates[0],
        "B/s",
        f"read_sum of P programs streaming {CTA_PROBE_BYTES // 1024} KiB each in 4 KiB blocks, "
        f"graph-replayed, bytes / (median - launch - fixed cost); value: one program; "
        f"GB/s by P: {listed}",
        (),
        win.summary(),
        programs=list(CTA_PROBE_PROGRAMS),
        rates=rates,
        median_s=medians,
        samples=samples,
        spread=max(spreads),  # the widest of the counts' p20..p80 spreads
    )


def probe_latency(probe: Probe, device, sms: int) -> None:
    """Two probes of the DRAM round trip: rounds of 512 bytes per program (the bus nearly idle)
    and rounds of 8 KiB per program (4 MiB over all SMs: the bus about as busy as a memory-
    bound kernel keeps it); the loaded one, less its bytes at the read roof, is the round trip
    a kernel's first loads and last stores wait."""
    import torch

    from roofbench.bench.core import probes

    programs = 4 * sms
    read_roof = probe.constants.get("read_bytes_per_s", {}).get("value")
    for name, block, rounds in (
        ("dram_latency_s", 128, ROUNDS),
        ("dram_latency_loaded_s", 2048, 256),
    ):
        stride = programs * block
        x = torch.zeros(rounds * stride, dtype=torch.int32, device=device)
        out = torch.empty(stride, dtype=torch.int32, device=device)
        fn = lambda x=x, out=out, stride=stride, rounds=rounds, block=block: (
            probes.dependent_rounds[(programs,)](
                x, out, stride, ROUNDS=rounds, BLOCK=block, num_warps=4, num_stages=1
            )
        )
        times, window = probe.timed(fn, method="events")
        per_round = percentile(times, 50) / rounds
        transfer = stride * 4 / read_roof if read_roof else 0.0
        probe.record(
            name,
            max(per_round - transfer, 0.0),
            "s",
            f"{rounds} dependent rounds of {programs} x {block} int32 loads over "
            f"{x.numel() * 4 / 2**20:.0f} MiB, events, time / rounds"
            + (f" less {stride * 4 / 2**20:.1f} MiB at the read roof" if transfer else ""),
            times,
            window,
            per_round_s=per_round,
        )
        del x, out


def probe_chains(probe: Probe, device, sms: int, max_clock_hz: float) -> None:
    import torch

    from roofbench.bench.core import probes

    block, programs = 1024, 16 * sms
    x = torch.rand(programs * block, dtype=torch.float32, device=device)
    out = torch.empty_like(x)
    for name, kernel in (("exp2", probes.exp2_chains), ("fma", probes.fma_chains)):
        iters = CHAIN_ITERS[name]
        fn = lambda kernel=kernel, iters=iters: kernel[(programs,)](
            x, out, ITERS=iters, BLOCK=block, num_warps=4
        )
        times, window = probe.timed(fn, method="events")
        clock_hz = (window.median_sm_clock_mhz or max_clock_hz / 1e6) * 1e6
        ops = programs * block * iters
        probe.record(
            f"{name}_per_clock_per_sm",
            ops / percentile(times, 50) / sms / clock_hz,
            "per clock per SM",
            f"{programs} x {block} threads' chains of {iters} dependent {name}, at the "
            f"{clock_hz / 1e6:.0f} MHz NVML read",
            times,
            window,
        )


def probe_writeback(probe: Probe, device, l2_bytes: int) -> None:
    import torch

    from roofbench.bench.core import probes
    from roofbench.bench.core.timing import EventTimer, L2Flush

    n = 4 * l2_bytes // 4  # a read-only kernel over 4x the L2
    x = torch.rand(n, dtype=torch.float32, device=device)
    part = torch.empty(n // 4096, dtype=torch.float32, device=device)
    clean = torch.rand(2 * l2_bytes // 4, dtype=torch.float32, device=device)
    read = lambda: probes.read_sum[(n // 4096,)](x, part, BLOCK=4096, ITERS=1, num_warps=8)
    read()
    dirty_flush = L2Flush(device)
    with probe.tel.window() as win:
        after_dirty = EventTimer(read, flush=dirty_flush).measure(30)
        after_clean = EventTimer(read, flush=lambda: clean.sum()).measure(30)
    cost = max(0.0, percentile(after_dirty, 50) - percentile(after_clean, 50))
    probe.record(
        "writeback_s",
        cost,
        "s",
        f"read-only kernel over {4 * l2_bytes / 2**20:.0f} MiB after the events timer's flush "
        "(writes) minus after a flush that only reads, medians of 30",
        after_dirty,
        win.summary(),
        clean_median_s=percentile(after_clean, 50),
    )
