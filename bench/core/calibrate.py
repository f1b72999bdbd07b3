"""`roofbench calibrate`: the constants of the tiered model, measured on this GPU.

Each constant is the result of one microbenchmark (`bench.core.probes`, torch where torch is the
best we have), recorded with its method, samples, p20..p80 spread, and the SM clock and power
NVML saw while it ran:

- read, write and copy roofs: the fastest of a few streaming kernels over 2 GiB, graph-replayed
  (the buffer is 35x the L2, so nothing is served from cache and no flush is needed);
- matmul burst (the first ten 8192^3 bf16 products after a second of idle) and sustained (after
  more than half a second back to back, when the power cap has pulled the clock down);
- launch floors: a one-element kernel graph-replayed, and launched from the host back to back;
- one loaded DRAM round trip: rounds of loads over all SMs, each depending on the last;
- exp2 and FP32 FMA throughput per SM per clock (at the SM clock NVML read during the probe);
- the dirty-L2 write-back: a read-only kernel after the events timer's flush (which leaves L2
  full of dirty lines) against the same kernel after a flush that only reads.

The document is cached per GPU (UUID, driver, max clocks) for a day, so `roofbench run` and
`roofbench model` calibrate once; `--calibration FILE` gives one, `calibrate --out` writes one.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import fields
from datetime import datetime, timezone
from pathlib import Path

from roofbench.bench.core.identity import utc_now, versions
from roofbench.bench.core.sampling import StopRule, percentile, relative_spread
from roofbench.theory import ops
from roofbench.theory.tiers import Calibration

VERSION = 1
MAX_AGE_S = 24 * 3600
STREAM_BYTES = 2 * 2**30
MATMUL_SIZE = 8192
ROUNDS = 1024  # dependent load rounds per latency probe
CHAIN_ITERS = {"exp2": 4096, "fma": 16384}


def cache_path(uuid: str) -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "roofbench"
    return root / f"calibration-{uuid or 'unknown'}.json"


def is_fresh(doc: dict, device: dict, now: datetime | None = None) -> str | None:
    """None when `doc` calibrates `device` (same UUID, driver and max clocks, this version,
    less than a day old), else why not."""
    if doc.get("version") != VERSION:
        return f"calibration version {doc.get('version')} is not {VERSION}"
    for key in ("uuid", "driver", "max_sm_clock_mhz", "max_mem_clock_mhz"):
        if doc.get("device", {}).get(key) != device.get(key):
            return f"calibrated on another {key} ({doc.get('device', {}).get(key)})"
    created = datetime.fromisoformat(doc["created"].replace("Z", "+00:00"))
    age_s = ((now or datetime.now(timezone.utc)) - created).total_seconds()
    if age_s > MAX_AGE_S:
        return f"calibration is {age_s / 3600:.0f} h old (more than {MAX_AGE_S // 3600} h)"
    return None


def calibration_of(doc: dict) -> Calibration:
    """The theory's constants from a calibration document."""
    return Calibration.from_dict(doc["calibration"])


class _Probe:
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


def _best_stream(probe: _Probe, name: str, candidates: dict, nbytes: float) -> float:
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


def _streams(probe: _Probe, device) -> None:
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
    _best_stream(probe, "read_bytes_per_s", reads, ops.read(n * 4, 4).bytes_read)
    writes = {f"fill {b}x{i} w{w}": launcher(probes.fill, (dst, 1.0), b, i, w)
              for b, i, w in shapes}  # fmt: skip
    writes["torch.fill_"] = lambda: dst.fill_(1.0)
    _best_stream(probe, "write_bytes_per_s", writes, ops.fill(n * 4).bytes_)
    copies = {f"copy {b}x{i} w{w}": launcher(probes.copy, (src, dst), b, i, w)
              for b, i, w in shapes}  # fmt: skip
    copies["torch.copy_"] = lambda: dst.copy_(src)
    _best_stream(probe, "copy_bytes_per_s", copies, ops.copy(n * 4).bytes_)


def _matmul(probe: _Probe, device) -> None:
    import torch

    from roofbench.bench.core.timing import EventTimer, GraphTimer

    n = MATMUL_SIZE
    a = torch.randn(n, n, dtype=torch.bfloat16, device=device)
    b = torch.randn(n, n, dtype=torch.bfloat16, device=device)
    c = torch.empty(n, n, dtype=torch.bfloat16, device=device)
    flops = ops.gemm(n, n, n, "bf16").flops
    product = lambda: torch.matmul(a, b, out=c)
    product()
    torch.cuda.synchronize()
    time.sleep(1.0)  # idle: the power cap's average falls back, the clock returns to boost
    with probe.tel.window() as win:
        times = EventTimer(product).measure(10)  # ~14 ms of load: before the cap bites
    probe.record(
        "matmul_burst_flops",
        flops / percentile(times, 50),
        "FLOP/s",
        f"{n}^3 bf16 torch.matmul, first 10 calls after 1 s idle, events",
        times,
        win.summary(),
    )
    graph = GraphTimer(product, calls=20)
    began = time.perf_counter()
    with probe.tel.window() as win:
        while time.perf_counter() - began < 0.6:  # back to back until the cap has settled
            graph.graph.replay()
        torch.cuda.synchronize()
        times = graph.measure(10)
    probe.record(
        "matmul_sustained_flops",
        flops / percentile(times, 50),
        "FLOP/s",
        f"{n}^3 bf16 torch.matmul, 20-call graph replays after 0.6 s back to back",
        times,
        win.summary(),
    )


def _launches(probe: _Probe, device) -> None:
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


def _latency(probe: _Probe, device, sms: int) -> None:
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


def _chains(probe: _Probe, device, sms: int, max_clock_hz: float) -> None:
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


def _writeback(probe: _Probe, device, l2_bytes: int) -> None:
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


def calibrate(telemetry=None, console=None) -> dict:
    """Run every probe on the current GPU; returns the calibration document."""
    import torch

    from roofbench.bench.core.telemetry import Telemetry

    if not torch.cuda.is_available():
        raise RuntimeError("calibrating needs a CUDA device; torch sees none")
    device = torch.device("cuda", torch.cuda.current_device())
    props = torch.cuda.get_device_properties(device)
    own = telemetry is None
    tel = Telemetry(device.index) if own else telemetry
    info = tel.info()
    max_clock_hz = (info.max_sm_clock_mhz or 0) * 1e6
    probe = _Probe(tel, console)
    began = time.perf_counter()
    steps = (
        ("streams", lambda: _streams(probe, device)),
        ("matmul", lambda: _matmul(probe, device)),
        ("launches", lambda: _launches(probe, device)),
        ("latency", lambda: _latency(probe, device, props.multi_processor_count)),
        ("chains", lambda: _chains(probe, device, props.multi_processor_count, max_clock_hz)),
        ("writeback", lambda: _writeback(probe, device, props.L2_cache_size)),
    )
    errors = {}
    try:
        for name, step in steps:
            try:
                step()
            except Exception as err:  # noqa: BLE001 - recorded; the constant is then missing
                errors[name] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
                if console is not None:
                    console.print(f"[red]  {name} failed: {errors[name]}[/]")
            torch.cuda.empty_cache()
    finally:
        if own:
            tel.close()
    device_doc = {
        "name": info.name or torch.cuda.get_device_name(device),
        "uuid": info.uuid,
        "driver": info.driver_version,
        "max_sm_clock_mhz": info.max_sm_clock_mhz,
        "max_mem_clock_mhz": info.max_mem_clock_mhz,
        "power_limit_w": info.power_limit_w,
        "sms": props.multi_processor_count,
        "l2_bytes": props.L2_cache_size,
    }
    doc = {
        "version": VERSION,
        "created": utc_now(),
        "device": device_doc,
        **versions(),
        "wall_time_s": time.perf_counter() - began,
        "constants": probe.constants,
        "errors": errors,
    }
    doc["calibration"] = _theory_constants(probe.constants, device_doc) if not errors else None
    return doc


# Calibration fields that are not a probe's constant: facts of the device.
DEVICE_FIELDS = ("sms", "sm_clock_hz", "l2_bytes", "source")


def _theory_constants(constants: dict, device: dict) -> dict:
    """The theory's Calibration: each probe constant's value, and the device's facts."""
    measured = [f.name for f in fields(Calibration) if f.name not in DEVICE_FIELDS]
    cal = Calibration(
        **{name: constants[name]["value"] for name in measured},
        sms=device["sms"],
        sm_clock_hz=(device["max_sm_clock_mhz"] or 0) * 1e6,
        l2_bytes=device["l2_bytes"],
        source=f"roofbench calibrate on {device['name']}",
    )
    return cal.to_dict()


def load_or_calibrate(path: str | None, telemetry, console, use_cache: bool = True) -> dict:
    """The calibration document `path` names, else a fresh cached one of this GPU, else a new
    one (cached). A given file of another GPU or driver is refused (ValueError)."""
    info = telemetry.info()
    device = {
        "uuid": info.uuid,
        "driver": info.driver_version,
        "max_sm_clock_mhz": info.max_sm_clock_mhz,
        "max_mem_clock_mhz": info.max_mem_clock_mhz,
    }
    if path:
        doc = json.loads(Path(path).read_text())
        stale = is_fresh(doc, device)
        if stale and "old" not in stale:
            raise ValueError(f"--calibration {path}: {stale}")
        if stale and console is not None:
            console.print(f"[yellow]using {path} although {stale}[/]")
        return doc
    cached = cache_path(info.uuid)
    if use_cache and cached.exists():
        try:
            doc = json.loads(cached.read_text())
            if is_fresh(doc, device) is None and doc.get("calibration"):
                if console is not None:
                    console.print(f"calibration from {cached} ({doc['created']})")
                return doc
        except (ValueError, KeyError):
            pass  # a broken cache file is replaced
    if console is not None:
        console.print("calibrating ...")
    doc = calibrate(telemetry, console)
    if doc.get("calibration") and use_cache:
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_text(json.dumps(doc, indent=2, default=str))
    return doc
