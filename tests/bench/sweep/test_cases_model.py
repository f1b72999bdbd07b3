"""`roofbench run --model`: a model's cases are exactly its layer shapes and heads over the
sweep's axes; on a CPU the run writes predictions for them; a bad config is one line, exit 2,
from every command that takes a model."""

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from roofbench.bench import cli
from roofbench.bench.core.records import read_records
from roofbench.bench.sweep.cases import SWEEPS, sweep, sweep_label, takes_model
from roofbench.kernels.ops.gemm import FULL_M, GEMV_MAX_M, QUICK_M
from roofbench.kernels.spec import OpCase
from roofbench.theory.llm import MODELS, from_hf_config

QWEN2_05B = {
    "_name_or_path": "qwen2-0.5b",
    "model_type": "qwen2",
    "hidden_size": 896,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "intermediate_size": 4864,
    "vocab_size": 151936,
    "tie_word_embeddings": True,
}
LINEAR_OPS, ATTENTION_OPS = ("gemm", "gemv"), ("prefill_attention", "decode_attention")


@pytest.mark.parametrize("name", SWEEPS)
def test_the_cases_of_a_config_are_its_layer_shapes(name):
    model = from_hf_config(QWEN2_05B)
    cases = sweep(name, model=model)
    default = sweep(name)
    assert {c.op for c in cases} == {c.op for c in default}
    head = (model.vocab_size, model.hidden_size)  # the LM head: the GEMV's sweep only
    linear = [c for c in cases if c.op in LINEAR_OPS and (c.n, c.k) != head]
    assert {(c.n, c.k) for c in linear} == set(model.linear_shapes().values())
    ms = {"quick": QUICK_M, "full": FULL_M}[name]
    for n, k in model.linear_shapes().values():
        rows = sorted(c.m for c in linear if (c.n, c.k) == (n, k))
        assert rows == sorted(ms)  # every M of the sweep, once: GEMV up to 16, GEMM above
    assert all((c.op == "gemv") == (c.m <= GEMV_MAX_M) for c in linear)
    heads = [c for c in cases if c.op in LINEAR_OPS and (c.n, c.k) == head]
    assert {c.op for c in heads} == {"gemv"} and sorted(c.m for c in heads) == sorted(
        m for m in ms if m <= GEMV_MAX_M
    )
    assert all(c.source == "qwen2-0.5b lm_head" for c in heads)
    assert all(c.source.startswith("qwen2-0.5b ") for c in cases)
    for op in ATTENTION_OPS:
        mine = [c for c in cases if c.op == op]
        theirs = [c for c in default if c.op == op]
        assert {(c.heads, c.kv_heads, c.head_dim) for c in mine} == {(14, 2, 64)}
        # the same lengths and batches as the default sweep, at the model's heads
        assert sorted((c.batch, c.seq) for c in mine) == sorted((c.batch, c.seq) for c in theirs)
    assert len({c.id for c in cases}) == len(cases)


def test_shapes_two_layers_share_are_one_case_naming_both():
    model = MODELS["llama3-8b"]
    gemv = sweep("quick", ("gemv",), model)
    kv = [c for c in gemv if (c.n, c.k) == (1024, 4096)]
    assert kv and all(c.source == "llama3-8b k_proj, llama3-8b v_proj" for c in kv)
    # M = 1, 4, 16 of each layer shape and of the LM head
    assert len(gemv) == (len(set(model.linear_shapes().values())) + 1) * 3


def test_an_op_whose_sweep_takes_no_model_keeps_its_own_cases():
    class Plain(OpCase):
        @classmethod
        def sweep(cls, name):
            return []

    assert not takes_model(Plain)
    assert sweep_label("quick") == "quick"
    assert sweep_label("full", "cfg.json") == "full --model cfg.json"


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(list(argv))
        except SystemExit as stop:
            code = stop.code
    return code, out.getvalue(), err.getvalue()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU behaviour")
def test_run_model_on_a_cpu_writes_predictions_for_the_model_shapes(tmp_path):
    config = tmp_path / "qwen" / "config.json"
    config.parent.mkdir()
    config.write_text(json.dumps(QWEN2_05B))
    result = subprocess.run(
        [sys.executable, "-m", "roofbench.bench.cli", "run", "--model", str(config),
         "--ops", "gemv,decode_attention", "--impls", "torch", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    folder = Path(result.stdout.strip().splitlines()[-1])
    assert folder.parent.parent == tmp_path / "out" / "predicted"
    records = read_records(folder / "records.csv")
    model = from_hf_config(QWEN2_05B)
    expected = sweep("quick", ("gemv", "decode_attention"), model)
    assert sorted(r.case for r in records) == sorted(c.id for c in expected)
    lm_head = (model.vocab_size, model.hidden_size)
    shapes = {*model.linear_shapes().values(), lm_head}
    assert {(r.n, r.k) for r in records if r.op == "gemv"} == shapes
    assert {(r.heads, r.kv_heads, r.head_dim) for r in records if r.op != "gemv"} == {(14, 2, 64)}
    label = f"quick --model {config}"
    assert {r.sweep for r in records} == {label}
    assert json.loads((folder / "run.json").read_text())["sweep"] == label
    assert all(r.predicted_datasheet_s > 0 and r.status == "skipped" for r in records)


BAD = {**QWEN2_05B, "num_key_value_heads": 3}


@pytest.mark.parametrize(
    "argv",
    [
        ("run", "--ops", "gemv"),
        ("predict",),
        ("model", "--sweep", "quick"),
    ],
)
@pytest.mark.parametrize(
    "config,field",
    [
        (BAD, "num_key_value_heads"),
        ({**QWEN2_05B, "hidden_act": "gelu"}, "hidden_act"),
        ({**QWEN2_05B, "vocab_size": "151936"}, "vocab_size"),
        ({k: v for k, v in QWEN2_05B.items() if k != "intermediate_size"}, "intermediate_size"),
    ],
)
def test_a_config_the_decoder_cannot_build_is_one_line_from_every_command(
    tmp_path, argv, config, field
):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    code, out, err = (
        run_cli(*argv, "--model", str(path), "--out", str(tmp_path))
        if (argv[0] != "predict")
        else run_cli(*argv, "--model", str(path))
    )
    assert code == 2 and field in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1 and not list(tmp_path.glob("*/*/"))
