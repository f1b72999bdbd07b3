"""bench/model/: sweeps as data, the fits and rules of the summary, the gate, predictions-only
runs (files, records against theory) and a measured run's report from synthetic records."""

import dataclasses
import io
import json
import math
from pathlib import Path

import pytest
import torch
from rich.console import Console

from roofbench.bench.core.gpu import resolve_gpu
from roofbench.bench.core.records import RecordWriter, read_records
from roofbench.bench.model import gate as mg
from roofbench.bench.model import measure as mm
from roofbench.bench.model import points as pts
from roofbench.bench.model import report as model_report
from roofbench.bench.model import run as bm
from roofbench.kernels.llama import Llama
from roofbench.theory import analysis as an
from roofbench.theory import llm
from roofbench.theory.llm import MODELS, ModelConfig
from roofbench.theory.roofline import Roof

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ROOF = Roof(700e12, 3.0e12, 5e-6, "measured")
LLAMA_8B = MODELS["llama3-8b"]


def quiet() -> Console:
    return Console(file=io.StringIO())


# --- sweeps ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["quick", "medium", "full"])
def test_sweep_points_are_unique_and_complete(name):
    sweep = pts.SWEEPS[name]
    points = pts.sweep_points(sweep)
    assert len(points) == len(set(points))
    tbt = {(p.batch, p.seq) for p in points if p.variant == "base" and p.op == "tbt"}
    assert {(b, c) for b in sweep.tbt_batches for c in sweep.tbt_contexts} <= tbt
    assert {(b, sweep.knee_context) for b in sweep.knee_batches} <= tbt
    assert {(1, n) for n in sweep.naive_sequences} <= tbt  # cached decode beside each naive step
    naive = [p.seq for p in points if p.op == "naive_step"]
    assert naive == list(sweep.naive_sequences) and len(naive) >= 3
    assert 1 in sweep.knee_batches
    mha = {(p.batch, p.seq) for p in points if p.variant == "mha"}
    assert mha and mha <= tbt  # each MHA point has its GQA twin
    assert not [p for p in pts.sweep_points(sweep, mha=False) if p.variant == "mha"]


def test_the_decode_sweep_is_the_weight_read_check_alone():
    points = pts.sweep_points(pts.SWEEPS["decode"])
    assert len(points) == len(set(points))
    assert {(p.variant, p.op, p.seq) for p in points} == {("base", "tbt", 512)}
    assert sorted(p.batch for p in points) == [1, 4, 16]


def test_full_sweep_spans_the_asked_ranges_and_quick_is_a_handful():
    full, quick = pts.SWEEPS["full"], pts.SWEEPS["quick"]
    assert full.ttft_prompts[0] == 128 and full.ttft_prompts[-1] == 32768
    assert full.ttft_batches == (1, 4, 16)
    assert full.tbt_contexts[0] == 128 and full.tbt_contexts[-1] == 32768
    assert full.tbt_batches[0] == 1 and full.tbt_batches[-1] == 256
    assert full.naive_sequences[0] == 128 and full.naive_sequences[-1] == 8192
    assert len(pts.sweep_points(quick)) <= 20 < len(pts.sweep_points(full))


def test_case_ids_name_model_phase_and_shape():
    config = LLAMA_8B.with_layers(4)
    assert pts.case_id(config, pts.Point("base", "ttft", 4, 4096)) == "llama3-8b-4l/ttft/b4_n4096"
    assert pts.case_id(config, pts.Point("base", "tbt", 16, 512)) == "llama3-8b-4l/tbt/b16_c512"
    assert pts.slug("meta-llama/Llama 3") == "meta-llama-Llama-3"


def test_fused_folded_copies_are_counted_by_the_fit_rule():
    """Its copies (QKV, gate|up, LM head) are about 2/3 of Llama 3's weights again, so fewer
    layers fit beside them."""
    big = MODELS["llama3-70b"]
    share = pts.held_weight_bytes(big, folded=True) / pts.held_weight_bytes(big) - 1
    assert 0.6 < share < 0.75
    assert pts.fitting_layers(LLAMA_8B, 80e9, folded=True) == 32  # 16 + 10 GB under 40
    plain, folded = (pts.fitting_layers(big, 141e9, folded=f) for f in (False, True))
    assert folded < plain < big.num_layers
    assert pts.held_weight_bytes(big.with_layers(folded), folded=True) <= 0.5 * 141e9
    assert pts.held_weight_bytes(big.with_layers(folded + 1), folded=True) > 0.5 * 141e9


def test_fitting_layers_keeps_the_weights_under_half_the_memory():
    assert pts.fitting_layers(LLAMA_8B, 80e9) == 32
    big = MODELS["llama3-70b"]
    layers = pts.fitting_layers(big, 80e9)
    assert 8 <= layers < 80
    assert (
        big.with_layers(layers).weights_bytes()
        <= 40e9
        < big.with_layers(layers + 1).weights_bytes()
    )


# --- analysis --------------------------------------------------------------------------------


@pytest.mark.parametrize("exponent", [0.0, 0.5, 1.0, 2.0])
def test_fit_exponent_recovers_a_power_law(exponent):
    lengths = [128, 256, 512, 1024, 2048, 4096]
    times = [3e-3 * n**exponent for n in lengths]
    assert an.fit_exponent(lengths, times) == pytest.approx(exponent, abs=1e-9)


def test_fit_exponent_uses_the_upper_part_of_the_range():
    lengths = [2**e for e in range(4, 16)]
    times = [1e-3 + 1e-9 * n**2 for n in lengths]  # flat, then quadratic from N ~ 1000
    assert an.fit_exponent(lengths, times) > 1.6 > an.fit_exponent(lengths, times, upper=1.0)
    assert an.fit_exponent([128, 256], [1.0, None]) is None
    assert an.fit_exponent([128, 256, 512], [None, 1.0, 2.0]) == pytest.approx(1.0)


def test_memory_bound_batch_rule():
    batches = [1, 2, 4, 8, 16]
    assert an.memory_bound_batch(batches, [1.0, 1.01, 1.2, 1.3, 2.0]) == 8
    assert an.memory_bound_batch(batches, [1.0, 1.0, 1.0, 1.0, 1.25]) is None  # not over 1.25x
    assert an.memory_bound_batch(batches, [None, 1.0, 1.0, 2.0, 3.0]) is None  # no batch 1
    assert an.memory_bound_batch(batches, [1.0, None, 2.0, None, None]) == 4


def test_predicted_knee_and_bound_change_follow_theory():
    def tbt(b):
        return llm.decode_step(LLAMA_8B, ROOF, 32, b).time_s

    knee = an.predicted_knee_batch(LLAMA_8B, ROOF, 32)
    assert tbt(knee) > 1.25 * tbt(1) >= tbt(knee - 1)
    turn = an.compute_bound_batch(LLAMA_8B, ROOF, 32)
    assert llm.decode_step(LLAMA_8B, ROOF, 32, turn).bound == "compute"
    assert llm.decode_step(LLAMA_8B, ROOF, 32, turn - 1).bound == "memory"
    # At a long context the KV read grows with the batch: memory-bound at every batch.
    assert an.compute_bound_batch(LLAMA_8B, ROOF, 32768, max_batch=1024) is None


def test_full_depth_scaling():
    assert an.full_depth_estimate(2.0, 1.0, 20, 80) == pytest.approx(8.0)
    assert an.full_depth_estimate(2.0, 0.0, 20, 80) == pytest.approx(2.0)
    assert an.full_depth_estimate(2.0, 0.5, 20, 80) == pytest.approx(5.0)
    reduced = MODELS["llama3-70b"].with_layers(20)
    share = an.layer_share(reduced, ROOF, "tbt", 1, 1024)
    assert 0.5 < share < 1.0  # the LM head is a visible part of a decode step


# --- records and the budget ------------------------------------------------------------------


def test_records_carry_theorys_predictions():
    datasheet = Roof(989e12, 3.35e12, 4e-6, "datasheet")
    config = LLAMA_8B.with_layers(2)
    for point in (
        pts.Point("base", "ttft", 4, 1024),
        pts.Point("base", "tbt", 16, 2048),
        pts.Point("base", "naive_step", 1, 512),
    ):
        record = pts.base_record(pts.Task(config, point, "triton"), datasheet, ROOF, {"gpu": "x"})
        expected = {
            "ttft": llm.prefill(config, ROOF, 1024, 4),
            "tbt": llm.decode_step(config, ROOF, 2048, 16),
            "naive_step": llm.naive_step(config, ROOF, 512, 1),
        }[point.op]
        assert record.predicted_s == expected.time_s and record.bound == expected.bound
        assert record.flops == expected.flops and record.bytes == expected.bytes_
        assert record.predicted_datasheet_s == pts.phase(config, datasheet, point.op, point.batch,
                                                        point.seq).time_s  # fmt: skip
        assert record.kv_heads == 8 and record.gpu == "x"
    assert record.m == 512  # token rows through the projections


def test_time_budget_stops_cleanly():
    config = LLAMA_8B.with_layers(1)
    tasks = [
        pts.Task(config, pts.Point("base", "tbt", 1, c), "torch") for c in (128, 256, 512, 1024)
    ]
    ticks = iter(range(100))
    written = []

    def base(task):
        return pts.base_record(task, ROOF, ROOF, {})

    def measure(task, record):
        return dataclasses.replace(record, measured_s=1e-3)

    stopped = pts.run_tasks(tasks, base, measure, written.append, 2, clock=lambda: next(ticks))
    assert stopped
    assert [r.status for r in written] == ["ok", "ok", "skipped", "skipped"]
    assert written[2].reason == pts.BUDGET_REASON and written[2].predicted_s > 0
    assert not pts.run_tasks(tasks, base, measure, written.append, None)


# --- the correctness gate ----------------------------------------------------------------------

TINY = ModelConfig("tiny", 64, 1, 4, 2, 96, 97)
GATE_SHAPES = ((1, 6), (2, 5))


def test_gate_passes_the_triton_backend_under_the_interpreter():
    reference = Llama.random(TINY)
    results = mg.gate({"triton": reference.with_backend("triton"), "torch": reference}, GATE_SHAPES)
    assert results["torch"].ok and results["torch"].rel_err == 0
    assert results["triton"].ok and results["triton"].rel_err < 1e-4
    assert results["triton"].tolerance == mg.GATE_TOLERANCE["fp32"]


@pytest.fixture
def off_by_one_decode():
    """A registered decode attention that attends over one cached token too few: a plausible,
    quiet bug the model gate must reject."""
    from roofbench.kernels import registry
    from roofbench.kernels.decode_attention import decode_attention_reference

    def off_by_one(q, k_cache, v_cache, context_lens, out=None):
        return decode_attention_reference(q, k_cache, v_cache, context_lens - 1, out=out)

    registry.register_impl("decode_attention", "off_by_one", off_by_one)
    yield {"decode_attention": "off_by_one"}
    registry.unregister("decode_attention", "off_by_one")


def test_gate_rejects_a_wrong_backend_and_the_record_says_failed(off_by_one_decode):
    reference = Llama.random(TINY)
    wrong = reference.with_backend(off_by_one_decode)
    assert wrong.backend == "decode_attention=off_by_one"
    results = mg.gate({wrong.backend: wrong, "torch": reference}, GATE_SHAPES)
    verdict = results[wrong.backend]
    assert not verdict.ok and "differ" in verdict.reason
    assert results["torch"].ok
    record = mg.gate_record(TINY, verdict, {"gpu": "x"})
    assert record.status == "failed" and record.op == "gate" and record.rel_err > 2e-3


# --- runs without a GPU ------------------------------------------------------------------------


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_predictions_only_run_writes_records_summary_and_plots(tmp_path, no_gpu):
    folder = bm.run_model("llama3-8b", None, "quick", tmp_path, console=quiet())
    spec = resolve_gpu(None)
    # Predictions live apart from measured runs, labelled as predictions.
    assert folder.parent == tmp_path / "predicted" / spec.slug
    assert folder.name.startswith("model-llama3-8b-")
    records = read_records(folder / pts.RECORDS_CSV)
    points = pts.sweep_points(pts.SWEEPS["quick"])
    assert len(records) == 2 * len(points)
    datasheet = Roof.from_spec(spec)
    configs = {"base": LLAMA_8B, "mha": LLAMA_8B.with_mha()}
    for record, (point, impl) in zip(
        records, [(p, i) for v in configs for p in points if p.variant == v for i in bm.BACKENDS],
        strict=True,
    ):  # fmt: skip
        expected = pts.phase(configs[point.variant], datasheet, point.op, point.batch, point.seq)
        assert record.case == pts.case_id(configs[point.variant], point) and record.impl == impl
        assert record.status == "skipped" and record.reason == pts.NO_GPU_REASON
        assert record.predicted_s is None and record.predicted_datasheet_s == expected.time_s
        assert record.flops == expected.flops and record.bytes == expected.bytes_
    summary = (folder / pts.SUMMARY_MD).read_text()
    assert "Measuring needs a GPU" in summary
    for section in ("naive exponent", "memory-bound", "MHA vs GQA", "KV KiB per token"):
        assert section in summary
    assert "Depth reduced" not in summary
    for name in pts.PLOTS:
        assert (folder / name).read_bytes().startswith(PNG_SIGNATURE)
    meta = json.loads((folder / "run.json").read_text())
    assert meta["measured_roof"] is None and meta["layers"] == 32 and not meta["depth_reduced"]


def test_reduced_depth_is_said_and_predicted_for_the_reduced_model(tmp_path, no_gpu):
    folder = bm.run_model("llama3-70b", 8, "quick", tmp_path, backends=("triton",),
                          console=quiet())  # fmt: skip
    records = read_records(folder / pts.RECORDS_CSV)
    assert {r.case.split("/")[0] for r in records} == {"llama3-70b-8l", "llama3-70b-8l-mha"}
    ttft = next(r for r in records if r.op == "ttft")
    reduced = MODELS["llama3-70b"].with_layers(8)
    roof = Roof.from_spec(resolve_gpu(None))
    assert ttft.predicted_datasheet_s == llm.prefill(reduced, roof, ttft.seq, ttft.batch).time_s
    summary = (folder / pts.SUMMARY_MD).read_text()
    assert "measured with 8 of 80 layers (as asked)" in summary
    assert "Full depth (80 layers), estimated from 8" in summary


def test_report_of_a_measured_run(tmp_path, no_gpu):
    """A predictions-only folder turned into a measured one (synthetic times: 1.1 x predicted)
    gives the summary's measured sections and plots."""
    folder = bm.run_model("llama3-8b", 4, "quick", tmp_path, console=quiet())
    meta = json.loads((folder / "run.json").read_text())
    meta["measured_roof"] = meta["datasheet_roof"]
    (folder / "run.json").write_text(json.dumps(meta))
    records = read_records(folder / pts.RECORDS_CSV)
    (folder / pts.RECORDS_CSV).unlink()
    with RecordWriter(folder / pts.RECORDS_CSV) as writer:
        for r in records:
            slow = 1.1 if r.impl == "triton" else 1.2
            time_s = r.predicted_datasheet_s * slow
            changes = {"predicted_s": r.predicted_datasheet_s, "measured_s": time_s}
            writer.write(dataclasses.replace(r, status="ok", reason="", error=slow - 1, **changes))
        writer.write(mg.gate_record(LLAMA_8B.with_layers(4), mg.GateResult(
            "triton", True, 1e-3, 1e-2, 5e-2, "ok"), {}))  # fmt: skip
    model_report.write_report(folder)
    summary = (folder / pts.SUMMARY_MD).read_text()
    assert "| llama3-8b-4l | triton | ttft | 2 | 10.0% | 10.0% |" in summary
    assert "| llama3-8b-4l | torch | tbt |" in summary and "20.0%" in summary
    assert "## Correctness gate" in summary
    # Times scaled by a constant keep the exponents and the knee of the predictions.
    exponents = [line for line in summary.splitlines() if line.startswith("| predicted |")]
    assert (
        exponents
        and exponents[0].split("|")[2:4]
        == next(line for line in summary.splitlines() if line.startswith("| triton |")).split("|")[
            2:4
        ]
    )
    knee = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in summary.splitlines()
            if line.startswith(("| predicted", "| measured"))}  # fmt: skip
    assert knee["measured triton"] == knee["measured torch"] == knee["predicted"] != "None"
    for name in pts.PLOTS:
        assert (folder / name).read_bytes().startswith(PNG_SIGNATURE)


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="sweep"):
        bm.run_model("llama3-8b", None, "huge", tmp_path, console=quiet())
    with pytest.raises(ValueError, match="backend"):
        bm.run_model("llama3-8b", None, "quick", tmp_path, backends=("cuda",), console=quiet())
    with pytest.raises(ValueError, match="no implementation 'mine'"):
        bm.parse_impls("decode_attention=mine")
    with pytest.raises(ValueError, match="the decoder runs"):
        bm.parse_impls("conv=triton")
    with pytest.raises(KeyError):
        bm.run_model("llama9", None, "quick", tmp_path, console=quiet())
    assert not math.isnan(mg.GATE_TOLERANCE["bf16"])


# --- the measuring path, on the CPU with the CUDA-only pieces faked -----------------------------


class _FakeWindow:
    def summary(self):
        from roofbench.bench.core.nvml_facts import TelemetrySummary

        return TelemetrySummary(missing="fake")


class _FakeTelemetry:
    def __init__(self, index=0):
        from contextlib import contextmanager

        from roofbench.bench.core.nvml_facts import DeviceInfo

        self.info = lambda: DeviceInfo(name="Fake GPU", driver_version="0")
        self.window = contextmanager(lambda: iter([_FakeWindow()]))
        self.close = lambda: None
        self.gpm_window = lambda fn, **kwargs: None


def _fake_time(fn, graph, rule):
    """Run the call once (so the decoder really runs) and report a fixed time."""
    from roofbench.bench.core.timing import TimingStats

    fn()
    return TimingStats.from_times([2e-3] * 5, "graph" if graph else "events"), fn, ""


TINY_SWEEPS = {
    "every phase": pts.ModelSweep(
        "tiny", (1, 2), (8, 16), (1, 4), (8, 32), (8, 16, 32), 4, (1, 4, 8), (1,), (16,)
    ),  # fmt: skip
    "decode only": pts.ModelSweep("tiny", (), (), (1, 4), (8, 32), (), 8, (), (), ()),
}


def _fake_gpu_run(tmp_path, monkeypatch, sweep, time=_fake_time):
    """A tiny config.json and run_model's GPU path faked around it (CUDA, ceilings, telemetry,
    the timer, the calibration); returns (config path, calibration document)."""
    from roofbench.bench.core import ceilings

    config = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "intermediate_size": 96, "vocab_size": 97}  # fmt: skip
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "config.json").write_text(json.dumps(config))
    monkeypatch.setitem(pts.SWEEPS, "tiny", sweep)
    free = {"bytes": 10**12}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda i: type("P", (), {"total_memory": 80e9})())  # fmt: skip
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free["bytes"], 80e9))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(bm, "_cuda_device", lambda: torch.device("cpu"))
    monkeypatch.setattr(mm, "_time", time)
    monkeypatch.setattr("roofbench.bench.core.telemetry.Telemetry", _FakeTelemetry)
    fake = ceilings.Ceilings(copy_gbps=3000, read_gbps=3100, matmul_tflops=700, launch_s=5e-6)
    monkeypatch.setattr(ceilings, "measure_ceilings", lambda **kwargs: fake)
    real_need = pts.need_bytes
    monkeypatch.setattr(mm, "need_bytes", lambda c, p: 10**13 if p.seq == 32 else real_need(c, p))
    # The calibration a real run measures first: the tests' made-up one.
    made_up = Path(__file__).resolve().parents[2] / "data" / "made_up_calibration.json"
    doc = {"calibration": json.loads(made_up.read_text())}
    monkeypatch.setattr(
        "roofbench.bench.core.calibrate.load_or_calibrate", lambda path, tel, console: doc
    )

    return tmp_path / "tiny" / "config.json", doc


@pytest.mark.parametrize("which", list(TINY_SWEEPS))
def test_measuring_path_end_to_end_with_fakes(which, tmp_path, monkeypatch):
    """run_model's GPU path on a tiny config: ceilings, gate, every point timed (fake timer) or
    skipped for memory, then the report; the torch backend runs on the CPU in bf16. A sweep of
    decode points alone builds and gates no MHA twin, and its report still renders."""
    sweep = TINY_SWEEPS[which]
    path, doc = _fake_gpu_run(tmp_path, monkeypatch, sweep)
    folder = bm.run_model(str(path), None, "tiny", tmp_path / "out", backends=("torch",),
                          console=quiet())  # fmt: skip
    records = read_records(folder / pts.RECORDS_CSV)
    gates = [r for r in records if r.op == "gate"]
    mha = any(p.variant == "mha" for p in pts.sweep_points(sweep))
    assert [g.status for g in gates] == ["ok"] * (2 if mha else 1)  # base and MHA variants
    timed = [r for r in records if r.op in pts.PHASES]
    assert len(timed) == len(pts.sweep_points(sweep))
    for r in timed:
        if r.seq == 32:
            assert r.status == "skipped" and r.reason.startswith("needs ~")
        else:
            assert r.status == "ok" and r.measured_s == 2e-3 and r.gpu == "Fake GPU"
            assert r.error == pytest.approx(2e-3 / r.predicted_s - 1)
            graph = r.op == "tbt" or r.predicted_s < mm.GRAPH_BELOW_S
            assert r.method == ("graph" if graph else "events")
    meta = json.loads((folder / "run.json").read_text())
    assert meta["measured_roof"]["peak_flops"] == 700e12 and meta["gate"]
    assert meta["calibration"] == doc and meta["tiers_model"] >= 2
    summary = (folder / pts.SUMMARY_MD).read_text()
    assert "## Correctness gate" in summary and "Fake GPU" in summary
    assert "## Kernel by kernel" in summary  # the run carries a calibration
    # The plans each measured step ran with, recorded for the report to read back.
    assert meta["step_plans"] and all(k.startswith("torch:") for k in meta["step_plans"])
    assert any(k.startswith("torch:gemv/") for k in meta["step_plans"])
    # The decode steps of batch <= 16 against their byte floor (fake time 2 ms each).
    base = ModelConfig(**meta["configs"]["base"])
    read = meta["calibration"]["calibration"]["read_bytes_per_s"]
    floor = llm.decode_floor_s(base, 8, 1, read)
    assert "## Decode step against its byte floor" in summary
    assert f"| 1 | 8 | {floor * 1e3:.3g} | {2e-3 / floor:.3f} |" in summary


def test_a_sigterm_keeps_the_points_measured_and_writes_the_report(tmp_path, monkeypatch):
    """A SIGTERM during the second timed point (b4 c8; b1 c32 is skipped for memory): what
    was written before it is kept, run.json says the run was interrupted, the summary is
    written, and Interrupted (exit 143) leaves run_model."""
    import os
    import signal

    from roofbench.bench.core.signals import Interrupted

    timed = []

    def time_then_stop(fn, graph, rule):
        timed.append(1)
        if len(timed) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return _fake_time(fn, graph, rule)

    sweep = TINY_SWEEPS["decode only"]
    path, _ = _fake_gpu_run(tmp_path, monkeypatch, sweep, time=time_then_stop)
    with pytest.raises(Interrupted) as stop:
        bm.run_model(str(path), None, "tiny", tmp_path / "out", backends=("torch",),
                     console=quiet())  # fmt: skip
    assert stop.value.code == 143
    (folder,) = (tmp_path / "out").glob("*/*")
    kept = [(r.case.split("/")[-1], r.status) for r in read_records(folder / pts.RECORDS_CSV)
            if r.op in pts.PHASES]  # fmt: skip
    assert kept == [("b1_c8", "ok"), ("b1_c32", "skipped")]
    assert json.loads((folder / "run.json").read_text())["interrupted"]
    assert "## TBT (decode step)" in (folder / pts.SUMMARY_MD).read_text()


def test_backends_takes_every_preset_and_refuses_another(tmp_path, capsys):
    from roofbench.bench.cli import main

    args = ["model", "--model", "phi3-mini", "--sweep", "decode", "--out", str(tmp_path)]
    assert main([*args, "--backends", "fused,compile"]) == 0
    (run,) = (tmp_path / "predicted").glob("*/*")
    assert json.loads((run / "run.json").read_text())["backends"] == ["fused", "compile"]
    with pytest.raises(SystemExit) as refused:
        main([*args, "--backends", "fused,fast"])
    assert refused.value.code == 2 and "unknown fast" in capsys.readouterr().err


def test_the_summary_says_which_fused_kernels_were_programmatic_dependents():
    from roofbench.bench.model.report import pdl_line

    assert pdl_line({"fused_pdl": True}).endswith("GEMVs were launched as programmatic dependents.")
    both = pdl_line({"fused_pdl": True, "fused_pdl_attention": 2})
    assert "(and from batch 2 its rotary + KV append and decode attention kernels) were" in both
    never = pdl_line({"fused_pdl": True, "fused_pdl_attention": 0})
    assert never == "- The fused decoder's GEMVs were launched as programmatic dependents."
    none = pdl_line({"fused_pdl": False, "fused_pdl_attention": 2})
    assert none == "- The fused decoder's GEMVs were launched in stream order (no PDL)."
    one = pdl_line({"fused_pdl": True, "fused_pdl_attention": 2, "fused_one_kernel_attention": 16})
    assert one.startswith(both) and one.endswith(
        "From batch 16 its decode step ran rotary, the KV append and attention (with the slices'"
        " combine) as one kernel."
    )
    assert pdl_line({"fused_pdl": True, "fused_one_kernel_attention": 0}) == pdl_line(
        {"fused_pdl": True}
    )
