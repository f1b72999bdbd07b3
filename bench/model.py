"""`roofbench model`: a whole Llama-shaped decoder measured on this GPU and held against theory.

The decoder is `kernels.llama.Llama` (random bf16 weights) on each backend ("triton": this
project's kernels; "torch": F.linear and SDPA). Every measurement is one `Record` in
`model_records.csv`, written as soon as it is made, with its prediction from `theory.llm` on the
run's measured roof (`bench.ceilings`, measured once per run) and on the datasheet roof:

- `ttft`: one prefill of `batch` prompts of `seq` tokens (`Llama.prefill`: every position, K and
  V cached, logits of the last token), timed per call with CUDA events (by graph replay when
  predicted under 50 ms, where launching from Python would be timed); `theory.llm.prefill`.
- `tbt`: one decode step of `batch` sequences holding `seq` cached tokens each (the cache filled
  with random K and V, as a prefill would leave it), captured in a CUDA graph and timed by
  replaying it; `theory.llm.decode_step`. Throughput = batch / TBT tokens per second.
- `naive_step`: the next token without a KV cache, all `seq` tokens recomputed
  (`Llama.naive_step`), timed with events; `theory.llm.naive_step`. Set against `tbt` at batch 1
  and the same `seq`, the two growth exponents (slope of log time vs log N over the upper half
  of the points) are fitted for the measured and for the predicted times.
- MHA vs GQA: `tbt` of the same model with one KV head per query head (`ModelConfig.with_mha`).
- Memory-bound batch: at one short context, the smallest swept batch whose TBT exceeds 1.25x the
  batch-1 TBT, for the measured times and, by the same rule, for the predicted ones.
- `gate`: before any timing, each backend's logits (prefill and one decode step) against the
  torch backend's on the same weights and tokens; a backend over the tolerance is `failed` for
  every point of that model and never timed.

A point that cannot fit in free memory (theory's KV-cache bytes plus the decoder's workspace
estimate), or that runs out of memory, is `skipped` with the reason. Depth: a model whose
weights would take more than half the GPU's memory is measured with fewer layers
(`ModelConfig.with_layers`); its predictions are for the same reduced model, and the summary adds
a full-depth estimate. Without a CUDA GPU the run writes theory's predictions only.

Output: `results/<gpu-slug>/model-<model>-<UTC time>/` with model_records.csv, model_summary.md,
ttft.png, tbt.png, throughput_latency.png, naive_vs_cached.png and run.json.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from roofbench.bench.records import Record, RecordWriter
from roofbench.theory import llm
from roofbench.theory.llm import ModelConfig
from roofbench.theory.roofline import Roof

BACKENDS = ("triton", "torch")
PHASES = ("ttft", "tbt", "naive_step")
DTYPE = "bf16"
RECORDS_CSV = "model_records.csv"
SUMMARY_MD = "model_summary.md"
PLOTS = ("ttft.png", "tbt.png", "throughput_latency.png", "naive_vs_cached.png")

NO_GPU_REASON = "no CUDA GPU: predictions only"
NO_GPU_NOTE = (
    "No CUDA GPU is visible to torch: this report holds theory's predictions only, on the "
    "datasheet roof. Measuring needs a GPU."
)
BUDGET_REASON = "time budget reached"

# A model is cut to the layers whose weights fit in this fraction of the GPU's memory, leaving
# the rest for the KV cache and activations.
WEIGHT_FRACTION = 0.5
# A point is skipped when its cache and workspace estimate exceed this fraction of free memory.
FIT_FRACTION = 0.9
# Memory-bound batch: the first batch whose TBT exceeds this multiple of the batch-1 TBT.
KNEE_FACTOR = 1.25
# Growth exponents are fitted over this upper fraction of the swept lengths (at least 2 points).
FIT_UPPER_FRACTION = 0.5
# Relative L2 error of logits allowed against the torch backend. bf16: seen on the CPU, a bf16
# decoder against the same rounded weights in fp32 differed by 1.2e-2 (8 layers) to 2.4e-2
# (80 layers); two bf16 implementations differ by less, and a wiring error gives O(1).
GATE_TOLERANCE = {"bf16": 5e-2, "fp16": 1e-2, "fp32": 2e-3}
# (batch, prompt tokens) of the gate: prefill, then one decode step. They cover GEMV (1 row),
# GEMM (64, 256 and 32 rows), flash prefill and split-KV decode attention.
GATE_SHAPES = ((1, 64), (32, 8))
# Per measurement: a few samples, each a whole prefill or decode step (milliseconds to seconds).
MIN_SAMPLES = 5
# A prefill (or naive step) predicted under this is timed by graph replay like a decode step:
# at a few milliseconds, issuing some 20 kernels per layer from Python takes about as long as
# running them, and events around an eager call would time the host. Longer ones use events.
GRAPH_BELOW_S = 0.05
# A GPM window repeats the call for >= 0.2 s; only calls shorter than this get one.
GPM_MAX_CALL_S = 0.05
GPM_LEAD_S = 0.1


def _powers_of_two(low: int, high: int) -> tuple[int, ...]:
    return tuple(1 << e for e in range(low.bit_length() - 1, high.bit_length()))


# --- sweeps, as data ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSweep:
    """What one sweep measures; every length is in tokens."""

    name: str
    ttft_batches: tuple[int, ...]
    ttft_prompts: tuple[int, ...]
    tbt_batches: tuple[int, ...]
    tbt_contexts: tuple[int, ...]
    naive_sequences: tuple[int, ...]  # naive_step at batch 1, and tbt at batch 1 beside it
    knee_context: int  # short, so the weights (not the KV cache) decide the memory-bound batch
    knee_batches: tuple[int, ...]
    mha_batches: tuple[int, ...]
    mha_contexts: tuple[int, ...]
    max_prefill_tokens: int | None = None  # TTFT points with batch x prompt above it are left out


SWEEPS: dict[str, ModelSweep] = {
    "quick": ModelSweep(
        name="quick",
        ttft_batches=(1,),
        ttft_prompts=(512, 4096),
        tbt_batches=(1, 16),
        tbt_contexts=(512, 8192),
        naive_sequences=(512, 2048, 8192),
        knee_context=32,
        knee_batches=(1, 64, 256, 512),
        mha_batches=(1,),
        mha_contexts=(8192,),
    ),
    "medium": ModelSweep(
        name="medium",
        ttft_batches=(1, 4, 16),
        ttft_prompts=_powers_of_two(128, 32768)[::2],  # 128, 512, 2048, 8192, 32768
        tbt_batches=(1, 4, 16, 64, 256),
        tbt_contexts=_powers_of_two(128, 32768)[::2],
        naive_sequences=_powers_of_two(128, 8192)[::2],
        knee_context=32,
        knee_batches=_powers_of_two(1, 512),
        mha_batches=(1, 16),
        mha_contexts=(512, 8192),
        max_prefill_tokens=32768,
    ),
    "full": ModelSweep(
        name="full",
        ttft_batches=(1, 4, 16),
        ttft_prompts=_powers_of_two(128, 32768),
        tbt_batches=_powers_of_two(1, 256),
        tbt_contexts=_powers_of_two(128, 32768),
        naive_sequences=_powers_of_two(128, 8192),
        knee_context=32,
        knee_batches=_powers_of_two(1, 1024),
        mha_batches=(1, 16),
        mha_contexts=(512, 2048, 8192, 32768),
    ),
}


@dataclass(frozen=True)
class Point:
    """One measurement's shape: `variant` "base" (the model) or "mha"; `seq` is the prompt
    (ttft), the cached context (tbt) or the recomputed sequence (naive_step)."""

    variant: str
    op: str
    batch: int
    seq: int


def sweep_points(sweep: ModelSweep, mha: bool = True) -> list[Point]:
    """The points of `sweep` in the order they are measured, each once."""
    cap = sweep.max_prefill_tokens
    base = [
        Point("base", "ttft", b, n)
        for b in sweep.ttft_batches
        for n in sweep.ttft_prompts
        if cap is None or b * n <= cap
    ]
    tbt = {(b, c) for b in sweep.tbt_batches for c in sweep.tbt_contexts}
    tbt |= {(b, sweep.knee_context) for b in sweep.knee_batches}
    tbt |= {(1, n) for n in sweep.naive_sequences}
    tbt |= {(b, c) for b in sweep.mha_batches for c in sweep.mha_contexts}
    base += [Point("base", "tbt", b, c) for b, c in sorted(tbt)]
    base += [Point("base", "naive_step", 1, n) for n in sweep.naive_sequences]
    if not mha:
        return base
    return base + [Point("mha", "tbt", b, c) for b in sweep.mha_batches for c in sweep.mha_contexts]


def slug(name: str) -> str:
    """A model name usable in a case id and a folder name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "model"


def case_id(config: ModelConfig, point: Point) -> str:
    """e.g. llama3-8b/ttft/b1_n4096, llama3-8b/tbt/b16_c8192, llama3-8b/naive_step/b1_n512."""
    length = f"c{point.seq}" if point.op == "tbt" else f"n{point.seq}"
    return f"{slug(config.name)}/{point.op}/b{point.batch}_{length}"


def phase(config: ModelConfig, roof: Roof, op: str, batch: int, seq: int) -> llm.Phase:
    """Theory's cost and time of one measurement."""
    if op == "ttft":
        return llm.prefill(config, roof, seq, batch, DTYPE)
    if op == "tbt":
        return llm.decode_step(config, roof, seq, batch, DTYPE)
    if op == "naive_step":
        return llm.naive_step(config, roof, seq, batch, DTYPE)
    raise ValueError(f"unknown phase {op!r} (known: {', '.join(PHASES)})")


def fitting_layers(
    config: ModelConfig, memory_bytes: float, fraction: float = WEIGHT_FRACTION
) -> int:
    """The most layers (at most the model's) whose weights take <= `fraction` of the memory."""
    budget = fraction * memory_bytes
    if config.weights_bytes(DTYPE) <= budget:
        return config.num_layers
    one = config.with_layers(1).weights_bytes(DTYPE)
    per_layer = config.with_layers(2).weights_bytes(DTYPE) - one
    rest = one - per_layer
    return max(1, min(config.num_layers, int((budget - rest) // per_layer)))


# --- records -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    config: ModelConfig
    point: Point
    backend: str


def base_record(task: Task, datasheet: Roof, measured: Roof | None, identity: dict) -> Record:
    """The theory half of a record; without a measured roof the datasheet roof's bound is kept."""
    config, p = task.config, task.point
    on_datasheet = phase(config, datasheet, p.op, p.batch, p.seq)
    on_measured = phase(config, measured, p.op, p.batch, p.seq) if measured else None
    main = on_measured or on_datasheet
    return Record(
        case=case_id(config, p),
        op=p.op,
        impl=task.backend,
        dtype=DTYPE,
        batch=p.batch,
        seq=p.seq,
        m=p.batch if p.op == "tbt" else p.batch * p.seq,  # token rows through the projections
        heads=config.num_heads,
        kv_heads=config.num_kv_heads,
        head_dim=config.head_dim,
        flops=main.flops,
        bytes=main.bytes_,
        intensity=main.intensity,
        predicted_s=on_measured.time_s if on_measured else None,
        predicted_datasheet_s=on_datasheet.time_s,
        bound=main.bound,
        **{k: v for k, v in identity.items() if k in Record.__dataclass_fields__},
    )


def run_tasks(
    tasks: Iterable[Task],
    base: Callable[[Task], Record],
    measure: Callable[[Task, Record], Record],
    write: Callable[[Record], None],
    deadline: float | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> bool:
    """Measure the tasks in order, writing each record; once `clock()` passes `deadline`, the
    rest are written as skipped (with their predictions). Returns whether the deadline hit."""
    stopped = False
    for task in tasks:
        stopped = stopped or (deadline is not None and clock() >= deadline)
        record = base(task)
        if stopped:
            write(dataclasses.replace(record, status="skipped", reason=BUDGET_REASON))
        else:
            write(measure(task, record))
    return stopped


# --- analysis (pure) ---------------------------------------------------------------------------


def fit_exponent(
    lengths: Sequence[float], times_s: Sequence[float | None], upper: float = FIT_UPPER_FRACTION
) -> float | None:
    """Least-squares slope of log(time) against log(length) over the largest lengths: the upper
    `upper` fraction of the points, at least 2. None with fewer than 2 usable points."""
    pairs = sorted(
        (n, t) for n, t in zip(lengths, times_s, strict=True) if n > 0 and t is not None and t > 0
    )
    if len(pairs) < 2:
        return None
    kept = pairs[-max(2, math.ceil(upper * len(pairs))) :]
    x = np.log([n for n, _ in kept])
    y = np.log([t for _, t in kept])
    return float(np.polyfit(x, y, 1)[0])


def memory_bound_batch(
    batches: Sequence[int], tbts_s: Sequence[float | None], factor: float = KNEE_FACTOR
) -> int | None:
    """The smallest batch whose TBT exceeds `factor` x the batch-1 TBT; None when batch 1 was
    not measured or no batch exceeds it."""
    times = {b: t for b, t in zip(batches, tbts_s, strict=True) if t is not None and t > 0}
    if 1 not in times:
        return None
    over = [b for b in sorted(times) if times[b] > factor * times[1]]
    return over[0] if over else None


def _first_batch(holds: Callable[[int], bool], max_batch: int) -> int | None:
    """The smallest batch in 1..max_batch where `holds` (monotone in batch) is true."""
    if not holds(max_batch):
        return None
    lo, hi = 1, max_batch
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if holds(mid) else (mid + 1, hi)
    return lo


def predicted_knee_batch(
    config: ModelConfig, roof: Roof, context: int, max_batch: int = 8192
) -> int | None:
    """The same rule as `memory_bound_batch` on theory's TBT, over every batch 1..max_batch."""
    one = llm.decode_step(config, roof, context, 1, DTYPE).time_s
    return _first_batch(
        lambda b: llm.decode_step(config, roof, context, b, DTYPE).time_s > KNEE_FACTOR * one,
        max_batch,
    )


def compute_bound_batch(
    config: ModelConfig, roof: Roof, context: int, max_batch: int = 8192
) -> int | None:
    """The smallest batch whose decode step theory calls compute-bound on `roof`."""
    return _first_batch(
        lambda b: llm.decode_step(config, roof, context, b, DTYPE).bound == "compute", max_batch
    )


def layer_share(config: ModelConfig, roof: Roof, op: str, batch: int, seq: int) -> float:
    """The share of theory's time that the layers take (the rest: embedding, final norm, LM
    head, launch): (t(2L) - t(L)) / t(L), L = config's layers, clamped to [0, 1]."""
    once = phase(config, roof, op, batch, seq).time_s
    twice = phase(config.with_layers(2 * config.num_layers), roof, op, batch, seq).time_s
    return min(1.0, max(0.0, (twice - once) / once))


def full_depth_estimate(measured_s: float, share: float, layers: int, full_layers: int) -> float:
    """A reduced-depth time scaled to full depth: the layer part (`share` of it) times
    full_layers / layers, the rest as measured."""
    return measured_s * ((1 - share) + share * full_layers / layers)


# --- measuring on the GPU ----------------------------------------------------------------------


@dataclass(frozen=True)
class GateResult:
    backend: str
    ok: bool
    rel_err: float
    max_abs_err: float
    tolerance: float
    reason: str


def _gate_logits(model, shapes, seed: int) -> list:
    """Prefill logits and one decode step's logits for each (batch, tokens) of `shapes`."""
    import torch

    gen = torch.Generator(device=model.device).manual_seed(seed)
    vocab, device = model.config.vocab_size, model.device
    out = []
    for batch, n in shapes:
        toks = torch.randint(0, vocab, (batch, n + 1), generator=gen, device=device)
        model.allocate_cache(batch, n + 1)
        out.append(model.prefill(toks[:, :n]).float())
        lens = torch.full((batch,), n, dtype=torch.int32, device=device)
        out.append(model.decode_step(toks[:, n:].contiguous(), lens).float())
    model.free_cache()
    return out


def gate(models: dict, shapes=GATE_SHAPES, seed: int = 0) -> dict[str, GateResult]:
    """Each backend's logits against the torch backend's (same weights and tokens): relative L2
    error over all outputs <= GATE_TOLERANCE[dtype], and every logit finite."""
    first = next(iter(models.values()))
    reference = models.get("torch") or first.with_backend("torch")
    tol = GATE_TOLERANCE[first.dtype_name]
    try:
        expected = _gate_logits(reference, shapes, seed)
    except Exception as err:  # the reference itself broke: nothing can be judged
        why = f"torch reference raised {type(err).__name__}: {err}"
        return {b: GateResult(b, False, math.nan, math.nan, tol, why) for b in models}
    results = {}
    for backend, model in models.items():
        try:
            got = expected if model is reference else _gate_logits(model, shapes, seed)
        except Exception as err:
            why = f"raised {type(err).__name__}: {err}"
            results[backend] = GateResult(backend, False, math.nan, math.nan, tol, why)
            continue
        rel = max(float((g - e).norm() / e.norm()) for g, e in zip(got, expected, strict=True))
        max_abs = max(float((g - e).abs().max()) for g, e in zip(got, expected, strict=True))
        finite = all(bool(g.isfinite().all()) for g in got)
        if not finite:
            why = "non-finite logits"
        elif not rel <= tol:
            why = f"logits differ from the torch backend's by {rel:.3g} (relative L2) > {tol:g}"
        else:
            why = "ok"
        results[backend] = GateResult(backend, why == "ok", rel, max_abs, tol, why)
    return results


def gate_record(config: ModelConfig, result: GateResult, identity: dict) -> Record:
    shapes = ",".join(f"b{b}_n{n}" for b, n in GATE_SHAPES)
    return Record(
        case=f"{slug(config.name)}/gate/{shapes}",
        op="gate",
        impl=result.backend,
        dtype=DTYPE,
        heads=config.num_heads,
        kv_heads=config.num_kv_heads,
        head_dim=config.head_dim,
        rel_err=result.rel_err,
        max_abs_err=result.max_abs_err,
        status="ok" if result.ok else "failed",
        reason="" if result.ok else f"gate: {result.reason}",
        **{k: v for k, v in identity.items() if k in Record.__dataclass_fields__},
    )


@dataclass
class MeasureContext:
    """What every measurement of a run shares (`bench.run.ceiling_records` reads the roofs and
    identity from it too)."""

    datasheet_roof: Roof
    measured_roof: Roof
    telemetry: Any
    rule: Any  # bench.timing.StopRule
    identity: dict
    gpm: bool
    device: Any


def need_bytes(config: ModelConfig, point: Point) -> int:
    """Memory a point needs beside the weights: theory's KV-cache bytes for what it caches, and
    the decoder's workspace estimate."""
    from roofbench.kernels.llama import workspace_bytes

    b, n = point.batch, point.seq
    if point.op == "ttft":
        return config.kv_cache_bytes(n, b, DTYPE) + workspace_bytes(config, b * n, b, DTYPE)
    if point.op == "naive_step":
        return workspace_bytes(config, b * n, b, DTYPE)
    return config.kv_cache_bytes(n + 1, b, DTYPE) + workspace_bytes(config, b, b, DTYPE)


def _setup(model, point: Point) -> Callable[[], object]:
    """The call to time, on fresh random tokens (and, for a decode step, a random cache)."""
    import torch

    b, n, device = point.batch, point.seq, model.device
    gen = torch.Generator(device=device).manual_seed(point.seq * 131 + point.batch)
    vocab = model.config.vocab_size
    if point.op == "tbt":
        model.allocate_cache(b, n + 1).fill_random_(seed=n)
        toks = torch.randint(0, vocab, (b, 1), generator=gen, device=device)
        lens = torch.full((b,), n, dtype=torch.int32, device=device)
        return lambda: model.decode_step(toks, lens)
    toks = torch.randint(0, vocab, (b, n), generator=gen, device=device)
    if point.op == "ttft":
        model.allocate_cache(b, n)
        return lambda: model.prefill(toks)
    model.free_cache()
    return lambda: model.naive_step(toks)


def _time(fn: Callable[[], object], graph: bool, rule) -> tuple[Any, Callable[[], object], str]:
    """(TimingStats, a call that repeats the timed work, note). Graph: one call captured in a
    CUDA graph (after warm-up calls on a side stream), each sample one replay between events;
    events: each sample one call between events. The call's weights and cache are far beyond
    the L2, so no flush is needed."""
    import torch

    from roofbench.bench.timing import EventTimer, GraphTimer, TimingStats, sample_until_stable

    note = ""
    timer = None
    if graph:
        try:
            timer = GraphTimer(fn, calls=1, warmup_calls=2)
            again, method = timer.graph.replay, "graph"
        except RuntimeError as err:
            torch.cuda.synchronize()
            note = f"graph capture failed ({str(err).splitlines()[0]}): timed with events"
    if timer is None:
        fn()  # compilation and autotuning stay out of the samples
        torch.cuda.synchronize()
        timer, again, method = EventTimer(fn), fn, "events"
    times, stop = sample_until_stable(timer, rule, warmup=1)
    torch.cuda.synchronize()
    return TimingStats.from_times(times, method, stop), again, note


def measure_point(model, point: Point, record: Record, ctx: MeasureContext) -> Record:
    """Fit check, then time `point` on `model` under a telemetry window (and a GPM window for
    short calls); never raises for a point-level problem."""
    import torch

    from roofbench.bench.measure import fill_telemetry, fill_timing

    free_bytes, _ = torch.cuda.mem_get_info(ctx.device)
    need = need_bytes(model.config, point)
    if need > FIT_FRACTION * free_bytes:
        why = f"needs ~{need / 1e9:.1f} GB (KV cache and workspace), {free_bytes / 1e9:.1f} GB free"
        return dataclasses.replace(record, status="skipped", reason=why)
    fn = again = None
    try:
        fn = _setup(model, point)
        graph = point.op == "tbt" or (record.predicted_s or 0) < GRAPH_BELOW_S
        with ctx.telemetry.window() as window:
            stats, again, note = _time(fn, graph, ctx.rule)
        record = fill_timing(record, stats, ctx.measured_roof)
        gpm = None
        if ctx.gpm and stats.median_s < GPM_MAX_CALL_S:
            gpm = ctx.telemetry.gpm_window(again, lead_s=GPM_LEAD_S)
        record = fill_telemetry(record, window.summary(), gpm)
        if note:
            record = dataclasses.replace(record, reason=f"{record.reason}; {note}".lstrip("; "))
        return record
    except torch.cuda.OutOfMemoryError as err:
        why = f"out of memory: {str(err).splitlines()[0]}"
        return dataclasses.replace(record, status="skipped", reason=why)
    except Exception as err:  # one broken point must not end a long run
        why = f"raised {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        return dataclasses.replace(record, status="failed", reason=why)
    finally:
        del fn, again
        model.free_cache()
        gc.collect()
        torch.cuda.empty_cache()


class _Bench:
    """Holds one variant's decoders at a time: built (and gated) at its first point, freed
    before the next variant's are built."""

    def __init__(self, ctx: MeasureContext, backends: Sequence[str], write, console):
        self.ctx, self.backends, self.write, self.console = ctx, backends, write, console
        self.config: ModelConfig | None = None
        self.models: dict | str = {}
        self.gates: dict[str, GateResult] = {}
        self.gate_log: dict[str, dict] = {}

    def _load(self, config: ModelConfig) -> None:
        import torch

        from roofbench.kernels.llama import Llama

        self.models, self.gates = {}, {}
        gc.collect()
        torch.cuda.empty_cache()
        self.config = config
        free_bytes, _ = torch.cuda.mem_get_info(self.ctx.device)
        weights = config.weights_bytes(DTYPE)
        if weights > FIT_FRACTION * free_bytes:
            self.models = f"weights need {weights / 1e9:.1f} GB, {free_bytes / 1e9:.1f} GB free"
            return
        self.console.print(f"building {config.name} ({weights / 1e9:.1f} GB of random weights)")
        try:
            first = Llama.random(config, self.backends[0], self.ctx.device, torch.bfloat16)
        except torch.cuda.OutOfMemoryError as err:
            self.models = f"out of memory building the weights: {str(err).splitlines()[0]}"
            return
        self.models = {b: first.with_backend(b) for b in self.backends}
        self.gates = gate(self.models)
        for result in self.gates.values():
            self.write(gate_record(config, result, self.ctx.identity))
            self.console.print(
                f"gate {config.name} {result.backend}: {result.reason} "
                f"(relative error {result.rel_err:.2e})",
                highlight=False,
            )
        self.gate_log[config.name] = {b: dataclasses.asdict(g) for b, g in self.gates.items()}

    def measure(self, task: Task, record: Record) -> Record:
        if task.config != self.config:
            self._load(task.config)
        if isinstance(self.models, str):
            return dataclasses.replace(record, status="skipped", reason=self.models)
        verdict = self.gates[task.backend]
        if not verdict.ok:
            why = f"gate: {verdict.reason}"
            return dataclasses.replace(record, status="failed", reason=why, rel_err=verdict.rel_err)
        return measure_point(self.models[task.backend], task.point, record, self.ctx)

    def close(self) -> None:
        self.models = {}
        gc.collect()


# --- the run -----------------------------------------------------------------------------------


def _variants(config: ModelConfig) -> dict[str, ModelConfig]:
    variants = {"base": config}
    if config.num_kv_heads != config.num_heads:
        variants["mha"] = config.with_mha()
    return variants


def _write_meta(folder: Path, meta: dict) -> None:
    tmp = folder / "run.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2, default=str))
    tmp.replace(folder / "run.json")


def _ceilings_dict(ceilings) -> dict:
    return {
        "copy_gbps": ceilings.copy_gbps,
        "read_gbps": ceilings.read_gbps,
        "matmul_tflops": ceilings.matmul_tflops,
        "matmul_sustained_tflops": ceilings.matmul_sustained_tflops,
        "launch_s": ceilings.launch_s,
    }


def run_model(
    model_name: str,
    layers: int | None = None,
    sweep: str = "quick",
    out_dir: str | Path = "results",
    backends: Sequence[str] = BACKENDS,
    time_budget_s: float | None = None,
    console=None,
    *,
    time_cap_s: float = 1.0,
    gpm: bool = True,
) -> Path:
    """Measure (or, without a GPU, predict) `model_name` over sweep `sweep`; returns the folder.

    `model_name`: a built-in name (`theory.llm.MODELS`) or a config.json path. `layers`: the
    depth to measure (default: the model's, or as many layers as fit in half the GPU memory).
    `time_budget_s`: wall time after which the remaining points are written as skipped.
    `time_cap_s`: most seconds of sampling per point. `gpm`: GPM windows for short calls.
    """
    import torch
    from rich.console import Console

    from roofbench.bench.gpu import resolve_gpu
    from roofbench.bench.run import roof_dict, utc_now, versions

    began = time.perf_counter()
    console = console or Console()
    if sweep not in SWEEPS:
        raise ValueError(f"unknown sweep {sweep!r} (known: {', '.join(SWEEPS)})")
    backends = tuple(backends)
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or not backends:
        raise ValueError(f"backends must be among {BACKENDS}, got {backends}")
    if layers is not None and layers <= 0:
        raise ValueError(f"layers must be positive, got {layers}")
    full = llm.load_model(model_name)
    gpu = resolve_gpu(None)
    cuda = torch.cuda.is_available()
    memory_bytes = (
        torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
        if cuda
        else gpu.memory_gb * 1e9
    )
    # The name the device reports, as the kernel sweep records it; the table's name without one.
    gpu_name = torch.cuda.get_device_name() if cuda else gpu.name
    auto = layers is None
    layers = min(layers or fitting_layers(full, memory_bytes), full.num_layers)
    config = full if layers == full.num_layers else full.with_layers(layers)
    variants = _variants(config)
    points = sweep_points(SWEEPS[sweep], mha="mha" in variants)
    # Variant by variant (one model's weights in memory at a time); each point on every backend
    # before the next, so a time budget that runs out leaves the backends compared point by point.
    tasks = [
        Task(config_, p, b)
        for variant, config_ in variants.items()
        for p in points
        if p.variant == variant
        for b in backends
    ]
    started = datetime.now(timezone.utc)
    folder = Path(out_dir) / gpu.slug / f"model-{slug(full.name)}-{started:%Y%m%dT%H%M%SZ}"
    folder.mkdir(parents=True, exist_ok=True)
    datasheet = Roof.from_spec(gpu)
    meta = {
        "model": full.name,
        "configs": {
            "full": dataclasses.asdict(full),
            **{k: dataclasses.asdict(v) for k, v in variants.items()},
        },
        "layers": layers,
        "full_layers": full.num_layers,
        "depth_reduced": layers < full.num_layers,
        "depth_reason": _depth_reason(full, layers, auto, memory_bytes),
        "sweep": sweep,
        "sweep_spec": dataclasses.asdict(SWEEPS[sweep]),
        "backends": list(backends),
        "dtype": DTYPE,
        "gpu": gpu_name,
        "gpu_slug": gpu.slug,
        "started": utc_now(),
        **versions(),
        "datasheet_roof": roof_dict(datasheet),
        "measured_roof": None,
        "ceilings": None,
        "time_budget_s": time_budget_s,
    }
    identity = {"gpu": gpu_name, "sweep": f"model-{sweep}", **versions()}
    if not cuda:
        meta["note"] = NO_GPU_NOTE
        _write_meta(folder, meta)
        with RecordWriter(folder / RECORDS_CSV) as writer:
            for task in tasks:
                record = base_record(task, datasheet, None, {**identity, "timestamp": utc_now()})
                writer.write(dataclasses.replace(record, status="skipped", reason=NO_GPU_REASON))
        console.print(f"[yellow]{NO_GPU_NOTE}[/]")
    else:
        deadline = None if time_budget_s is None else began + time_budget_s
        try:
            _measure(folder, meta, tasks, backends, identity, deadline, console, time_cap_s, gpm)
        except BaseException:
            # Interrupted or broken beyond one point: report what was written, then re-raise.
            meta["interrupted"] = True
            _finish(folder, meta, began, console)
            raise
    _finish(folder, meta, began, console)
    return folder


def _finish(folder: Path, meta: dict, began: float, console) -> None:
    from roofbench.bench.model_report import write_report  # the report reads this module
    from roofbench.bench.run import utc_now

    meta["wall_time_s"] = time.perf_counter() - began
    meta["finished"] = utc_now()
    _write_meta(folder, meta)
    try:
        write_report(folder)
    except Exception as err:  # a report problem must not hide the run's own outcome
        console.print(f"[red]could not write the report of {folder}: {err}[/]")
        if not meta.get("interrupted"):
            raise
    console.print(f"wrote {folder}")


def _depth_reason(full: ModelConfig, layers: int, auto: bool, memory_bytes: float) -> str:
    if layers >= full.num_layers:
        return ""
    why = (
        f"the weights of all {full.num_layers} layers ({full.weights_bytes(DTYPE) / 1e9:.0f} GB) "
        f"exceed {WEIGHT_FRACTION:.0%} of the GPU's {memory_bytes / 1e9:.0f} GB"
        if auto
        else "as asked"
    )
    return f"measured with {layers} of {full.num_layers} layers ({why})"


def _cuda_device():
    import torch

    return torch.device("cuda", torch.cuda.current_device())


def _measure(folder, meta, tasks, backends, identity, deadline, console, time_cap_s, gpm) -> None:
    """Ceilings, then every task, each record flushed as it is made."""
    import torch

    from roofbench.bench.ceilings import measure_ceilings, measured_roof
    from roofbench.bench.run import ceiling_records, progress_line, roof_dict, utc_now
    from roofbench.bench.telemetry import Telemetry
    from roofbench.bench.timing import StopRule

    device = _cuda_device()
    telemetry = Telemetry(torch.cuda.current_device())
    info = telemetry.info()
    identity.update(gpu=info.name or torch.cuda.get_device_name(device))
    identity.update(driver=info.driver_version or "")
    datasheet = Roof(**meta["datasheet_roof"])
    console.print(f"measuring ceilings on {identity['gpu']} ...")
    ceilings = measure_ceilings(telemetry=telemetry, gpm=gpm)
    roof = measured_roof(ceilings)
    meta.update(
        gpu=identity["gpu"],
        driver=identity["driver"],
        measured_roof=roof_dict(roof),
        ceilings=_ceilings_dict(ceilings),
    )
    _write_meta(folder, meta)
    console.print(roof.source)
    rule = StopRule(min_samples=MIN_SAMPLES, max_samples=200, max_time_s=time_cap_s)
    ctx = MeasureContext(datasheet, roof, telemetry, rule, {**identity}, gpm, device)
    with RecordWriter(folder / RECORDS_CSV) as writer:
        ctx.identity["timestamp"] = meta["started"]
        for record in ceiling_records(ceilings, ctx):
            writer.write(record)
        count = {"n": 0}

        def write(record: Record) -> None:
            writer.write(record)
            if record.op != "gate":
                count["n"] += 1
                line = progress_line(record)
                console.print(f"[{count['n']}/{len(tasks)}] {line}", highlight=False)

        def base(task: Task) -> Record:
            ctx.identity["timestamp"] = utc_now()
            return base_record(task, datasheet, roof, ctx.identity)

        bench = _Bench(ctx, backends, write, console)
        try:
            meta["stopped_early"] = run_tasks(tasks, base, bench.measure, write, deadline)
        finally:
            meta["gate"] = bench.gate_log
            bench.close()
            telemetry.close()
