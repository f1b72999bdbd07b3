"""`roofbench tp` end to end: two CPU processes started by torchrun, gloo between them, a tiny
Llama-family model split over both, checked against float64 and timed; the theory half of a
record on a GPU's roof; the one-line errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from roofbench.bench.cli import main
from roofbench.bench.comm.cases import MULTICAST_OFF
from roofbench.bench.comm.tp_points import TPPoint, check_config, points, tp_record
from roofbench.bench.core.records import read_records
from roofbench.theory import comm, llm, tp
from roofbench.theory.hardware import get_gpu
from roofbench.theory.roofline import Roof

TINY_HF = {
    "model_type": "llama",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "intermediate_size": 96,
    "vocab_size": 80,
    "head_dim": 16,
}


def _torchrun(out: Path, config: Path, *extra: str):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env |= {"CUDA_VISIBLE_DEVICES": "", "GLOO_SOCKET_IFNAME": env.get("GLOO_SOCKET_IFNAME", "lo")}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", "2", "-m", "roofbench.bench.cli", "tp", "--model", str(config)]
    command += ["--max-seq", "512", "--time-cap", "0.05", "--out", str(out), *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, env=env)


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tp")
    (root / "tiny").mkdir()
    config = root / "tiny" / "config.json"
    config.write_text(json.dumps(TINY_HF))
    done = _torchrun(root / "out", config)
    assert done.returncode == 0, done.stderr[-3000:]
    (folder,) = (root / "out" / "cpu").iterdir()
    return folder, done


def test_two_gloo_ranks_split_the_model_check_it_and_time_both_phases(cpu_run):
    folder, done = cpu_run
    rows = read_records(folder / "records.csv")
    gate, *timed = rows
    assert gate.op == "gate" and gate.status == "ok", gate.reason
    assert gate.rel_err < 2e-3 and gate.gpus == 2  # fp32 against float64
    assert [(r.op, r.batch, r.seq) for r in timed] == [("ttft", 1, 512), ("tbt", 1, 512),
                                                       ("tbt", 16, 512)]  # fmt: skip
    for r in timed:
        # "ok" also means both ranks held the same time, samples and check.
        assert r.status == "ok", (r.case, r.reason)
        assert r.case.startswith("tiny-tp2/") and r.gpus == 2 and r.impl == "torch"
        assert r.method == "host" and r.measured_s > 0 and r.p20_s <= r.measured_s <= r.p80_s
        assert r.heads == 4 and r.kv_heads == 2  # one rank's share
        # No GPU roof on a CPU: nothing is predicted rather than something wrong.
        assert r.predicted_s is None and r.error is None
    assert done.stdout.count("wrote ") == 1  # rank 0 alone writes and says so


def test_the_run_says_how_it_ran(cpu_run):
    folder, _ = cpu_run
    meta = json.loads((folder / "run.json").read_text())
    assert meta["kind"] == "tp" and meta["tp"] == 2 and meta["backend"] == "gloo"
    assert meta["environment"] == MULTICAST_OFF
    assert meta["check"]["status"] == "ok" and meta["dtype"] == "fp32"
    assert meta["link_calibration"]["link_gbps"] > 0
    full = llm.load_model(str(folder.parent.parent.parent / "tiny" / "config.json"))
    assert meta["weights_per_gpu_bytes"] == tp.shard(full, 2).weights_bytes("fp32")


def test_a_record_holds_theory_tp_beside_the_measurement():
    h200, model = get_gpu("h200"), llm.MODELS["llama3-70b"]
    roof, link = Roof.from_spec(h200), comm.Link.from_spec(h200)
    point = TPPoint("tbt", 16, 4096)
    record = tp_record(model, 8, point, "torch", "bf16", {"gpu": "x"}, roof, None, link)
    step = tp.decode_step(model, roof, link, 8, 4096, 16)
    assert record.predicted_s == pytest.approx(step.time_s) == record.predicted_datasheet_s
    assert step.time_s > step.per_gpu_s  # the collectives are in it
    assert record.bytes == llm.decode_step(tp.shard(model, 8), roof, 4096, 16).bytes_
    assert record.gpus == 8 and record.case == "llama3-70b-tp8/tbt/b16_c4096"
    assert f"160 x {step.all_reduce.algorithm} all_reduce of 262144 B" in record.plan
    assert record.gpu == "x"
    # A calibrated link is the one predicted_s uses; the datasheet's stays beside it.
    slow = comm.Link(alpha_s=5e-6, bandwidth_bytes_per_s=1e11, source="slow")
    other = tp_record(model, 8, point, "torch", "bf16", {}, roof, slow, link)
    assert other.predicted_s > other.predicted_datasheet_s == record.predicted_s


def test_points_and_the_check_model():
    assert len(points("quick")) == 6 and points("quick", 600)[0] == TPPoint("ttft", 1, 512)
    with pytest.raises(ValueError, match="no point of sweep quick has at most 8 tokens"):
        points("quick", 8)
    small = check_config(llm.MODELS["llama3-70b"], 8)
    assert (small.num_heads, small.num_kv_heads, small.head_dim) == (64, 8, 128)
    assert small.num_layers == 2 and tp.shard(small, 8).intermediate_size == 64


def test_without_torchrun_it_says_how_to_start_it(capsys, monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert main(["tp", "--model", "llama3-8b"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "torchrun --nproc-per-node=N" in err


@pytest.mark.parametrize(
    "args,message",
    [
        (["--model", "llama9"], "unknown model 'llama9'"),
        (["--impl", "gemm=nope"], "nope"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(args, message, capsys):
    assert main(["tp", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err


def test_the_run_writes_a_summary_that_report_rebuilds(cpu_run):
    from roofbench.bench.cli import main
    from roofbench.bench.comm import tp_report

    folder, _ = cpu_run
    written = (folder / "summary.md").read_text()
    assert "# roofbench tp summary" in written and "TP 2" in written
    rows = [line for line in written.splitlines() if line.startswith("| `tiny-tp2/")]
    assert len(rows) == 3  # the three timed points; on a CPU nothing is predicted
    assert all("| — |" in row for row in rows)
    (folder / "summary.md").unlink()
    assert tp_report.is_tp_run(folder) and main(["report", str(folder)]) == 0
    assert (folder / "summary.md").read_text() == written


def test_the_accuracy_table_gives_median_and_p90_per_phase():
    from roofbench.bench.comm import tp_report
    from roofbench.bench.core.records import Record

    def rec(op, measured, predicted):
        return Record(case=f"m/{op}", op=op, impl="torch", dtype="bf16", status="ok",
                      measured_s=measured, predicted_s=predicted, error=measured / predicted - 1,
                      batch=1, seq=512, gpus=2)  # fmt: skip

    rows = [rec("tbt", 1.1, 1.0), rec("tbt", 0.8, 1.0), rec("tbt", 1.0, 1.0), rec("ttft", 3, 2)]
    lines = tp_report.accuracy_lines(rows)
    tbt = next(line for line in lines if line.startswith("| tbt"))
    assert [c.strip() for c in tbt.strip("|").split("|")] == ["tbt", "3", "10.0%", "18.0%"]
    assert any(line.startswith("| ttft | 1 | 50.0% |") for line in lines)
