"""The committed results: real GPU runs, readable, complete and self-consistent.

CI has no GPU; it checks what GPU runs wrote: every run folder reads back under the record
schema, holds no failed row, names its GPU, versions and time, and each GPU's baseline compares
with itself as unchanged.
"""

import json
import statistics
from pathlib import Path

import pytest

from roofbench.bench.compare import compare, exit_code, load_results
from roofbench.bench.core.attribution import retier
from roofbench.bench.core.calibrate import calibration_of
from roofbench.bench.core.records import read_records
from roofbench.bench.model.step_report import ALL_POINTS_KEY
from roofbench.kernels.catalog import impl_names
from roofbench.kernels.llama_plan import superseded
from roofbench.theory import tiers
from roofbench.theory.roofline import Roof

BUILT_IN_IMPLS = set(impl_names())
RESULTS = Path(__file__).resolve().parents[2] / "results"


def _kind(folder: Path) -> str:
    """A run folder's kind: its run.json's `kind` (comm, tp), else a kernel sweep."""
    return json.loads((folder / "run.json").read_text()).get("kind") or "kernels"


ALL_RUNS = sorted(p.parent for p in RESULTS.glob("*/*/records.csv"))
RUNS = [f for f in ALL_RUNS if _kind(f) == "kernels"]
# Collective and tensor-parallel runs (roofbench comm / tp): no roofline, records of their own.
MULTI_GPU_RUNS = [f for f in ALL_RUNS if _kind(f) in ("comm", "tp")]
BASELINES = sorted(RESULTS.glob("*/baseline.csv"))
BENCH_JSON = sorted(RESULTS.glob("*/*/pytest-benchmark*.json"))


def test_there_are_committed_runs_and_baselines():
    assert RUNS, "no run folder under results/"
    assert BASELINES, "no results/<gpu>/baseline.csv"
    assert BENCH_JSON, "no pytest-benchmark JSON under results/"


def test_every_run_folder_is_of_a_known_kind():
    assert not [f for f in ALL_RUNS if _kind(f) not in ("kernels", "comm", "tp")]


@pytest.mark.parametrize(
    "folder", MULTI_GPU_RUNS, ids=[str(p.relative_to(RESULTS)) for p in MULTI_GPU_RUNS]
)
def test_a_comm_or_tp_run_is_measured_and_self_describing(folder):
    meta = json.loads((folder / "run.json").read_text())
    for key in ("gpu", "torch", "commit", "started"):
        assert meta.get(key), f"run.json lacks {key}"
    records = read_records(folder / "records.csv")
    measured = [r for r in records if r.status == "ok"]
    assert measured and not [r for r in records if r.status == "failed"]
    for r in measured:
        assert r.measured_s > 0 and r.gpus and r.gpus >= 1 and r.gpu == meta["gpu"]


@pytest.mark.parametrize("folder", RUNS, ids=[str(p.relative_to(RESULTS)) for p in RUNS])
def test_a_run_folder_is_complete_and_self_describing(folder):
    meta = json.loads((folder / "run.json").read_text())
    for key in ("gpu", "torch", "triton", "commit", "started", "datasheet_roof", "measured_roof"):
        assert meta.get(key), f"run.json lacks {key}"
    for name in ("summary.md", "roofline.png", "prefill_vs_decode.png"):
        assert (folder / name).stat().st_size > 0
    records = read_records(folder / "records.csv")
    assert records
    # Only a plugin's implementation may fail the gate in a committed run (a demonstration of
    # the gate rejecting a wrong kernel); the suite's own kernels and peers never do.
    built_in = BUILT_IN_IMPLS
    failed = [(r.case, r.impl) for r in records if r.status == "failed"]
    assert not [f for f in failed if f[1] in built_in], failed
    if failed:
        assert meta.get("plugins"), "failed rows in a run that loaded no plugin"
        assert all(r.measured_s is None for r in records if r.status == "failed")
    for record in records:
        assert record.gpu == meta["gpu"] and record.torch and record.triton and record.timestamp
        if record.status == "ok":
            assert record.measured_s > 0 and record.predicted_s > 0
            assert record.error == pytest.approx(record.measured_s / record.predicted_s - 1)
        else:
            assert record.reason, f"{record.case} {record.impl} is {record.status} with no reason"


@pytest.mark.parametrize("path", BASELINES, ids=[p.parent.name for p in BASELINES])
def test_a_baseline_compared_with_itself_is_unchanged(path):
    records = load_results(path)
    comparisons = compare(records, records)
    assert comparisons and {c.verdict for c in comparisons} == {"same"}
    assert exit_code(comparisons) == 0


@pytest.mark.parametrize("path", BENCH_JSON, ids=[p.name for p in BENCH_JSON])
def test_pytest_benchmark_json_holds_gpu_times_and_records(path):
    data = json.loads(path.read_text())
    assert data["machine_info"]["gpu"]["cuda_available"] is True
    assert data["benchmarks"]
    for bench in data["benchmarks"]:
        record = bench["extra_info"]
        assert record["status"] == "ok" and record["measured_s"] > 0
        # The statistics pytest-benchmark saved are GPU times of the kernel: one round per GPU
        # sample behind the record, so its median is the record's CUDA-event median, where a
        # host launch time of a graph-replayed kernel would be a fraction of it.
        assert bench["stats"]["rounds"] == record["samples"], bench["name"]
        assert bench["stats"]["median"] == pytest.approx(record["measured_s"], rel=0.05)
        # The redraw (a fresh batch right after) is a GPU time of the same kernel too.
        assert 0.5 < record["redraw_ratio"] < 2, bench["name"]
    assert len(load_results(path)) == len(data["benchmarks"])


MODEL_RUNS = sorted(p.parent for p in RESULTS.glob("*/model-*/model_records.csv"))


def test_there_are_committed_model_runs():
    assert MODEL_RUNS, "no model run folder under results/"


@pytest.mark.parametrize("folder", MODEL_RUNS, ids=[p.name for p in MODEL_RUNS])
def test_a_model_run_is_complete_and_measured(folder):
    meta = json.loads((folder / "run.json").read_text())
    assert meta.get("gpu") and meta.get("torch") and meta.get("measured_roof")
    assert (folder / "model_summary.md").stat().st_size > 0
    records = read_records(folder / "model_records.csv")
    measured = [r for r in records if r.status == "ok" and r.op in ("ttft", "tbt")]
    assert measured, "no measured TTFT or TBT"
    assert not [r.case for r in records if r.status == "failed"]
    for record in measured:
        assert record.measured_s > 0 and record.predicted_s > 0 and record.gpu == meta["gpu"]


# --- the tiered model's runs ----------------------------------------------------------------


def _meta(folder) -> dict:
    return json.loads((folder / "run.json").read_text())


def _calibrated(folder):
    doc = json.loads((folder / "run.json").read_text()).get("calibration")
    return doc if doc and doc.get("calibration") else None


CALIBRATED = [f for f in RUNS if _calibrated(f)]


def test_there_are_calibrated_runs_with_tiers():
    assert len(CALIBRATED) >= 2, "a full and a quick sweep with the tiers are committed"
    for folder in CALIBRATED:
        tiered = [r for r in read_records(folder / "records.csv") if r.predicted_t6_s]
        assert tiered and (folder / "where_time_goes.png").stat().st_size > 0


# Committed violations, each with what it shows; any other one fails. None: the one a full sweep
# had (our Triton GEMM at 801.5 TFLOP/s against a burst peak taken from cuBLAS at 8192^3 alone)
# went with calibration 5's burst probe, and that interrupted sweep with it.
KNOWN_VIOLATIONS: set[tuple[str, str, str]] = set()


@pytest.mark.parametrize("folder", CALIBRATED, ids=[p.name for p in CALIBRATED])
def test_no_record_beats_its_roof_and_the_read_roof_is_a_roof(folder):
    records = read_records(folder / "records.csv")
    violations = {(folder.name, r.case, r.impl) for r in records if r.roof_violation}
    assert violations <= KNOWN_VIOLATIONS, violations - KNOWN_VIOLATIONS
    summary = (folder / "summary.md").read_text()
    assert all(f"`{case}` {impl}" in summary for _, case, impl in violations)
    read_roof = _calibrated(folder)["calibration"]["read_bytes_per_s"]
    fastest = max(  # 0 for a run of no read-bound op (a prefill-only sweep)
        (
            r.bytes / r.measured_s
            for r in records
            if r.status == "ok" and r.measured_s and r.op in ("gemv", "decode_attention")
        ),
        default=0.0,
    )
    assert read_roof >= 0.99 * fastest, f"read roof {read_roof:.4g} under {fastest:.4g} B/s"


def _current(folder):
    """The run's calibration, if the tiered model of this code can read it (a run from before
    a constant was added cannot be re-tiered with its own constants)."""
    try:
        return calibration_of(_calibrated(folder))
    except ValueError:
        return None


def _reproduced_tiers(folder) -> range:
    """The tiers this code's model must reproduce for a run: all of them for a run its model
    version wrote; for model 2 runs T0..T4 (model 3 changed T5's bandwidth of few programs);
    for model 1 runs T0..T2 (T3 now charges a fixed cost per kernel, and T5 spreads an
    undeclared schedule over every SM)."""
    version = json.loads((folder / "run.json").read_text()).get("tiers_model", 1)
    if version == tiers.MODEL_VERSION:
        return range(len(tiers.TIERS))
    return range(5) if version == 2 else range(3)


def test_the_recorded_tiers_are_the_theorys_own():
    """Re-tiering a run's records with its own calibration reproduces what it recorded (T0..T4):
    the tiers are theory of what the record holds, nothing else."""
    checked = 0
    for folder in CALIBRATED:
        cal = _current(folder)
        if cal is None:
            continue
        datasheet = Roof(**json.loads((folder / "run.json").read_text())["datasheet_roof"])
        for record in read_records(folder / "records.csv"):
            if record.predicted_t6_s:
                again = retier(record, cal, datasheet)
                for i in _reproduced_tiers(folder):
                    got, want = (getattr(x, f"predicted_t{i}_s") for x in (again, record))
                    assert got == pytest.approx(want, rel=1e-5), (record.case, record.impl, i)
                checked += 1
    assert checked > 100


def test_constants_from_one_sweep_predict_another():
    """Held out: the full sweep's calibration predicts the quick sweep (another machine, another
    process) about as well as its own sweep, case by case: nothing was fitted to either."""
    full = next(
        f for f in CALIBRATED if json.loads((f / "run.json").read_text())["sweep"] == "full"
    )
    cal = _current(full)
    datasheet = Roof(**json.loads((full / "run.json").read_text())["datasheet_roof"])
    own = {(r.case, r.impl): r for r in read_records(full / "records.csv") if r.predicted_t6_s}
    gaps = []
    # A run with a plugin loaded (the deliberately slowed GEMV) is not unchanged code.
    others = [f for f in CALIBRATED if f != full and not _meta(f).get("plugins")]
    for quick in others:
        for record in read_records(quick / "records.csv"):
            match = own.get((record.case, record.impl))
            if match is not None and record.status == "ok" and record.measured_s:
                gaps.append(abs(retier(record, cal, datasheet).error - match.error))
    assert len(gaps) >= 80
    assert statistics.median(gaps) <= 0.05


def test_the_committed_calibration_is_complete():
    for path in RESULTS.glob("*/calibration.json"):
        doc = json.loads(path.read_text())
        cal = calibration_of(doc)
        assert cal.read_bytes_per_s > cal.copy_bytes_per_s / 2 and cal.sms > 0
        for entry in doc["constants"].values():
            assert entry["method"] and entry["samples"] > 0


MODEL_RUNS = sorted(p.parent for p in RESULTS.glob("*/model-*/model_records.csv"))


@pytest.mark.parametrize("folder", MODEL_RUNS, ids=[p.name for p in MODEL_RUNS])
def test_report_reproduces_a_committed_model_summary_byte_for_byte(folder, tmp_path):
    """`roofbench report` as a user runs it (a process of its own, not under the tests' Triton
    interpreter, whose small tiles would change the plans of a run that recorded none)."""
    import os
    import shutil
    import subprocess
    import sys

    copy = tmp_path / folder.name
    shutil.copytree(folder, copy)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    command = [sys.executable, "-m", "roofbench.bench.cli", "report", str(copy)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    again, committed = ((f / "model_summary.md").read_text() for f in (copy, folder))
    # The kernel-by-kernel section is the tiered model's: a run of an older model version is
    # reproduced but for it (as a kernel run's tiers are, in test_the_recorded_tiers_...); so
    # is a run stopped early before run.json kept its skipped points' plans (those points are
    # predicted with the plans declared where the report runs), and a run one of whose backends
    # launched other kernels than today's declare (the report leaves that backend out there).
    meta = json.loads((folder / "run.json").read_text())
    unrecorded = meta.get("stopped_early") and not meta.get(ALL_POINTS_KEY)
    old = any(superseded(b, meta.get("step_declarations")) for b in meta.get("backends", ()))
    if meta.get("tiers_model", 1) != tiers.MODEL_VERSION or unrecorded or old:
        again, committed = (_without_section(t, "## Kernel by kernel") for t in (again, committed))
    assert again == committed


def _without_section(text: str, heading: str) -> str:
    """`text` less the section under `heading` (up to the next heading of its level)."""
    if heading not in text:
        return text
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[:start] + (text[end + 1 :] if end >= 0 else "")
