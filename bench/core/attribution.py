"""A measured time held against the tiered model (`theory.tiers`): the record's tier columns.

The record keeps the measured-roof roofline's error as `error_roofline` (what `error` meant
before the tiers); `predicted_s`, `error` and `bound` then follow the top tier, and
`roof_fraction` is the T1 roofline time (read and write roofs, burst peak, no launch) over the
measured time, so a value above 1.02 is a roof violation: a kernel faster than a roof it cannot
beat means the roof was measured too low.
"""

from __future__ import annotations

import dataclasses

from roofbench.bench.core.observe import with_named_mma
from roofbench.bench.core.records import Record
from roofbench.bench.core.timing import FLUSH_L2S, HOLD_S
from roofbench.theory import tiers
from roofbench.theory.plan import LaunchPlan
from roofbench.theory.roofline import Roof

# A measured time more than this far under the T1 roof's time is a violation of the roof.
VIOLATION = 0.02


def idle_gap_s(cal: tiers.Calibration) -> float:
    """The events timer's idle time (for the tensor cores) between two timed calls: the hold
    spin and the flush's writes of FLUSH_L2S x L2 at the write roof."""
    return HOLD_S + FLUSH_L2S * cal.l2_bytes / cal.write_bytes_per_s


def fill_tiers(
    record: Record,
    work: tiers.Work,
    plan: LaunchPlan | None,
    cal: tiers.Calibration,
    datasheet: Roof,
) -> Record:
    """The record with every tier's prediction and the top tier's attribution filled in."""
    method = "events" if record.method.startswith("events") else "graph"
    pred = tiers.predict(work, cal, datasheet, method, plan, idle_gap_s(cal))
    changes = {f"predicted_t{i}_s": pred.tiers[t] for i, t in enumerate(tiers.TIERS)}
    changes |= {f"time_{term}_s": pred.terms[term] for term in tiers.TERMS}
    changes |= {"predicted_s": pred.time_s, "bound": pred.bound}
    if record.error_roofline is None:  # the first tiering: `error` is still the roofline's
        changes["error_roofline"] = record.error
    measured = record.measured_s
    if measured:
        changes |= {
            "error": measured / pred.time_s - 1,
            "residual_s": measured - pred.time_s,
            "roof_fraction": pred.roof_s / measured,
            "roof_violation": measured < (1 - VIOLATION) * pred.roof_s,
        }
    return dataclasses.replace(record, **changes)


def shape_of(record: Record) -> dict:
    """The keyword arguments of `make_case` that rebuild the case a kernel record measured."""
    from roofbench.kernels.catalog import op_spec

    names = set(op_spec(record.op).field_names())
    shape = {k: getattr(record, k) for k in names if getattr(record, k, None) is not None}
    if "causal" in names:
        shape["causal"] = "_causal" in record.case
    shape.pop("source", None)
    return shape


def case_of(record: Record):
    """The case a kernel record measured, rebuilt from its op and shape columns."""
    from roofbench.kernels.catalog import make_case

    case = make_case(record.op, **shape_of(record))
    if case.id != record.case:
        raise ValueError(f"{record.case}: rebuilt as {case.id}")
    return case


def retier(record: Record, cal: tiers.Calibration, datasheet: Roof) -> Record:
    """The record's tiers recomputed on another calibration (what was measured is untouched):
    the case rebuilt from its columns, the plan read back from its `plan` text (or, for an
    implementation whose plan is not tuned at run time, declared again now). An observed plan's
    kernels run the matrix instructions their names give, where its text does not say."""
    from roofbench.kernels.catalog import get_impl

    case = case_of(record)
    plan = LaunchPlan.parse(record.plan)
    if plan is not None and record.plan_source == "observed":
        plan = with_named_mma(plan)
    if plan is None:
        try:
            plan = get_impl(record.op, record.impl).launch_plan(case)
        except KeyError:  # a plugin's implementation not loaded here
            plan = None
    return fill_tiers(record, case.work(), plan, cal, datasheet)
