"""`roofbench comm` end to end: two CPU processes started by torchrun, gloo between them, every
collective at small sizes, checked; then report and compare on the run folder."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from roofbench.bench.cli import main
from roofbench.bench.comm.cases import MULTICAST_OFF
from roofbench.bench.core.records import read_records
from roofbench.theory import comm


def _torchrun(out: Path, *extra: str, env_extra: dict | None = None):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env |= {"CUDA_VISIBLE_DEVICES": "", **(env_extra or {})}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", "2", "-m", "roofbench.bench.cli", "comm"]
    command += ["--max-bytes", "4K", "--time-cap", "0.02", "--out", str(out), *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, env=env)


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("comm")
    done = _torchrun(out, env_extra={"NCCL_NVLS_ENABLE": "0"})
    assert done.returncode == 0, done.stderr[-3000:]
    (folder,) = (out / "cpu").iterdir()
    return folder, done


def test_two_gloo_ranks_run_every_collective_correctly(cpu_run):
    folder, _ = cpu_run
    rows = read_records(folder / "records.csv")
    assert {r.op for r in rows} == {f"comm_{c}" for c in comm.COLLECTIVES}
    assert len(rows) == 5 * 4  # 8 B, 64 B, 512 B, 4 KiB of each
    for r in rows:
        assert r.status == "ok", (r.case, r.reason)
        assert r.max_abs_err == 0, r.case  # whole numbers add exactly
        assert r.gpus == 2 and r.impl == "gloo" and r.method == "host"
        assert r.measured_s > 0 and r.p20_s <= r.measured_s <= r.p80_s
        assert r.achieved_gbps == pytest.approx(r.bytes / r.measured_s / 1e9)
        # Predicted on the link the send/recv probes calibrated.
        assert r.predicted_s > 0 and r.error == pytest.approx(r.measured_s / r.predicted_s - 1)


def test_the_run_says_how_it_ran(cpu_run):
    folder, done = cpu_run
    meta = json.loads((folder / "run.json").read_text())
    assert meta["kind"] == "comm" and meta["gpus"] == 2 and meta["backend"] == "gloo"
    assert meta["environment"] == MULTICAST_OFF  # set in both ranks, the preset one kept
    cal = meta["link_calibration"]
    assert cal["alpha_s"] >= 0 and cal["link_gbps"] > 0 and len(cal["probes"]) == 2
    summary = (folder / "summary.md").read_text()
    assert "## comm_all_reduce" in summary and "busbw" in summary
    assert (folder / "comm.png").stat().st_size > 0
    assert done.stdout.count("wrote ") == 1  # rank 0 alone writes and says so


def test_report_rebuilds_the_summary_and_compare_matches_the_run_with_itself(cpu_run, capsys):
    folder, _ = cpu_run
    before = (folder / "summary.md").read_text()
    (folder / "summary.md").unlink()
    assert main(["report", str(folder)]) == 0
    assert (folder / "summary.md").read_text() == before
    records = str(folder / "records.csv")
    assert main(["compare", records, records, "--format", "csv"]) == 0
    assert capsys.readouterr().out.count("comm_") == 20


def test_without_torchrun_it_says_how_to_start_it(capsys, monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert main(["comm", "--max-bytes", "4K"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "torchrun --nproc-per-node=N --no-python roofbench comm" in err


@pytest.mark.parametrize(
    "args,message",
    [
        (["--max-bytes", "4X"], "not a positive number of bytes"),
        (["--collectives", "all_reduce,bcast"], "unknown bcast"),
        (["--time-cap", "0"], "must be positive"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(args, message, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["comm", *args])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err
