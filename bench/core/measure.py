"""One measurement: a case and a registered implementation in, one `Record` out.

The closed loop of the suite, in order: theory (FLOPs, bytes, prediction on both roofs) ->
can the implementation run it (`Impl.refuses`) -> fit check -> correctness gate -> prepare ->
GPU timing under a telemetry window -> GPM window -> the declared launch plan -> record.
A case the implementation refuses, that does not fit, or that runs out of memory, is `skipped`
with the reason; one whose gate fails is `failed` and gets no time.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from roofbench.bench.core import memory
from roofbench.bench.core.attribution import fill_tiers
from roofbench.bench.core.observe import observe as observed_kernels
from roofbench.bench.core.observe import observed_plan
from roofbench.bench.core.records import Record
from roofbench.bench.core.telemetry import Telemetry
from roofbench.bench.core.timing import (
    GRAPH_BELOW_S,
    ChosenTimer,
    StopRule,
    TimingStats,
    choose_timer,
    sample_until_stable,
    warm_up,
)
from roofbench.kernels import check as gate
from roofbench.kernels.catalog import get_impl
from roofbench.kernels.registry import Impl
from roofbench.kernels.spec import OpCase
from roofbench.theory.ops import OpCost
from roofbench.theory.roofline import Roof
from roofbench.theory.tiers import Calibration

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
    calibration: Calibration | None = None  # the tiered model's constants, when calibrated
    observe: bool = True  # list a vendor library's kernels with torch.profiler (never timed)


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


def base_record(case: OpCase, impl: str, ctx: RunContext) -> Record:
    """The theory half of a case's record: shape, cost, predictions on both roofs."""
    return cost_record(case.id, case.op, impl, case.dtype, case.cost(), ctx, **case.shape_fields())


_IDENTITY = ("gpu", "driver", "torch", "triton", "commit", "timestamp", "sweep", "roofbench")


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


def fits(case: OpCase, device: torch.device) -> str | None:
    """None when the case should fit in the device's free memory, else why not (host memory is
    not checked: the CPU runs only the small cases of tests)."""
    if torch.device(device).type != "cuda":
        return None
    free_bytes, _ = torch.cuda.mem_get_info(device)
    need = case.cost().bytes_
    if not memory.fits(free_bytes, need):
        return memory.fit_reason("inputs and outputs", free_bytes, need)
    return None


@dataclass
class Prepared:
    """A gated case ready to time: `call(*make_args(i))` runs the implementation once."""

    record: Record
    call: Callable[..., object]
    make_args: Callable[[int], tuple]
    reduced_gate: bool
    impl: Impl
    case: OpCase


def resolve(case: OpCase, impl: Impl | str) -> Impl:
    return get_impl(case.op, impl) if isinstance(impl, str) else impl


def prepare(
    case: OpCase, impl: Impl | str, ctx: RunContext, device: torch.device
) -> Prepared | Record:
    """Theory, refusal, fit check, correctness gate and the implementation's own set-up; a
    Record (skipped or failed) when it stops there."""
    impl = resolve(case, impl)
    record = base_record(case, impl.name, ctx)
    refused = impl.refuses(case)
    if refused:
        return dataclasses.replace(record, status="skipped", reason=refused)
    too_big = fits(case, device)
    if too_big:
        return dataclasses.replace(record, status="skipped", reason=too_big)
    small = case.gate_case()
    verdict = gate.check(impl, small, device)
    record = dataclasses.replace(record, max_abs_err=verdict.max_abs_err, rel_err=verdict.rel_err)
    if verdict.unsupported:
        return dataclasses.replace(record, status="skipped", reason=verdict.reason)
    if not verdict.ok:
        return dataclasses.replace(record, status="failed", reason=f"gate: {verdict.reason}")
    fn = impl.bind(case)  # the implementation's set-up, outside the timed region

    def make_args(i: int) -> tuple:
        # Fresh random inputs per set (never zeros) and an output buffer of their own.
        return (*case.make_inputs(device, seed=1000 + i), case.empty_output(device))

    def call(*args):
        return case.call(fn, args[:-1], args[-1])

    return Prepared(record, call, make_args, small != case, impl, case)


def declared_plan(impl: Impl, case: OpCase):
    """(the plan the implementation declares for the case, or None; the error it raised)."""
    try:
        return impl.launch_plan(case), ""
    except Exception as err:  # noqa: BLE001 - a broken plan must not lose the measurement
        return None, f"plan raised {type(err).__name__}: {err}"


def case_plan(prepared: Prepared, observe: bool):
    """(the plan the tiers charge, the error its declaration raised): the implementation's own
    (after timing, so a tuned configuration is the one it picked), or where a library's kernels
    stand behind it and `observe` is on, the kernels torch.profiler lists for one call."""
    plan, error = declared_plan(prepared.impl, prepared.case)
    if error or not observe or (plan is not None and not plan.opaque):
        return plan, error
    args = prepared.make_args(0)
    try:
        kernels = observed_kernels(lambda: prepared.call(*args))
    except Exception as err:  # noqa: BLE001 - a profiler that fails leaves the declared plan
        return plan, f"observing the kernels raised {type(err).__name__}: {err}"
    return observed_plan(kernels, prepared.case.work(), plan) or plan, ""


def fill_plan(record: Record, plan, error: str = "") -> Record:
    """The record's launch-plan columns."""
    if error:
        return dataclasses.replace(record, plan=error)
    if plan is None:
        return record
    return dataclasses.replace(
        record,
        launches=plan.launches,
        partial_bytes=plan.partial_bytes,
        plan=plan.describe(),
        plan_source=plan.source,
    )


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
    plan, error = case_plan(prepared, ctx.observe)
    record = fill_plan(record, plan, error)
    if ctx.calibration is not None and math.isfinite(record.measured_s or math.nan):
        work = prepared.case.work()
        record = fill_tiers(record, work, plan, ctx.calibration, ctx.datasheet_roof)
    notes = [record.reason, note, "gate on a reduced shape" if prepared.reduced_gate else ""]
    record = dataclasses.replace(record, reason="; ".join(n for n in notes if n))
    if not math.isfinite(record.measured_s) or record.measured_s <= 0:
        record = dataclasses.replace(record, status="failed", reason="timer returned no time")
    return Timed(record, stats, chosen)


def measure(case: OpCase, impl: Impl | str, ctx: RunContext, device: torch.device) -> Record:
    """Gate, time and observe `impl` on `case`; never raises for a case-level problem."""
    impl = resolve(case, impl)
    try:
        prepared = prepare(case, impl, ctx, device)
        if isinstance(prepared, Record):
            return prepared
        return time_case(prepared, ctx).record
    except torch.cuda.OutOfMemoryError as err:
        return dataclasses.replace(
            base_record(case, impl.name, ctx),
            status="skipped",
            reason=f"out of memory: {str(err).splitlines()[0]}",
        )
    except Exception as err:  # one broken case is recorded; the sweep goes on
        first_line = (str(err).splitlines() or [""])[0][:200]
        return dataclasses.replace(
            base_record(case, impl.name, ctx),
            status="failed",
            reason=f"raised {type(err).__name__} while timing: {first_line}",
        )
    finally:
        torch.cuda.empty_cache()
