"""`roofbench compare` on real files: it fails closed, names the runs, refuses two GPUs, and
prints every case id whole in each format."""

import json
import subprocess
from pathlib import Path

import pytest
from cli_runner import roofbench

from roofbench.bench.core.records import read_records

ROOT = Path(__file__).resolve().parents[2]
H200 = ROOT / "results" / "h200" / "baseline.csv"
H100 = ROOT / "results" / "h100-sxm" / "baseline.csv"


def compare(*args) -> subprocess.CompletedProcess:
    return roofbench("compare", *args)


@pytest.mark.parametrize(
    "content", ["", H200.read_text().splitlines()[0] + "\n", '{"benchmarks": []}']
)
def test_an_empty_new_run_fails(tmp_path, content):
    new = tmp_path / "new.csv"
    new.write_text(content)
    result = compare(H200, new)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "0 matched" in result.stdout


@pytest.mark.parametrize("content", ['{"benchmarks": "x"}', "[]", "\x00\xff\xfe"])
def test_a_file_of_the_wrong_shape_is_one_line_and_exit_2(tmp_path, content):
    new = tmp_path / "new.json"
    new.write_bytes(content.encode("latin-1"))
    result = compare(H200, new)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert str(new) in result.stderr


def test_two_gpus_are_refused_unless_asked_and_both_runs_are_named():
    refused = compare(H200, H100)
    assert refused.returncode == 2 and "NVIDIA H200" in refused.stderr
    allowed = compare(H200, H100, "--allow-other-gpu", "--allow-missing", "--format", "markdown")
    assert "gpu NVIDIA H200" in allowed.stdout and "gpu NVIDIA H100 80GB HBM3" in allowed.stdout


@pytest.mark.parametrize("fmt", ["markdown", "csv", "json", "table"])
def test_case_ids_are_never_cut(fmt):
    result = compare(H200, H200, "--format", fmt)
    assert result.returncode == 0, result.stderr
    if fmt == "table":  # folded over lines in a narrow terminal, but never cut short
        matched = len(read_records(H200))
        assert "…" not in result.stdout and f"{matched} matched" in result.stdout
        return
    assert "decode_attention/b64_s32768_h32_kv8_d128/bf16" in result.stdout
    if fmt == "json":
        data = json.loads(result.stdout)
        assert {c["verdict"] for c in data["cases"]} == {"same"}
