"""`roofbench tp` on GPUs: NCCL over as many GPUs as torch sees (up to 8, a TP size that Llama 3
8B splits over), a 2-layer Llama 3 8B checked, graph-captured and timed on every GPU."""

import json
import os
import subprocess
import sys

import pytest
import torch

from roofbench.bench.core.records import read_records

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def gpus():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA GPUs; torch sees none")
    count = min(torch.cuda.device_count(), 8)
    return max(n for n in (1, 2, 4, 8) if n <= count)


def test_nccl_tp_decode_is_checked_graph_timed_and_predicted(gpus, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", str(gpus), "-m", "roofbench.bench.cli", "tp"]
    command += ["--model", "llama3-8b", "--layers", "2", "--max-seq", "512"]
    command += ["--time-cap", "0.2", "--out", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    (slug,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    (folder,) = list(slug.iterdir())
    meta = json.loads((folder / "run.json").read_text())
    assert meta["backend"] == "nccl" and meta["tp"] == gpus and meta["dtype"] == "bf16"
    assert meta["environment"]["NCCL_NVLS_ENABLE"] == "0"
    gate, *timed = read_records(folder / "records.csv")
    assert gate.status == "ok" and gate.rel_err < 5e-2, gate.reason
    assert len(timed) == 3
    for r in timed:
        assert r.status == "ok", (r.case, r.reason)
        assert r.method == "graph" and r.gpus == gpus and r.measured_s > 0
        assert r.predicted_s > 0 and r.sm_clock_mhz is not None  # theory.tp and NVML
        # Two layers of 8B: launch-bound, so only a loose bound on the prediction.
        assert -0.5 < r.error < 20, (r.case, r.error)
