"""`roofbench comm` on GPUs: NCCL over as many GPUs as torch sees (up to 8), or one where there
is one (every collective's path, events and NVML, without a link to predict)."""

import json
import os
import subprocess
import sys

import pytest
import torch

from roofbench.bench.comm.cases import sizes
from roofbench.bench.core.records import read_records
from roofbench.theory import comm

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def gpus():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA GPUs; torch sees none")
    return min(torch.cuda.device_count(), 8)


def test_nccl_sweep_is_correct_timed_and_observed_on_every_gpu(gpus, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", str(gpus), "-m", "roofbench.bench.cli", "comm"]
    command += ["--max-bytes", "64M", "--time-cap", "0.1", "--out", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    (slug,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    (folder,) = list(slug.iterdir())
    meta = json.loads((folder / "run.json").read_text())
    assert meta["backend"] == "nccl" and meta["gpus"] == gpus
    assert meta["environment"]["NCCL_NVLS_ENABLE"] == "0"
    rows = read_records(folder / "records.csv")
    measured = [r for r in rows if r.status == "ok"]
    assert not [r for r in rows if r.status == "failed"], [r.reason for r in rows]
    # Every collective at every size of the quick sweep up to 64 MiB; send/recv needs two ranks.
    collectives = [c for c in comm.COLLECTIVES if gpus > 1 or c != "send_recv"]
    assert len(measured) == len(collectives) * len(sizes("quick", 2**26))
    for r in measured:
        assert r.max_abs_err == 0 and r.method == "events" and r.gpus == gpus
        assert r.sm_clock_mhz is not None and r.power_w is not None  # NVML of the GPUs
    if gpus > 1:
        assert meta["datasheet_link"]["bandwidth_bytes_per_s"] > 0
        big = [
            r
            for r in measured
            if r.op == "comm_all_reduce" and r.bytes == max(sizes("quick", 2**26))
        ]
        # The largest all-reduce: a bus bandwidth above 10% and below 110% of the link.
        assert 0.1 < big[0].roof_fraction < 1.1
