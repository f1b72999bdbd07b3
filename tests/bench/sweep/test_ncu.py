"""bench/sweep/ncu.py without a GPU or ncu: which cases are picked, the command, ncu's CSV read
back per kernel, the report's excess traffic, and a clear skip without ncu."""

import json

import pytest

from roofbench.bench.core.records import Record
from roofbench.bench.sweep import ncu, ncu_report

NCU_OUT = """==PROF== Connected to process 123
"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream","Block Size","Grid Size","Device","CC","Section Name","Metric Name","Metric Unit","Metric Value"
"0","123","python3","h","gemv_kernel","1","7","(128, 1, 1)","(64, 1, 1)","0","9.0","Command line profiler metrics","dram__bytes_read.sum","byte","33,620,000"
"0","123","python3","h","gemv_kernel","1","7","(128, 1, 1)","(64, 1, 1)","0","9.0","Command line profiler metrics","dram__bytes_write.sum","byte","8,192"
"0","123","python3","h","gemv_kernel","1","7","(128, 1, 1)","(64, 1, 1)","0","9.0","Command line profiler metrics","gpu__time_duration.sum","nsecond","9,500"
"1","123","python3","h","copy_kernel","1","7","(128, 1, 1)","(4, 1, 1)","0","9.0","Command line profiler metrics","gpu__time_duration.sum","nsecond","2,000"
==PROF== Disconnected from process 123
"""  # noqa: E501


def rec(case, impl="triton", op="gemv", nbytes=1e6, **kw):
    shape = {"m": 1, "n": 4096, "k": 4096} if op == "gemv" else {}
    fields = {"status": "ok", "measured_s": 1e-5} | kw
    return Record(case=case, op=op, impl=impl, dtype="bf16", bytes=nbytes, **shape, **fields)


def test_the_smallest_and_the_largest_case_of_each_impl_are_picked():
    records = [rec("a", nbytes=3), rec("b", nbytes=1), rec("c", nbytes=2), rec("d", "torch")]
    records.append(rec("e", status="failed"))
    picked = [(r.case, r.impl) for r in ncu.pick(records, 2)]
    assert sorted(picked) == [("a", "triton"), ("b", "triton"), ("d", "torch")]
    assert [(r.case) for r in ncu.pick(records, 1) if r.impl == "triton"] == ["a"]


def test_the_command_profiles_one_call_with_the_metrics_and_clocks_left_alone():
    cmd = ncu.command(rec("gemv/m1_n4096_k4096/bf16"), ("plug.py",))
    assert (
        cmd[0] == "ncu"
        and "--clock-control" in cmd
        and cmd[cmd.index("--clock-control") + 1] == "none"
    )
    assert cmd[cmd.index("--profile-from-start") + 1] == "off"
    assert set(cmd[cmd.index("--metrics") + 1].split(",")) == set(ncu.METRICS)
    spec = json.loads(cmd[-1])
    shape = {"dtype": "bf16", "m": 1, "n": 4096, "k": 4096}
    assert spec == {"op": "gemv", "impl": "triton", "shape": shape, "plugins": ["plug.py"]}


def test_ncus_csv_becomes_one_row_per_kernel_in_base_units():
    kernels = ncu.parse(NCU_OUT, rec("gemv/x", nbytes=33.6e6))
    assert [k.kernel for k in kernels] == ["gemv_kernel", "copy_kernel"]
    gemv = kernels[0]
    assert gemv.duration_s == pytest.approx(9.5e-6)
    assert (gemv.dram_read_bytes, gemv.dram_write_bytes) == (33_620_000, 8192)
    assert kernels[1].dram_read_bytes == 0.0
    assert ncu.parse("==PROF== nothing\n", rec("x")) == []


def test_the_report_shows_excess_traffic_from_ncu_and_from_gpm(tmp_path):
    # Timed: 33.6 MB in 10 us, 3360 GB/s; NVML's DRAM counters read 3700 GB/s.
    record = rec("gemv/x", nbytes=33.6e6, nvml_dram_gbps=3700.0, achieved_gbps=3360.0)
    kernels = ncu.parse(NCU_OUT, record)
    lines = ncu_report.section([record], kernels)
    row = next(line for line in lines if line.startswith("| `gemv/x`"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == "2" and cells[3] == "11.5"  # two kernels, 9.5 + 2 us
    moved = 33_620_000 + 8192
    assert float(cells[7]) == pytest.approx(moved / 33.6e6, abs=1e-3)
    assert float(cells[8]) == pytest.approx(3700 / 3360, abs=1e-3)
    assert ncu_report.section([record], []) == []


def test_without_ncu_the_cross_check_is_skipped_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(ncu.shutil, "which", lambda name: None)

    class Console:
        said = []

        def print(self, text):
            self.said.append(text)

    assert ncu.run_ncu(tmp_path, [rec("a")], Console()) == []
    assert "not on PATH" in (tmp_path / "ncu_skipped.txt").read_text()
    assert not (tmp_path / ncu.NCU_CSV).exists()


def test_ncu_csv_round_trips(tmp_path, monkeypatch):
    record = rec("gemv/m1_n4096_k4096/bf16")
    monkeypatch.setattr(ncu.shutil, "which", lambda name: "/bin/ncu")

    class Done:
        returncode, stdout, stderr = 0, NCU_OUT, ""

    monkeypatch.setattr(ncu.subprocess, "run", lambda *a, **k: Done())

    class Console:
        def print(self, text):
            pass

    rows = ncu.run_ncu(tmp_path, [record], Console())
    assert len(rows) == 2 and ncu.read_ncu(tmp_path) == rows
