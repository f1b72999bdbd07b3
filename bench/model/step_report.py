"""The kernel-by-kernel tier of a model run: each TTFT, TBT and naive-step point predicted as
the sum of the kernels its decoder launches (`kernels.llama_plan` declares them, `theory.step`
sums the tiered model over them), next to the measured time and the phase roofline.

Built from a run's records, run.json and a calibration (`theory.tiers.Calibration`); the plans
of the ops' calls are the ones run.json's `step_plans` recorded as the run measured (a tuned
choice is the process's), or for a run without them, as declared now. The summary holds this
section when run.json carries a calibration; `roofbench report DIR --retier
--calibration FILE` prints it for any model run (the committed ones too), writing nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from roofbench.bench.core.identity import read_meta
from roofbench.bench.core.records import Record, read_records
from roofbench.bench.core.text import NONE, fmt, markdown_table, median, quantile
from roofbench.bench.model.index import configs_of, measured_s, model_of
from roofbench.bench.model.points import DTYPE, RECORDS_CSV, slug
from roofbench.kernels.llama import parse_backend
from roofbench.kernels.llama_plan import NotDeclared, step_kernels, step_plans, superseded
from roofbench.theory.roofline import Roof
from roofbench.theory.step import BREAKDOWN, StepPrediction, predict_step
from roofbench.theory.tiers import Calibration

# run.json's mark of a run whose `step_plans` hold skipped points' plans too (runs before it
# recorded measured points' only: their skipped points are predicted with the plans declared
# where the report runs).
ALL_POINTS_KEY = "step_plans_all_points"
UNMEASURED_KEY = "step_plans_unmeasured"  # the op calls of step_plans no measured point ran
# A record's op -> the decoder's phase (`kernels.llama_plan.PHASES`).
PHASE_OF_OP = {"ttft": "prefill", "tbt": "decode", "naive_step": "naive"}
TITLES = {"ttft": "TTFT (prefill)", "tbt": "TBT (decode step)", "naive_step": "naive step"}
LABELS = {
    "weights": "weights",
    "kv_cache": "KV cache",
    "attention": "attention",
    "lm_head": "LM head",
    "elementwise": "element-wise",
    "launch": "launches",
    "fixed": "fixed costs",
}


@dataclass(frozen=True)
class StepPoint:
    """One measured point with its kernel-by-kernel prediction (None, with the reason, where
    the decoder's kernels cannot be declared: an implementation this process has not loaded, or
    a backend whose kernels are generated, `declared` False: torch.compile's)."""

    record: Record
    prediction: StepPrediction | None
    reason: str = ""
    declared: bool = True

    @property
    def measured_s(self) -> float | None:
        return measured_s(self.record)

    @property
    def error(self) -> float | None:
        """The kernel-by-kernel tier's measured / predicted - 1."""
        if self.prediction is None or not self.measured_s:
            return None
        return self.measured_s / self.prediction.time_s - 1

    @property
    def roofline_error(self) -> float | None:
        """The phase roofline's error, as recorded."""
        return self.record.error if self.measured_s else None


def _configs_by_model(meta: dict) -> dict:
    """The run's model configs by the model part of their records' case ids."""
    return {slug(c.name): c for c in configs_of(meta).values()}


def step_points(records: Sequence[Record], meta: dict, cal: Calibration) -> list[StepPoint]:
    """Every TTFT, TBT and naive-step record of the run with its step prediction."""
    configs = _configs_by_model(meta)
    datasheet = Roof(**meta["datasheet_roof"])
    done: dict[tuple, tuple] = {}
    points = []
    for r in records:
        config = configs.get(model_of(r))
        if r.op not in PHASE_OF_OP or config is None:
            continue
        key = (model_of(r), r.impl, r.op, r.batch, r.seq)
        backend = parse_backend(r.impl)
        if key not in done and superseded(backend, meta.get("step_declarations")):
            done[key] = (None, superseded(backend, meta.get("step_declarations")), False)
        if key not in done:
            try:
                kernels = step_kernels(
                    config,
                    backend,
                    PHASE_OF_OP[r.op],
                    r.batch,
                    r.seq,
                    DTYPE,
                    plans=meta.get("step_plans"),
                )
                done[key] = (predict_step(kernels, cal, datasheet), "")
            except NotDeclared as err:
                done[key] = (None, str(err), False)
            except (ValueError, KeyError) as err:
                done[key] = (None, str(err.args[0]) if err.args else str(err))
        points.append(StepPoint(r, *done[key]))
    return points


def record_step_plans(meta: dict, record: Record) -> bool:
    """Add the plans of `record`'s step, as this process declares them now (right after the
    point ran: the tuned choices it ran with; for a point skipped, what it would have run), to
    run.json's `step_plans`. A plan recorded before for the same op call is kept, but for a
    measured point's over a skipped point's: the tuner may have run for that call since.
    Nothing for a point without a declared step. Returns whether a plan was added or changed.

    A skipped point's plans are recorded too (`ALL_POINTS_KEY`), so that a report on another
    machine predicts it as the run did: untuned, a GEMM declares its first candidate tile on
    a GPU with descriptors, and one autotuned kernel elsewhere."""
    config = _configs_by_model(meta).get(model_of(record))
    if record.op not in PHASE_OF_OP or config is None:
        return False
    phase = PHASE_OF_OP[record.op]
    try:
        kernels = step_kernels(
            config, parse_backend(record.impl), phase, record.batch, record.seq, DTYPE
        )
    except ValueError:  # NotDeclared (compile), or an implementation this process lacks
        return False
    recorded = meta.setdefault("step_plans", {})
    unmeasured = meta.setdefault(UNMEASURED_KEY, [])  # calls only skipped points recorded
    measured = bool(measured_s(record))
    changed = False
    for call, plan in step_plans(kernels).items():
        if call in recorded and not (measured and call in unmeasured):
            continue
        changed |= recorded.get(call) != plan
        recorded[call] = plan
        if not measured:
            unmeasured.append(call)
        elif call in unmeasured:
            unmeasured.remove(call)
    return changed


def _pct(value: float | None) -> str:
    return NONE if value is None else f"{value:.1%}"


def _signed(value: float | None) -> str:
    return NONE if value is None else f"{value:+.1%}"


def _ms(value: float | None) -> str:
    return fmt(value, ".3g", 1e3)


def error_rows(points: Sequence[StepPoint]) -> list[list[str]]:
    """Per model, backend and phase: points, median and p90 |error| of the kernel-by-kernel
    tier, then of the phase roofline, over the points measured."""
    groups: dict[tuple[str, str, str], list[StepPoint]] = {}
    for p in points:
        if p.error is not None:
            groups.setdefault((model_of(p.record), p.record.impl, p.record.op), []).append(p)
    rows = []
    for (model, impl, op), group in sorted(groups.items()):
        kernel = [abs(p.error) for p in group]
        roof = [abs(p.roofline_error) for p in group if p.roofline_error is not None]
        rows.append(
            [model, impl, op, str(len(group)), _pct(median(kernel)), _pct(quantile(kernel, 0.9))]
            + [_pct(median(roof)), _pct(quantile(roof, 0.9))]
        )
    return rows


def _breakdown_table(points: Sequence[StepPoint], op: str) -> list[str]:
    chosen = [p for p in points if p.record.op == op and p.prediction is not None]
    if not chosen:
        return []
    length = "context" if op == "tbt" else "tokens"
    headers = ["model", "batch", length, "backend", "kernels"]
    headers += [f"{LABELS[t]} ms" for t in BREAKDOWN]
    headers += ["predicted ms", "measured ms", "error", "phase roofline error"]
    rows = []
    key = lambda p: (model_of(p.record), p.record.batch, p.record.seq, p.record.impl)  # noqa: E731
    for p in sorted(chosen, key=key):
        pred = p.prediction
        r = p.record
        row = [model_of(r), str(r.batch), str(r.seq), r.impl, str(pred.launches)]
        row += [_ms(pred.breakdown[t]) for t in BREAKDOWN]
        row += [_ms(pred.time_s), _ms(p.measured_s), _signed(p.error), _signed(p.roofline_error)]
        rows.append(row)
    return [f"### {TITLES[op]}: the predicted breakdown", "", *markdown_table(headers, rows), ""]


def _undeclared_table(points: Sequence[StepPoint]) -> list[str]:
    """The measured points of backends whose step is not declared: the measured time beside the
    phase roofline's prediction and error, and no kernel-by-kernel figure."""
    chosen = [p for p in points if not p.declared and p.measured_s]
    if not chosen:
        return []
    headers = ["model", "backend", "phase", "batch", "tokens or context", "measured ms"]
    headers += ["phase roofline ms", "phase roofline error", "kernels"]
    key = lambda p: (model_of(p.record), p.record.impl, p.record.op, p.record.batch, p.record.seq)  # noqa: E731
    rows = [
        [model_of(p.record), p.record.impl, p.record.op, str(p.record.batch), str(p.record.seq)]
        + [_ms(p.measured_s), _ms(p.record.predicted_s), _signed(p.roofline_error)]
        + ["not declared"]
        for p in sorted(chosen, key=key)
    ]
    reasons = "; ".join(sorted({p.reason for p in chosen}))
    return [
        "### Not declared: measured against the phase roofline only",
        "",
        f"No kernel-by-kernel prediction: {reasons}.",
        "",
        *markdown_table(headers, rows),
        "",
    ]


def step_section(records: Sequence[Record], meta: dict, cal: Calibration) -> list[str]:
    """The summary's "Kernel by kernel" section (its lines, ending in a blank line)."""
    points = step_points(records, meta, cal)
    lines = [
        "## Kernel by kernel",
        "",
        "Each point predicted as the sum of the kernels its decoder launches "
        "(`kernels.llama_plan`: per layer the norms, rotary, projections, attention, SiLU x up, "
        "residual adds and KV append; the embedding, final norm and LM head), each kernel on "
        "the tiered model graph-replayed with its declared plan (`theory.step`), on the "
        f"calibration of {cal.source or 'an unnamed source'}. Beside it, the phase roofline "
        "(one launch per phase, on the measured roof: the error of the other sections). Error "
        "= measured / predicted - 1; |error| over the points measured.",
        "",
    ]
    rows = error_rows(points)
    if rows:
        headers = ["model", "backend", "phase", "points", "kernels median", "kernels p90"]
        headers += ["phase roofline median", "phase roofline p90"]
        lines += [*markdown_table(headers, rows), ""]
    else:
        lines += ["No measured point has a kernel-by-kernel prediction.", ""]
    for op in PHASE_OF_OP:
        lines += _breakdown_table(points, op)
    lines += _undeclared_table(points)
    missing = sorted({p.reason for p in points if p.prediction is None and p.declared})
    if missing:
        lines += ["Not predicted: " + "; ".join(missing) + ".", ""]
    return lines


def run_calibration(meta: dict) -> Calibration | None:
    """The calibration a model run's run.json carries, if any (and this version can read)."""
    doc = meta.get("calibration")
    if not doc or not doc.get("calibration"):
        return None
    try:
        return Calibration.from_dict(doc["calibration"])
    except ValueError:
        return None


def retier_lines(folder: str | Path, doc: dict) -> list[str]:
    """`roofbench report DIR --retier` of a model run: the kernel-by-kernel section computed on
    calibration document `doc` (run.json's or a file's), from the folder's records."""
    folder = Path(folder)
    meta = read_meta(folder)
    if "configs" not in meta:
        raise ValueError(f"{folder}/run.json is not a model run's description")
    records = read_records(folder / RECORDS_CSV)
    if not records:
        raise ValueError(f"{folder / RECORDS_CSV} holds no records: nothing to report")
    return step_section(records, meta, Calibration.from_dict(doc["calibration"]))
