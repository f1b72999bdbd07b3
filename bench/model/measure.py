"""One model point measured on the GPU: the decoders of a variant built and gated once, each
point set up on fresh tokens (and a random cache), timed by graph replay or events under a
telemetry window, with a GPM window for short calls."""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from roofbench.bench.core.measure import fill_telemetry, fill_timing
from roofbench.bench.core.records import Record
from roofbench.bench.model.gate import GateResult, gate, gate_record
from roofbench.bench.model.points import DTYPE, Point, Task, fit_reason, fits, need_bytes
from roofbench.kernels.llama import COMPILE
from roofbench.theory.llm import ModelConfig
from roofbench.theory.roofline import Roof

# Per measurement: a few samples, each a whole prefill or decode step (milliseconds to seconds).
MIN_SAMPLES = 5
# A prefill (or naive step) predicted under this is timed by graph replay like a decode step:
# at a few milliseconds, issuing some 20 kernels per layer from Python takes about as long as
# running them, and events around an eager call would time the host. Longer ones use events.
GRAPH_BELOW_S = 0.05
# A GPM window repeats the call for >= 0.2 s; only calls shorter than this get one.
GPM_MAX_CALL_S = 0.05
GPM_LEAD_S = 0.1


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

    from roofbench.bench.core.timing import EventTimer, GraphTimer, TimingStats, sample_until_stable

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

    free_bytes, _ = torch.cuda.mem_get_info(ctx.device)
    need = need_bytes(model.config, point)
    if not fits(free_bytes, need):
        why = fit_reason("KV cache and workspace", free_bytes, need)
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


class ModelBench:
    """Holds one variant's decoders at a time: built (and gated) at its first point, freed
    before the next variant's are built."""

    def __init__(self, ctx: MeasureContext, specs: dict, write, console):
        """`specs`: backend label -> what `Llama` takes as its backend (a preset or op=impl)."""
        self.ctx, self.specs, self.write, self.console = ctx, specs, write, console
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
        if not fits(free_bytes, weights):
            self.models = fit_reason("weights", free_bytes, weights)
            return
        self.console.print(f"building {config.name} ({weights / 1e9:.1f} GB of random weights)")
        try:
            first = Llama.random(config, "torch", self.ctx.device, torch.bfloat16)
        except torch.cuda.OutOfMemoryError as err:
            self.models = f"out of memory building the weights: {str(err).splitlines()[0]}"
            return
        self.models = {label: first.with_backend(spec) for label, spec in self.specs.items()}
        if COMPILE in self.models:  # minutes of silence otherwise
            self.console.print(f"[dim]gating; {COMPILE} compiles the gate's shapes first[/]")
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
        if task.backend == COMPILE:
            p = task.point
            self.console.print(
                f"[dim]{COMPILE}: compiling the {p.op} step at batch {p.batch}, length {p.seq} "
                "(not timed)[/]"
            )
        return measure_point(self.models[task.backend], task.point, record, self.ctx)

    def close(self) -> None:
        self.models = {}
        gc.collect()
