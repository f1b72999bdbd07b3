"""Runs that fail safe (nothing lost, nothing mislabelled): unique folders, resume refusals, a
records file cut mid-line, report refusing an empty or unreadable folder, roofbench's own
commit, and SIGINT/SIGTERM keeping what was measured."""

import json
import os
import shutil
import signal
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest
from cli_runner import roofbench

from roofbench.bench.core import identity
from roofbench.bench.core.records import Record, RecordWriter, drop_partial_row, read_records
from roofbench.bench.sweep import run as sweep_run
from roofbench.theory.hardware import get_gpu

ROOT = Path(__file__).resolve().parents[3]
COMMITTED = ROOT / "results" / "h200" / "20261201T211032Z"  # a measured quick sweep


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_two_runs_in_one_second_get_two_folders(tmp_path):
    started = datetime(2026, 12, 1, 12, 0, 0, tzinfo=timezone.utc)
    gpu = get_gpu("h200")
    first = sweep_run.run_folder(tmp_path, gpu, started)
    second = sweep_run.run_folder(tmp_path, gpu, started)
    assert first != second and first.is_dir() and second.is_dir()
    assert second.name == first.name + "-2"


@pytest.fixture
def measured_run(tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(COMMITTED, folder)
    return folder


def test_resume_refuses_without_a_gpu_and_leaves_the_folder_as_it_was(measured_run):
    before = snapshot(measured_run)
    result = roofbench("run", "--resume", str(measured_run))
    assert result.returncode == 2, result.stderr
    assert "needs the GPU" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert snapshot(measured_run) == before


def test_resume_refuses_another_sweep_gpu_version_or_kind(measured_run):
    meta = json.loads((measured_run / "run.json").read_text())
    gpu = meta["gpu"]
    meta["roofbench"] = identity.version()
    (measured_run / "run.json").write_text(json.dumps(meta))
    assert sweep_run.check_resume(measured_run, "quick", gpu)["gpu"] == gpu
    with pytest.raises(ValueError, match="sweep"):
        sweep_run.check_resume(measured_run, "full", gpu)
    with pytest.raises(ValueError, match="gpu"):
        sweep_run.check_resume(measured_run, "quick", "NVIDIA H100 80GB HBM3")
    meta["roofbench"] = "0.0.1"
    (measured_run / "run.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="roofbench"):
        sweep_run.check_resume(measured_run, "quick", gpu)
    (measured_run / "model_records.csv").write_text("")
    with pytest.raises(ValueError, match="model run"):
        sweep_run.check_resume(measured_run, "quick", gpu)


def test_a_row_cut_mid_line_is_dropped_and_the_complete_ones_kept(tmp_path):
    path = tmp_path / "records.csv"
    with RecordWriter(path) as writer:
        for i in range(3):
            writer.write(Record(case=f"c{i}", op="gemm", impl="triton", dtype="bf16"))
    whole = path.read_bytes()
    path.write_bytes(whole[:-20])  # the last row loses its end, newline included
    assert drop_partial_row(path) is not None
    assert [r.case for r in read_records(path)] == ["c0", "c1"]
    assert drop_partial_row(path) is None  # clean now: nothing more is dropped
    with RecordWriter(path) as writer:  # an appended row starts on a line of its own
        writer.write(Record(case="c3", op="gemm", impl="triton", dtype="bf16"))
    assert [r.case for r in read_records(path)] == ["c0", "c1", "c3"]


@pytest.mark.parametrize("content", [b"", b"case,op\n", b"\x00\xff garbage \xfe\n"])
def test_report_refuses_an_empty_or_garbage_records_file_and_writes_nothing(measured_run, content):
    (measured_run / "records.csv").write_bytes(content)
    before = snapshot(measured_run)
    result = roofbench("report", str(measured_run))
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert snapshot(measured_run) == before


def test_the_recorded_commit_is_roofbenchs_not_the_current_directorys(tmp_path, monkeypatch):
    monkeypatch.delenv("ROOFBENCH_COMMIT", raising=False)
    other = tmp_path / "someone-elses-repo"
    other.mkdir()
    subprocess.run(["git", "init", "-q", str(other)], check=True)
    (other / "pyproject.toml").write_text('[project]\nname = "something-else"\n')
    monkeypatch.chdir(other)
    recorded = identity.commit()
    assert recorded == "unknown" or identity.is_roofbench_checkout(identity.SOURCE_ROOT)
    monkeypatch.setattr(identity, "SOURCE_ROOT", other)  # as if installed inside that repo
    assert identity.commit() == "unknown"
    assert identity.versions()["roofbench"] == identity.version() != ""


def test_a_tree_that_differs_from_its_commit_is_recorded_dirty(tmp_path, monkeypatch):
    monkeypatch.delenv("ROOFBENCH_COMMIT", raising=False)
    repo = tmp_path / "roofbench-copy"
    (repo / "kernels").mkdir(parents=True)
    (repo / "pyproject.toml").write_text('[project]\nname = "roofbench"\n')
    (repo / "kernels" / "k.py").write_text("A = 1\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    monkeypatch.setattr(identity, "SOURCE_ROOT", repo.resolve())
    clean = identity.commit()
    assert len(clean) == 12 and "+" not in clean
    (repo / "kernels" / "k.py").write_text("A = 2\n")  # the code that runs is not the commit's
    assert identity.commit() == clean + "+dirty"
    (repo / "notes.txt").write_text("untracked, outside the sources\n")
    (repo / "kernels" / "k.py").write_text("A = 1\n")
    assert identity.commit() == clean


@pytest.mark.parametrize("swallowed", [False, True], ids=["raised", "swallowed by the case"])
def test_sigterm_keeps_the_rows_writes_the_summary_and_exits_143(swallowed, tmp_path, monkeypatch):
    """The measuring loop on the CPU with the CUDA pieces faked: a SIGTERM after the second
    measurement leaves both rows, run.json says interrupted, and the summary is written. Also
    when the case's own error handling swallows the signal's exception and returns a row (as a
    library turning it into an error of its own would make happen): that row is not written."""
    import torch

    from roofbench.bench.core import ceilings, measure
    from roofbench.bench.core.nvml_facts import DeviceInfo, TelemetrySummary
    from roofbench.bench.core.sampling import TimingStats
    from roofbench.bench.sweep.cases import sweep

    class FakeWindow:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def summary(self):
            return TelemetrySummary(missing="fake")

    class FakeTelemetry:
        def __init__(self, index=0):
            pass

        def info(self):
            return DeviceInfo(name="Fake GPU", missing="fake")

        def window(self):
            return FakeWindow()

        def close(self):
            pass

    calls = []

    def fake_measure(case, impl, ctx, device):
        calls.append(case.id)
        if len(calls) == 3:
            try:
                os.kill(os.getpid(), signal.SIGTERM)
            except BaseException:
                if not swallowed:
                    raise
                return measure.base_record(case, impl, ctx)  # a row the run must not write
        record = measure.base_record(case, impl, ctx)
        stats = TimingStats.from_times([2 * record.predicted_s] * 5, "graph")
        return measure.fill_timing(record, stats, ctx.measured_roof)

    fake = ceilings.Ceilings(copy_gbps=3000, read_gbps=3100, matmul_tflops=700, launch_s=5e-6)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr("roofbench.bench.core.telemetry.Telemetry", FakeTelemetry)
    monkeypatch.setattr(ceilings, "measure_ceilings", lambda **kwargs: fake)
    monkeypatch.setattr(measure, "measure", fake_measure)
    cases = sweep("quick", ("gemv",))
    with pytest.raises(sweep_run.Interrupted) as stop:
        sweep_run.run("quick", cases, str(tmp_path), impls=("triton",), calibration=False)
    assert stop.value.code == 143
    folder = next((tmp_path).glob("*/*"))
    kept = [r for r in read_records(folder / "records.csv") if r.op == "gemv"]
    assert [r.case for r in kept] == calls[:2]  # the interrupted third is not half-written
    meta = json.loads((folder / "run.json").read_text())
    assert "SIGTERM after 2 of" in meta["interrupted"]
    summary = (folder / "summary.md").read_text()
    assert "> The run was interrupted (SIGTERM after 2 of" in summary.splitlines()[2]
