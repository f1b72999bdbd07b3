"""A user's kernel from one file, through every entry point: `roofbench list`, `roofbench run`,
`roofbench model` and `pytest bench`, with no roofbench file edited (CPU: predictions only)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_runner import roofbench

from roofbench.bench.core.records import read_records

ROOT = Path(__file__).resolve().parents[2]
WRONG = ROOT / "tests" / "plugins" / "wrong_decode.py"
CPU_ONLY = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only path")


def test_list_shows_the_plugin_its_origin_and_the_machine_verdicts():
    result = roofbench("list", "--plugin", str(WRONG), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    decode = next(op for op in data["ops"] if op["op"] == "decode_attention")
    by_name = {i["name"]: i for i in decode["impls"]}
    assert by_name["wrong"]["origin"] == str(WRONG) and by_name["wrong"]["available"]
    assert by_name["torch"]["baseline"] and not by_name["wrong"]["baseline"]
    if not torch.cuda.is_available():
        assert "CUDA" in by_name["sdpa_flash"]["reason"]


def test_a_bad_plugin_or_unknown_impl_is_one_line_and_exit_2(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("import no_such_module_here\n")
    result = roofbench("list", "--plugin", str(broken))
    assert result.returncode == 2 and "ModuleNotFoundError" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = roofbench("run", "--impls", "nope", "--out", str(tmp_path))
    assert result.returncode == 2 and "--impls: unknown nope" in result.stderr


@CPU_ONLY
def test_run_with_a_plugin_records_it_beside_the_built_in_ones(tmp_path):
    result = roofbench(
        "run", "--plugin", str(WRONG), "--ops", "decode_attention",
        "--impls", "wrong,triton,torch", "--out", str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    folder = Path(result.stdout.strip().splitlines()[-1])
    records = read_records(folder / "records.csv")
    assert {r.impl for r in records} == {"wrong", "triton", "torch"}
    assert {r.op for r in records} == {"decode_attention"}
    meta = json.loads((folder / "run.json").read_text())
    assert meta["plugins"] == [str(WRONG)]
    assert meta["baselines"] == {"decode_attention": "torch"}


@CPU_ONLY
def test_model_takes_per_op_choices_from_a_plugin(tmp_path):
    result = roofbench(
        "model", "--model", "llama3-8b", "--layers", "1", "--plugin", str(WRONG),
        "--impls", "torch,decode_attention=wrong,gemm=triton", "--out", str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    folder = Path(result.stdout.strip().splitlines()[-1])
    impls = {r.impl for r in read_records(folder / "model_records.csv")}
    assert impls == {"torch", "gemm=triton,decode_attention=wrong"}


@CPU_ONLY
def test_pytest_bench_collects_the_plugin():
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "bench", "--collect-only", "-q",
         "--plugin", str(WRONG), "--ops", "decode_attention", "--impls", "wrong"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:]
    ids = [line for line in result.stdout.splitlines() if "::test_kernel[" in line]
    assert ids and all(line.endswith("-wrong]") for line in ids)
    assert len(ids) == 9  # the quick sweep's decode cases


SLOWED = ROOT / "tests" / "plugins" / "slowed_gemv.py"


def test_the_slowed_plugin_replaces_our_gemv_and_still_passes_the_gate():
    from roofbench.kernels import catalog, check, registry
    from roofbench.kernels.catalog import get_impl, make_case

    real = get_impl("gemv", "triton")
    try:
        catalog.load_plugin(str(SLOWED))
        slowed = get_impl("gemv", "triton")
        assert slowed.origin == str(SLOWED) and slowed.prepare is not None
        assert "spin" in slowed.description
        case = make_case("gemv", m=3, n=129, k=1000, dtype="fp32")
        verdict = check.check(slowed, case, "cuda" if torch.cuda.is_available() else "cpu")
        assert verdict.ok, verdict.reason
    finally:  # the built-in GEMV back for the tests after this one
        registry._IMPLS["gemv"]["triton"] = real
