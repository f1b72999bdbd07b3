"""Triton kernels against torch's, side by side, on Llama 3 8B bf16 shapes (GPU only).

    python -m roofbench.bench.kernel_speed --out DIR

Each kernel and its torch baseline first pass the correctness gate (`kernels.check`) on the very
shape that is timed; one that fails is reported and not timed. Timing, per row, is the same method
for both sides, in one process:

- "graph": microsecond kernels (GEMV, GEMM with few rows, decode attention) are captured
  CALLS_PER_GRAPH times in a CUDA graph, cycling through enough copies of the inputs that they
  cannot sit in L2, and each replay is timed with CUDA events; the row gives the median replay
  time / CALLS_PER_GRAPH.
- "events": millisecond kernels (GEMM with many rows, prefill attention) go through
  triton.testing.do_bench (events, L2 flushed between calls), median.

Autotuning (the kernels time a few launch configurations per shape at first call) happens in
the warm-up, outside the timed region. FLOP and byte counts come from roofbench.theory.ops;
ratio = ref_us / ours_us (> 1: the Triton kernel is faster). The table is printed and written
as DIR/kernel_speed.csv with the GPU name, versions and a UTC timestamp.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as dt
import math
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import triton

from roofbench.kernels.check import (
    IMPLS,
    AttentionCase,
    DecodeCase,
    GemmCase,
    GemvCase,
    check,
)
from roofbench.theory import ops

CALLS_PER_GRAPH = 20
GRAPH_REPLAYS = 50
ROTATE_BYTES = 256 * 2**20  # input copies cycled per graph: several times any Hopper L2
LLAMA3_8B = {"hidden": 4096, "ffn": 14336, "heads": 32, "kv_heads": 8, "head_dim": 128}


@dataclasses.dataclass
class Row:
    kernel: str
    shape: str
    dtype: str
    method: str
    ours_us: float
    ref_us: float
    ratio: float
    ours_tflops: float
    ref_tflops: float
    ours_gbps: float
    ref_gbps: float
    ours_check: str
    ref_check: str
    gpu: str
    torch_version: str
    triton_version: str
    timestamp_utc: str


def time_graph(calls: list[Callable[[], object]]) -> float:
    """Median seconds per call, CALLS_PER_GRAPH calls (cycling through `calls`) per CUDA graph."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up (compiles, autotunes) off the capture
        for _ in range(3):
            for call in calls:
                call()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(CALLS_PER_GRAPH):
            calls[i % len(calls)]()
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(GRAPH_REPLAYS):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) / 1e3 / CALLS_PER_GRAPH)
    return statistics.median(times)


def time_events(call: Callable[[], object]) -> float:
    """Median seconds per call through triton.testing.do_bench (events, L2 flushed)."""
    call()
    torch.cuda.synchronize()
    return triton.testing.do_bench(call, warmup=100, rep=500, return_mode="median") / 1e3


def _input_sets(case, rotate: bool, seed: int = 1234) -> list[tuple]:
    """One input set, or enough copies to cycle through that together they exceed ROTATE_BYTES."""
    first = case.make_inputs("cuda", seed)
    if not rotate:
        return [first]
    nbytes = sum(t.numel() * t.element_size() for t in first)
    count = max(1, math.ceil(ROTATE_BYTES / nbytes))
    return [first] + [case.make_inputs("cuda", seed + i) for i in range(1, count)]


def measure(case, cost, shape: str, method: str, meta: dict) -> Row:
    """Gate both implementations on `case`, then time each that passed."""
    results = {name: check(name, case, "cuda") for name in ("triton", "torch")}
    for name, res in results.items():
        if not res.ok:
            print(f"GATE FAILED {case.op} {shape} {name}: {res.reason}", file=sys.stderr)
    sets = _input_sets(case, rotate=method == "graph")
    times = {}
    for name in ("triton", "torch"):
        if not results[name].ok:
            times[name] = math.nan
            continue
        fn = IMPLS[case.op][name]
        calls = [_binder(case, fn, inputs, name) for inputs in sets]
        times[name] = time_graph(calls) if method == "graph" else time_events(calls[0])
    ours, ref = times["triton"], times["torch"]

    def rate(amount: float, t: float) -> float:
        return amount / t / 1e12 if t == t else math.nan

    return Row(
        kernel=case.op,
        shape=shape,
        dtype="bf16",
        method=method,
        ours_us=ours * 1e6,
        ref_us=ref * 1e6,
        ratio=ref / ours,
        ours_tflops=rate(cost.flops, ours),
        ref_tflops=rate(cost.flops, ref),
        ours_gbps=rate(cost.bytes_, ours) * 1e3,
        ref_gbps=rate(cost.bytes_, ref) * 1e3,
        ours_check=f"{results['triton'].reason} ({results['triton'].rel_err:.2g})",
        ref_check=f"{results['torch'].reason} ({results['torch'].rel_err:.2g})",
        **meta,
    )


def _binder(case, fn, inputs, name: str) -> Callable[[], object]:
    """A no-argument call of `fn` on `inputs`; the decode baseline gets host context lengths so
    that it never syncs (and can be graph-captured)."""
    if case.op == "attention":
        return lambda: fn(*inputs, causal=case.causal)
    if case.op == "decode_attention" and name == "torch":
        q, k, v, _ = inputs
        return lambda: fn(q, k, v, case.context_lens)
    return lambda: fn(*inputs)


def cases() -> list[tuple]:
    """(case, cost, shape label, timing method) for the Llama 3 8B shapes."""
    h, f = LLAMA3_8B["hidden"], LLAMA3_8B["ffn"]
    hq, hkv, d = LLAMA3_8B["heads"], LLAMA3_8B["kv_heads"], LLAMA3_8B["head_dim"]
    kv = LLAMA3_8B["kv_heads"] * LLAMA3_8B["head_dim"]
    out = []
    for m, n, k in ((1, f, h), (1, h, f), (4, h, h), (4, kv, h), (16, h, f)):
        out.append((GemvCase(m, n, k), ops.gemm(m, n, k), f"M={m} N={n} K={k}", "graph"))
    for m, n, k in ((4096, f, h), (4096, h, f), (4096, h, h)):
        out.append((GemmCase(m, n, k), ops.gemm(m, n, k), f"M={m} N={n} K={k}", "events"))
    # Fewer tokens: microseconds, so timed like the suite times them (graph replay).
    for m, n, k in ((64, h, f), (64, kv, h), (256, h, f), (1024, kv, h)):
        out.append((GemmCase(m, n, k), ops.gemm(m, n, k), f"M={m} N={n} K={k}", "graph"))
    for s in (4096, 8192, 16384):
        case = AttentionCase(1, hq, hkv, s, d, causal=True)
        cost = ops.prefill_attention(1, hq, hkv, s, d, causal=True)
        out.append((case, cost, f"B=1 {hq}q/{hkv}kv d={d} S={s} causal", "events"))
    for batch, ctx in ((1, 4096), (1, 32768), (32, 8192)):
        case = DecodeCase(hq, hkv, (ctx,) * batch, d)
        cost = ops.decode_attention(batch, hq, hkv, [ctx] * batch, d)
        out.append((case, cost, f"B={batch} {hq}q/{hkv}kv d={d} ctx={ctx}", "graph"))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for kernel_speed.csv")
    parser.add_argument("--only", default="", help="comma-separated ops to run (default: all)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("kernel_speed needs a CUDA GPU", file=sys.stderr)
        return 2
    meta = {
        "gpu": torch.cuda.get_device_name(),
        "torch_version": torch.__version__,
        "triton_version": triton.__version__,
        "timestamp_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    print(f"{meta['gpu']}  torch {meta['torch_version']}  triton {meta['triton_version']}")
    only = {s for s in args.only.split(",") if s}
    rows = []
    for case, cost, shape, method in cases():
        if only and case.op not in only:
            continue
        rows.append(measure(case, cost, shape, method, meta))
        r = rows[-1]
        print(
            f"{r.kernel:<17} {r.shape:<38} ours {r.ours_us:9.1f} us  ref {r.ref_us:9.1f} us  "
            f"ratio {r.ratio:5.2f}  TFLOP/s {r.ours_tflops:6.1f} / {r.ref_tflops:6.1f}  "
            f"GB/s {r.ours_gbps:7.0f} / {r.ref_gbps:7.0f}",
            flush=True,
        )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "kernel_speed.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[f.name for f in dataclasses.fields(Row)])
        writer.writeheader()
        writer.writerows(dataclasses.asdict(r) for r in rows)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
