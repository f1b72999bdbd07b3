"""The calibration's matmul probes: the burst and sustained bf16 peaks of wgmma-era GEMMs, and the
peak of the tensor cores driven by mma.sync (`bench.core.mma_probe`); see `bench.core.calibrate`
for what each constant means."""

from __future__ import annotations

import time

from roofbench.bench.core.calibrate_probes import Probe
from roofbench.bench.core.sampling import percentile
from roofbench.theory import ops

# The burst peak's shapes, ~1.1 TFLOP (~1.4 ms) each: the square one every library tunes for,
# and a long-K one whose prologue and epilogue (the C tiles' writes) are a quarter of the square
# one's per FLOP.
MATMUL_SHAPES = ((8192, 8192, 8192), (4096, 4096, 32768))


def _matmul_candidates(device) -> dict:
    """The burst peak's candidates: label -> (flops, one call). cuBLAS (torch.matmul) and
    roofbench's Triton GEMM (tuned by its own timer on first call), each at MATMUL_SHAPES."""
    import torch

    from roofbench.kernels.gemm import gemm

    out = {}
    for m, n, k in MATMUL_SHAPES:
        a = torch.randn(m, k, dtype=torch.bfloat16, device=device)
        w = torch.randn(n, k, dtype=torch.bfloat16, device=device)
        c = torch.empty(m, n, dtype=torch.bfloat16, device=device)
        flops = ops.gemm(m, n, k, "bf16").flops
        shape = f"{m}x{n}x{k}"
        out[f"cuBLAS {shape}"] = (flops, lambda a=a, w=w, c=c: torch.matmul(a, w.T, out=c))
        out[f"triton {shape}"] = (flops, lambda a=a, w=w, c=c: gemm(a, w, out=c))
    return out


def _fastest_burst(probe: Probe, calls: dict) -> tuple:
    """(label, FLOP/s, times, telemetry, medians by label) of the fastest of `calls` (label ->
    (flops, one call, compiled and warm)), each timed over its first 10 calls after a second of
    idle (events: ~10-15 ms of load, before the power cap bites)."""
    from roofbench.bench.core.timing import EventTimer

    medians, best = {}, None
    for label, (flops, fn) in calls.items():
        time.sleep(1.0)  # idle: the power cap's average falls back, the clock returns to boost
        with probe.tel.window() as win:
            times = EventTimer(fn).measure(10)
        medians[label] = percentile(times, 50)
        rate = flops / medians[label]
        if best is None or rate > best[1]:
            best = (label, rate, times, win.summary())
    return (*best, medians)


def probe_matmul(probe: Probe, device) -> None:
    """The bf16 matmul peaks. Burst: the fastest of `_matmul_candidates`, each timed over its
    first 10 calls after a second of idle (events), before the power cap bites; a roof must be
    at least as fast as any matmul the sweep runs, and no one library's kernel is fastest at
    every shape (on an H200 a long-K Triton GEMM ran 2% past cuBLAS at 8192^3). Sustained: the
    same winner back to back for 0.6 s, until the cap has settled, then 20-call graph replays."""
    import torch

    from roofbench.bench.core.timing import GraphTimer

    candidates = _matmul_candidates(device)
    for _, fn in candidates.values():
        fn()  # compile, tune, warm
    torch.cuda.synchronize()
    label, rate, times, window, medians = _fastest_burst(probe, candidates)
    probe.record(
        "matmul_burst_flops",
        rate,
        "FLOP/s",
        f"fastest of {len(candidates)} bf16 GEMMs (cuBLAS and roofbench's Triton GEMM at "
        f"{', '.join('x'.join(map(str, s)) for s in MATMUL_SHAPES)}), first 10 calls after 1 s "
        f"idle, events: {label}",
        times,
        window,
        candidates_median_s=medians,
    )
    flops, product = candidates[label]
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
        f"{label}, 20-call graph replays after 0.6 s back to back",
        times,
        win.summary(),
    )


def probe_mma_sync(probe: Probe, device, sms: int) -> None:
    """bf16 FLOP/s of the tensor cores driven by mma.sync: the fastest of `mma_probe`'s
    configurations, each over PROGRAMS_PER_SM programs an SM, timed as the burst matmul peak is
    (the first 10 calls after a second of idle, events), so the two compare at one clock. A
    configuration Triton did not lower to mma.sync (its compiled PTX) is refused."""
    import torch

    from roofbench.bench.core import mma_probe

    configs = mma_probe.SYNC_CONFIGS
    elements = max(max(bm, bn) * bk for bm, bn, bk, _ in configs)
    a = torch.randn(elements, dtype=torch.bfloat16, device=device)
    b = torch.randn(elements, dtype=torch.bfloat16, device=device)
    out = torch.empty(sms * mma_probe.PROGRAMS_PER_SM, dtype=torch.float32, device=device)
    medians, launches = {}, {}
    for config in configs:
        label = mma_probe.label(config)
        compiled = mma_probe.launch(config, a, b, out)  # compiles it
        kind = mma_probe.ptx_mma(getattr(compiled, "asm", {}).get("ptx", ""))
        if kind != "sync":
            medians[label] = f"refused: lowered to {kind or 'no MMA'}, not mma.sync"
            continue
        flops = mma_probe.flops(config, out.numel())
        launches[label] = (flops, lambda config=config: mma_probe.launch(config, a, b, out))
    torch.cuda.synchronize()
    if not launches:
        raise RuntimeError(f"no configuration ran mma.sync: {medians}")
    label, rate, times, window, timed = _fastest_burst(probe, launches)
    medians |= timed
    probe.record(
        "mma_sync_flops",
        rate,
        "FLOP/s",
        f"fastest of {len(configs)} Triton loops of bf16 mma.sync (fp32 accumulate, operands in "
        f"registers, PTX checked), {mma_probe.PROGRAMS_PER_SM} programs per SM, first 10 calls "
        f"after 1 s idle, events: {label}",
        times,
        window,
        candidates_median_s=medians,
    )
