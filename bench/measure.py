"""One measurement: a case and an implementation in, one `Record` out.

The closed loop of the suite, in order: theory (FLOPs, bytes, prediction on both roofs) ->
fit check -> correctness gate -> GPU timing under a telemetry window -> GPM window -> record.
A case that does not fit, or runs out of memory, is `skipped`; one whose gate fails is `failed`
and gets no time.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from roofbench.bench.cases import Case
from roofbench.bench.records import Record
from roofbench.bench.telemetry import Telemetry
from roofbench.bench.timing import (
    GRAPH_BELOW_S,
    ChosenTimer,
    StopRule,
    TimingStats,
    choose_timer,
    sample_until_stable,
    warm_up,
)
from roofbench.kernels import check as gate
from roofbench.theory.ops import OpCost
from roofbench.theory.roofline import Roof

# The gate's float64 oracle costs 4x the case's memory and the oracle's own time: above these
# sizes the gate runs on a smaller case of the same kind (same heads, head dim and weights).
GATE_MAX_M = 2048
GATE_MAX_BATCH = 2
GATE_MAX_SEQ = 4096
GATE_MAX_CONTEXT = 32768
# A case whose compulsory bytes exceed this fraction of free memory is skipped up front: the
# reference implementations need workspace beside the inputs.
FIT_FRACTION = 0.45
# GPM counters lag: the kernel runs this long before the first GPM sample. The case was just
# timed, so the GPU is warm and a shorter lead than a cold start needs will do.
GPM_LEAD_S = 0.1
# Without a GPM window, the timed work still runs this long before sampling (see warm_up).
WARM_UP_S = 0.1


@dataclass
class RunContext:
    """What every measurement of a run shares."""

    datasheet_roof: Roof
    measured_roof: Roof
    telemetry: Telemetry
    rule: StopRule
    identity: dict  # gpu, driver, torch, triton, commit, timestamp, sweep
    gpm: bool = True


def kernel_case(case: Case, shrink: bool = False) -> gate.Case:
    """The kernels' case for a bench case; `shrink` caps it to a size the gate's oracle affords."""
    if case.op in ("gemm", "gemv"):
        m = min(case.m, GATE_MAX_M) if shrink else case.m
        kind = gate.GemvCase if case.op == "gemv" else gate.GemmCase
        return kind(m=m, n=case.n, k=case.k, dtype=case.dtype)
    batch = min(case.batch, GATE_MAX_BATCH) if shrink else case.batch
    if case.op == "prefill_attention":
        seq = min(case.seq, GATE_MAX_SEQ) if shrink else case.seq
        return gate.AttentionCase(
            batch, case.heads, case.kv_heads, seq, case.head_dim, case.causal, case.dtype
        )
    context = min(case.seq, GATE_MAX_CONTEXT) if shrink else case.seq
    return gate.DecodeCase(case.heads, case.kv_heads, (context,) * batch, case.head_dim, case.dtype)


def gate_name(op: str) -> str:
    """The kernels' name of an op (prefill attention is plain `attention` there)."""
    return "attention" if op == "prefill_attention" else op


def cost_record(
    case_id: str, op: str, impl: str, dtype: str, cost: OpCost, ctx: RunContext, **fields
) -> Record:
    """A record's theory half for `cost`: FLOPs, bytes, predictions on both roofs, the run's
    identity; `fields` adds the rest (shape columns, say)."""
    measured = ctx.measured_roof.predict(cost)
    return Record(
        case=case_id,
        op=op,
        impl=impl,
        dtype=dtype,
        flops=cost.flops,
        bytes=cost.bytes_,
        intensity=cost.intensity,
        predicted_s=measured.time_s,
        predicted_datasheet_s=ctx.datasheet_roof.predict(cost).time_s,
        bound=measured.bound,
        status="ok",
        **{k: v for k, v in ctx.identity.items() if k in _IDENTITY},
        **fields,
    )


def base_record(case: Case, impl: str, ctx: RunContext) -> Record:
    """The theory half of a case's record: shape, cost, predictions on both roofs."""
    return cost_record(case.id, case.op, impl, case.dtype, case.cost(), ctx, **case.shape_fields())


_IDENTITY = ("gpu", "driver", "torch", "triton", "commit", "timestamp", "sweep")


def fill_timing(record: Record, stats: TimingStats, roof: Roof) -> Record:
    """Measured time and what follows from it: error, achieved rates, fraction of the roof."""
    measured_s = stats.median_s
    cost_terms = roof.predict(_cost(record))
    return dataclasses.replace(
        record,
        measured_s=measured_s,
        p20_s=stats.p20_s,
        p80_s=stats.p80_s,
        samples=stats.samples,
        method=stats.method,
        error=measured_s / record.predicted_s - 1,
        achieved_tflops=record.flops / measured_s / 1e12,
        achieved_gbps=record.bytes / measured_s / 1e9,
        # The roofline ceiling (no launch term) over the time taken: 1.0 is on the roof.
        roof_fraction=max(cost_terms.compute_s, cost_terms.memory_s) / measured_s,
    )


def _cost(record: Record) -> OpCost:
    return OpCost(record.flops, record.bytes)


def fill_telemetry(record: Record, summary, gpm) -> Record:
    changes = {
        "sm_clock_mhz": summary.median_sm_clock_mhz,
        "sm_clock_min_mhz": summary.min_sm_clock_mhz,
        "power_w": summary.max_power_w,
        "temp_c": summary.max_temperature_c,
        "clock_event_reasons": "|".join(summary.reasons),
        "throttled": summary.throttled,
    }
    if gpm is not None:
        changes |= {
            "nvml_dram_gbps": gpm.dram_gbps,
            "nvml_tensor_util": gpm.any_tensor_util_pct,
            "nvml_sm_occupancy": gpm.sm_occupancy_pct,
        }
    if summary.throttled:
        changes["reason"] = f"throttled: {summary.throttle_reason}"
    return dataclasses.replace(record, **changes)


def fits(case: Case, device: torch.device) -> str | None:
    """None when the case should fit in free memory, else why not."""
    free_bytes, _ = torch.cuda.mem_get_info(device)
    need = case.cost().bytes_
    if need > FIT_FRACTION * free_bytes:
        return f"needs {need / 1e9:.1f} GB of inputs and outputs, {free_bytes / 1e9:.1f} GB free"
    return None


@dataclass
class Prepared:
    """A gated case ready to time: `call(*make_args(i))` runs the implementation once."""

    record: Record
    call: Callable[..., object]
    make_args: Callable[[int], tuple]
    reduced_gate: bool


def prepare(case: Case, impl: str, ctx: RunContext, device: torch.device) -> Prepared | Record:
    """Theory, fit check and correctness gate; a Record (skipped or failed) when it stops there."""
    record = base_record(case, impl, ctx)
    too_big = fits(case, device)
    if too_big:
        return dataclasses.replace(record, status="skipped", reason=too_big)
    fn = gate.IMPLS[gate_name(case.op)][impl]
    small = kernel_case(case, shrink=True)
    verdict = gate.check(fn, small, device)
    record = dataclasses.replace(record, max_abs_err=verdict.max_abs_err, rel_err=verdict.rel_err)
    if not verdict.ok:
        return dataclasses.replace(record, status="failed", reason=f"gate: {verdict.reason}")
    full = kernel_case(case)

    def make_args(i: int) -> tuple:
        # Fresh random inputs per set (never zeros) and an output buffer of their own.
        return (*full.make_inputs(device, seed=1000 + i), full.empty_output(device))

    if case.op == "decode_attention" and impl == "torch":
        # The reference reads lengths given as a tensor back to the host (a sync that a CUDA
        # graph cannot capture); the same lengths as ints keep it capturable, as ours is.
        lens = full.context_lens

        def call(*args):
            q, k, v, _, out = args
            return fn(q, k, v, lens, out=out)

    else:

        def call(*args):
            return full.run(fn, args[:-1], args[-1])

    return Prepared(record, call, make_args, reduced_gate=small != full)


@dataclass
class Timed:
    """A timed case: its filled record, the samples behind it, and the timer that drew them
    (to draw more)."""

    record: Record
    stats: TimingStats
    chosen: ChosenTimer


def _choose(prepared: Prepared) -> tuple[ChosenTimer, str]:
    """Graph replay when the case is predicted under the graph threshold, else events.

    The choice follows the prediction, not a first noisy estimate, so both implementations of
    a case are timed the same way.
    """
    if prepared.record.predicted_s < GRAPH_BELOW_S:
        try:
            return choose_timer(prepared.call, make_args=prepared.make_args, method="graph"), ""
        except RuntimeError as err:
            note = f"graph capture failed ({str(err).splitlines()[0]}), timed with events"
            torch.cuda.synchronize()
            return choose_timer(prepared.call, make_args=prepared.make_args, method="events"), note
    return choose_timer(prepared.call, make_args=prepared.make_args, method="events"), ""


def _replay(chosen: ChosenTimer) -> Callable[[], object]:
    """One untimed unit of the timed work: a graph replay, or one call (no L2 flush)."""
    timer = chosen.timer
    return timer.graph.replay if chosen.method == "graph" else timer.fn


def time_case(prepared: Prepared, ctx: RunContext) -> Timed:
    """Warm the GPU (with the GPM window when asked), then sample until the stop rule says so."""
    chosen, note = _choose(prepared)
    gpm = None
    if ctx.gpm:
        gpm = ctx.telemetry.gpm_window(_replay(chosen), lead_s=GPM_LEAD_S)
    # Always warm up with the timer itself: the GPM window runs the kernel back to back with no
    # flush between calls, a heavier load than timed sampling, and a power-capped GPU leaves it
    # at a lower clock than timed sampling settles at (compute-bound GEMMs read up to ~20% slow
    # straight after the window).
    warm_up(chosen.timer, WARM_UP_S)
    with ctx.telemetry.window() as window:
        times, stop = sample_until_stable(chosen.timer, ctx.rule)
    torch.cuda.synchronize()
    stats = TimingStats.from_times(times, chosen.method, stop, chosen.calls_per_sample)
    record = fill_timing(prepared.record, stats, ctx.measured_roof)
    record = fill_telemetry(record, window.summary(), gpm)
    notes = [record.reason, note, "gate on a reduced shape" if prepared.reduced_gate else ""]
    record = dataclasses.replace(record, reason="; ".join(n for n in notes if n))
    if not math.isfinite(record.measured_s) or record.measured_s <= 0:
        record = dataclasses.replace(record, status="failed", reason="timer returned no time")
    return Timed(record, stats, chosen)


def measure(case: Case, impl: str, ctx: RunContext, device: torch.device) -> Record:
    """Gate, time and observe `impl` on `case`; never raises for a case-level problem."""
    try:
        prepared = prepare(case, impl, ctx, device)
        if isinstance(prepared, Record):
            return prepared
        return time_case(prepared, ctx).record
    except torch.cuda.OutOfMemoryError as err:
        return dataclasses.replace(
            base_record(case, impl, ctx),
            status="skipped",
            reason=f"out of memory: {str(err).splitlines()[0]}",
        )
    except Exception as err:  # one broken case is recorded; the sweep goes on
        first_line = (str(err).splitlines() or [""])[0][:200]
        return dataclasses.replace(
            base_record(case, impl, ctx),
            status="failed",
            reason=f"raised {type(err).__name__} while timing: {first_line}",
        )
    finally:
        torch.cuda.empty_cache()
