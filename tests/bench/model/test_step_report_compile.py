"""bench/model/step_report on a backend whose step is not declared (torch.compile's): made-up
records of the "compile" backend beside a committed run's get the measured time and the phase
roofline, are said to be not declared, and never get an invented kernel-by-kernel figure."""

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from roofbench.bench.core.records import RecordWriter, read_records
from roofbench.bench.model.report import write_report
from roofbench.bench.model.step_report import step_points, step_section
from roofbench.kernels.llama_plan import NotDeclared, step_kernels
from roofbench.theory.llm import MODELS
from roofbench.theory.tiers import Calibration

RESULTS = Path(__file__).resolve().parents[3] / "results"
DOC = json.loads((RESULTS / "h200" / "calibration.json").read_text())
CAL = Calibration.from_dict(DOC["calibration"])
RUN = sorted(p.parent for p in RESULTS.glob("h200/model-*/model_records.csv"))[0]


def with_compile(records, factor=0.8):
    """The torch backend's measured TTFT/TBT rows again as "compile", `factor` x the time (the
    phase roofline's error recomputed)."""
    made = [
        dataclasses.replace(
            r,
            impl="compile",
            measured_s=r.measured_s * factor,
            error=r.measured_s * factor / r.predicted_s - 1,
        )
        for r in records
        if r.impl == "torch" and r.op in ("ttft", "tbt") and r.measured_s
    ]
    return [*records, *made], made


def test_the_compile_backends_step_is_not_declared():
    with pytest.raises(NotDeclared, match="not declared"):
        step_kernels(next(iter(MODELS.values())), "compile", "decode")
    assert isinstance(NotDeclared("x"), ValueError)  # callers catching ValueError still do


def test_undeclared_points_show_the_measured_time_and_the_phase_roofline():
    meta = json.loads((RUN / "run.json").read_text())
    records, made = with_compile(read_records(RUN / "model_records.csv"))
    assert made
    points = step_points(records, meta, CAL)
    compiled = [p for p in points if p.record.impl == "compile"]
    assert len(compiled) == len(made)
    assert all(p.prediction is None and not p.declared and p.error is None for p in compiled)
    assert all(
        p.prediction is not None for p in points if p.record.impl == "torch" and p.measured_s
    )
    lines = step_section(records, meta, CAL)
    start = lines.index("### Not declared: measured against the phase roofline only")
    rows = [line for line in lines[start:] if line.startswith("| ") and "| compile |" in line]
    assert len(rows) == len(made) and all(row.endswith("| not declared |") for row in rows)
    r = made[0]
    ms = f"{r.measured_s * 1e3:.3g}"
    roof = f"{r.predicted_s * 1e3:.3g}"
    error = f"{r.measured_s / r.predicted_s - 1:+.1%}"
    mine = [row for row in rows if f"| {r.op} | {r.batch} | {r.seq} |" in row]
    assert len(mine) == 1 and f"| {ms} | {roof} | {error} |" in mine[0]
    # The kernel-tier table names no compile row, and "Not predicted" does not repeat it.
    table = [line for line in lines[:start] if "| compile |" in line]
    assert not table and not any(line.startswith("Not predicted") for line in lines)


def test_a_run_with_the_compile_backend_writes_its_report(tmp_path):
    folder = tmp_path / RUN.name
    shutil.copytree(RUN, folder)
    meta = json.loads((folder / "run.json").read_text())
    records, _ = with_compile(read_records(folder / "model_records.csv"))
    with RecordWriter(folder / "model_records.csv.new") as writer:
        for record in records:
            writer.write(record)
    (folder / "model_records.csv.new").replace(folder / "model_records.csv")
    backends = [*meta["backends"], "compile"]
    (folder / "run.json").write_text(json.dumps({**meta, "backends": backends, "calibration": DOC}))
    write_report(folder)
    summary = (folder / "model_summary.md").read_text()
    assert "### Not declared: measured against the phase roofline only" in summary
    assert "the compile backend's step is not declared" in summary
