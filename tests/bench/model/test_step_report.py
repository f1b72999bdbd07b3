"""bench/model/step_report and the step plot: the kernel-by-kernel tier on the committed model
runs (with the committed H200 calibration), through `roofbench report --retier`, and in the
summary and plots of a run whose run.json carries a calibration."""

import json
import shutil
import statistics
from pathlib import Path

import pytest

from roofbench.bench.cli import main
from roofbench.bench.core.records import read_records
from roofbench.bench.model.plots import STEP_PLOT, step_figure, step_shares
from roofbench.bench.model.report import summarize, write_report
from roofbench.bench.model.step_report import record_step_plans, retier_lines, step_points
from roofbench.kernels.llama_plan import DECLARATIONS, superseded
from roofbench.theory.step import BREAKDOWN
from roofbench.theory.tiers import Calibration

RESULTS = Path(__file__).resolve().parents[3] / "results"
CALIBRATION = RESULTS / "h200" / "calibration.json"
DOC = json.loads(CALIBRATION.read_text())
CAL = Calibration.from_dict(DOC["calibration"])
MODEL_RUNS = sorted(p.parent for p in RESULTS.glob("h200/model-*/model_records.csv"))


def _load(folder):
    meta = json.loads((folder / "run.json").read_text())
    return read_records(folder / "model_records.csv"), meta


@pytest.mark.parametrize("folder", MODEL_RUNS, ids=[p.name for p in MODEL_RUNS])
def test_every_measured_point_of_a_committed_run_is_predicted_kernel_by_kernel(folder):
    records, meta = _load(folder)
    points = step_points(records, meta, CAL)
    measured = [p for p in points if p.measured_s and p.record.op in ("ttft", "tbt")]
    # Every backend's step is predicted but torch.compile's, whose kernels inductor generates,
    # and those whose decoder launched other kernels then than this code declares.
    old = {b for b in DECLARATIONS if superseded(b, meta.get("step_declarations"))}
    undeclared = [p for p in measured if not p.declared]
    assert {p.record.impl for p in undeclared} <= {"compile"} | old
    assert all(p.prediction is None for p in undeclared)
    assert all("not declared" in p.reason for p in undeclared if p.record.impl == "compile")
    assert all("other kernels" in p.reason for p in undeclared if p.record.impl in old)
    declared = [p for p in measured if p.declared]
    assert declared or {p.record.impl for p in measured} <= {"compile"} | old
    assert all(p.prediction is not None for p in declared)
    for p in declared:
        pred = p.prediction
        assert sum(pred.breakdown.values()) == pytest.approx(pred.time_s, rel=1e-9)
        assert p.error == pytest.approx(p.measured_s / pred.time_s - 1)
        # Hundreds of kernels: at least one launch floor each, more than the phase roofline's
        # one (per layer: 13 and more unfused; fused, its gains folded or not, at one token row
        # 6 and more: four projections with their epilogues, rotary with the KV append,
        # attention).
        per_layer = 5 if p.record.impl.startswith("fused") else 10
        assert pred.launches > per_layer * meta["layers"]
        assert pred.breakdown["launch"] >= pred.launches * CAL.launch_s * (1 - 1e-9)


@pytest.mark.parametrize("folder", MODEL_RUNS, ids=[p.name for p in MODEL_RUNS])
def test_the_retier_section_quotes_both_tiers_errors(folder):
    records, meta = _load(folder)
    groups = {}
    for p in step_points(records, meta, CAL):
        if p.error is not None:
            key = (p.record.case.split("/")[0], p.record.impl, p.record.op)
            groups.setdefault(key, []).append(p)
    lines = retier_lines(folder, DOC)
    # A row for every backend whose step is declared and was measured.
    points = step_points(records, meta, CAL)
    declared = {p.record.impl for p in points if p.declared and p.measured_s}
    assert lines[0] == "## Kernel by kernel" and {impl for _, impl, _ in groups} == declared
    for (model, impl, op), group in groups.items():
        kernel = statistics.median(abs(p.error) for p in group)
        roof = statistics.median(abs(p.roofline_error) for p in group)
        row = f"| {model} | {impl} | {op} | {len(group)} | {kernel:.1%} |"
        found = [line for line in lines if line.startswith(row)]
        assert len(found) == 1 and f"| {roof:.1%} |" in found[0], row


def test_report_retier_prints_a_model_runs_kernel_tier_and_writes_nothing(tmp_path, capsys):
    folder = tmp_path / MODEL_RUNS[0].name
    shutil.copytree(MODEL_RUNS[0], folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    code = main(["report", str(folder), "--retier", "--calibration", str(CALIBRATION)])
    out = capsys.readouterr().out
    assert code == 0 and "## Kernel by kernel" in out and "TBT (decode step)" in out
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_report_retier_of_a_model_run_without_a_calibration_is_one_line(tmp_path, capsys):
    folder = tmp_path / "run"
    shutil.copytree(MODEL_RUNS[0], folder)
    assert main(["report", str(folder), "--retier"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "calibration" in err[0]


def test_a_run_carrying_a_calibration_gets_the_section_and_the_step_plot(tmp_path):
    folder = tmp_path / MODEL_RUNS[0].name
    shutil.copytree(MODEL_RUNS[0], folder)
    meta = json.loads((folder / "run.json").read_text())
    plain = summarize(*_load(folder))
    assert "## Kernel by kernel" not in plain and not (folder / STEP_PLOT).exists()
    (folder / "run.json").write_text(json.dumps({**meta, "calibration": DOC}))
    write_report(folder)
    summary = (folder / "model_summary.md").read_text()
    assert (
        "## Kernel by kernel" in summary
        and "### TTFT (prefill): the predicted breakdown" in summary
    )
    # The section sits between the phase roofline's error and the TTFT table; with the decode
    # steps' byte floor (read roof of the calibration) after the TBT table, all else is kept.
    assert summary.index("## Prediction error") < summary.index("## Kernel by kernel")
    assert summary.index("## Kernel by kernel") < summary.index("## TTFT (prefill)")
    floor = summary.index("## Decode step against its byte floor")
    assert summary.index("## TBT (decode step)") < floor
    after = summary.index("\n## ", floor)
    summary = summary[:floor] + summary[after + 1 :]
    assert summary.replace("\n".join(retier_lines(folder, DOC)) + "\n", "") == plain
    assert (folder / STEP_PLOT).stat().st_size > 10_000


@pytest.mark.parametrize("folder", MODEL_RUNS, ids=[p.name for p in MODEL_RUNS])
def test_where_a_decode_step_goes_adds_up_to_the_measured_time(folder):
    records, meta = _load(folder)
    points = step_points(records, meta, CAL)
    model = next(p.record.case.split("/")[0] for p in points if p.record.op == "tbt")
    recorded = meta.get("step_declarations")
    declared = [b for b in meta["backends"] if b != "compile" and not superseded(b, recorded)]
    for impl in meta["backends"]:
        bars = step_shares(points, model, impl)
        measured = [
            p
            for p in points
            if p.record.op == "tbt" and p.record.impl == impl and p.measured_s
            if p.record.case.startswith(model + "/") and impl in declared
        ]
        assert len(bars) == len(measured) and (bars or impl not in declared)
        for _, shares in bars:
            assert sum(shares[t] for t in BREAKDOWN) + shares["unexplained"] == pytest.approx(1)
            assert all(shares[t] >= 0 for t in BREAKDOWN)
    fig = step_figure(points, model)
    # No empty panel for torch.compile's backend (one saying so where nothing is declared).
    assert len(fig.axes) == max(1, len(declared))


def test_a_skipped_points_plans_are_recorded_and_a_measured_points_replace_them():
    """A point the time budget skipped gets its plans in run.json too, so that a report on another
    machine predicts it as the run did (not with the plans declared there); a point measured
    later for the same op calls replaces them (the tuner may have run since), and a measured
    point's plans are never replaced by a skipped point's."""
    import dataclasses

    records, meta = _load(RESULTS / "h200" / "model-llama3-8b-20261202T062324Z")
    skipped = next(r for r in records if r.op == "tbt" and r.status == "skipped")
    measured = dataclasses.replace(skipped, status="ok", measured_s=1e-3)
    fresh = {k: v for k, v in meta.items() if k != "step_plans"}
    assert record_step_plans(fresh, skipped)
    plans = dict(fresh["step_plans"])
    assert plans and not record_step_plans(fresh, skipped)  # kept, not redone
    call = next(iter(plans))
    fresh["step_plans"][call] = "untuned"  # as a skipped point records before the tuner ran
    assert record_step_plans(fresh, measured) and fresh["step_plans"] == plans
    fresh["step_plans"][call] = "tuned"
    assert not record_step_plans(fresh, skipped) and fresh["step_plans"][call] == "tuned"
    assert not record_step_plans(fresh, measured)  # a measured point's plan is kept
