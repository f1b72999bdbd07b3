"""`roofbench run`, `compare` and `report`, and `pytest bench`, through subprocesses on a CPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_runner import roofbench

from roofbench.bench.core.records import Record, RecordWriter, read_records
from roofbench.bench.sweep.cases import sweep
from roofbench.bench.sweep.run import tasks
from roofbench.theory.hardware import get_gpu

ROOT = Path(__file__).resolve().parents[2]
CPU_ONLY = pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the no-GPU behaviour; this machine has a GPU"
)


@CPU_ONLY
def test_run_without_a_gpu_writes_a_predictions_only_report(tmp_path):
    result = roofbench("run", "--sweep", "quick", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    folder = Path(result.stdout.strip().splitlines()[-1])
    # Apart from measured runs (no committed-results check reads out/predicted/), labelled.
    assert folder.parent.parent == tmp_path / "predicted"
    for name in ("records.csv", "run.json", "summary.md", "roofline.png", "prefill_vs_decode.png"):
        assert (folder / name).stat().st_size > 0, name
    records = read_records(folder / "records.csv")
    assert len(records) == len(tasks(sweep("quick"), None))
    assert {r.impl for r in records} >= {"triton", "torch", "sdpa_flash", "sdpa_cudnn"}
    assert {r.status for r in records} == {"skipped"}
    assert all(r.predicted_datasheet_s > 0 and r.measured_s is None for r in records)
    assert "Nothing here was measured" in (folder / "summary.md").read_text()
    assert "Predicted for NVIDIA H100" in result.stdout.replace("\n", " ")
    assert all(r.gpu.startswith("predicted for ") for r in records)


@CPU_ONLY
def test_predictions_choose_their_gpu_and_plot_the_predictions(tmp_path):
    result = roofbench("run", "--ops", "gemv", "--gpu", "h200", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    folder = Path(result.stdout.strip().splitlines()[-1])
    assert folder.parent == tmp_path / "predicted" / "h200"
    meta = json.loads((folder / "run.json").read_text())
    h200 = get_gpu("h200").name
    assert meta["gpu"] == f"predicted for {h200}" and meta["predicted_for"] == h200
    from roofbench.bench.sweep.plot import plotted

    points, predicted = plotted(read_records(folder / "records.csv"))
    assert predicted and len(points) == len(read_records(folder / "records.csv"))


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--sweep", "huge"], "--sweep"),
        (["--ops", "conv"], "unknown conv"),
        (["--impls", "cuda"], "unknown cuda"),
        (["--time-cap", "0"], "--time-cap"),
        (["--resume", "/nonexistent/run"], "not a run folder"),
    ],
)
def test_invalid_run_arguments_exit_2_before_any_work(args, needle, tmp_path):
    result = roofbench("run", "--out", str(tmp_path), *args)
    assert result.returncode == 2
    assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir()), "nothing may be written for invalid arguments"


def _records(path: Path, median_s: float, spread: float = 0.01) -> Path:
    with RecordWriter(path) as writer:
        for impl in ("triton", "torch"):
            writer.write(
                Record(
                    case="gemv/m1_n4096_k4096/bf16",
                    op="gemv",
                    impl=impl,
                    dtype="bf16",
                    measured_s=median_s,
                    p20_s=median_s * (1 - spread),
                    p80_s=median_s * (1 + spread),
                )
            )
    return path


def test_compare_exits_1_only_on_a_slowdown_beyond_noise(tmp_path):
    base = _records(tmp_path / "base.csv", 10e-6)
    same = roofbench("compare", str(base), str(base))
    assert same.returncode == 0, same.stdout + same.stderr
    slower = roofbench("compare", str(base), str(_records(tmp_path / "new.csv", 12e-6)))
    assert slower.returncode == 1
    assert "slower" in slower.stdout
    noisy = _records(tmp_path / "noisy.csv", 10.3e-6, spread=0.2)
    assert roofbench("compare", str(base), str(noisy), "--threshold", "1%").returncode == 0


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--threshold", "lots"], "threshold"),
        (["--throttled-threshold", "much"], "threshold"),
        (["--threshold", "5%"], "no such file"),
    ],
)
def test_compare_errors_are_one_line_with_exit_2(tmp_path, args, needle):
    base = _records(tmp_path / "base.csv", 10e-6)
    other = str(tmp_path / "missing.csv") if needle == "no such file" else str(base)
    result = roofbench("compare", str(base), other, *args)
    assert result.returncode == 2
    assert needle in result.stderr.lower() and len(result.stderr.strip().splitlines()) == 1


@CPU_ONLY
def test_report_rewrites_the_summary_of_a_run_folder(tmp_path):
    run = roofbench("run", "--sweep", "quick", "--ops", "gemv", "--out", str(tmp_path))
    folder = Path(run.stdout.strip().splitlines()[-1])
    (folder / "summary.md").unlink()
    result = roofbench("report", str(folder))
    assert result.returncode == 0, result.stderr
    assert "GEMM ridge" in (folder / "summary.md").read_text()
    assert roofbench("report", str(tmp_path)).returncode == 2


@CPU_ONLY
def test_pytest_bench_skips_every_benchmark_with_a_reason_without_a_gpu():
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "bench", "--benchmark-only", "-rs", "-q", "--ops", "gemv"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        # Under pytest-xdist a worker's variables would make pytest-benchmark think this run is
        # distributed too, and refuse --benchmark-only.
        env={k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")},
    )
    assert result.returncode == 0, result.stdout[-2000:]
    assert "benchmarks need a CUDA GPU" in result.stdout
    expected = len(tasks(sweep("quick", ("gemv",)), None))
    assert f"{expected} skipped" in result.stdout
