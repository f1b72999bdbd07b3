"""`roofbench` through a subprocess, as a user runs it: figures, tables and one-line errors."""

import json

import pytest
from cli_runner import roofbench

SEED_ARGS = [
    "predict",
    "--model",
    "llama3-405b",
    "--gpu",
    "h100-sxm",
    "--prompt-tokens",
    "100000",
    "--context",
    "100000",
    "--no-causal",
    "--json",
]


def test_predict_json_reproduces_the_seed_prefill_and_decode_figures():
    result = roofbench(*SEED_ARGS)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["prefill"]["intensity"] == pytest.approx(190_000, rel=0.02)
    assert data["decode"]["intensity"] == pytest.approx(1.9, rel=0.02)
    assert data["kv_cache_bytes_per_token"] == 516_096
    assert data["prefill"]["bound"] == "compute" and data["decode"]["bound"] == "memory"
    for key in ("params", "weights_bytes", "ttft_s", "tbt_s", "tps", "latency_s"):
        assert data[key] > 0
    assert data["throughput_tokens_per_s"] == pytest.approx(1 / data["tbt_s"])
    for phase in ("prefill", "decode"):
        assert set(data[phase]) >= {"flops", "bytes", "intensity", "time_s", "bound"}


def test_predict_table_names_the_model_gpu_and_phases():
    result = roofbench("predict", "--model", "llama3-8b", "--gpu", "h200", "--batch", "8")
    assert result.returncode == 0, result.stderr
    for word in ("llama3-8b", "h200", "prefill", "decode", "TTFT", "TBT", "throughput"):
        assert word in result.stdout


def test_predict_reads_a_hugging_face_config(tmp_path):
    config = {
        "hidden_size": 2048,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "intermediate_size": 8192,
        "vocab_size": 128256,
        "head_dim": 64,
        "tie_word_embeddings": True,
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    result = roofbench("predict", "--model", str(path), "--gpu", "l4", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["kv_cache_bytes_per_token"] == 2 * 16 * 8 * 64 * 2


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--model", "gpt-17"], "unknown model"),
        (["--gpu", "rtx-9999"], "unknown GPU"),
        (["--batch", "0"], "--batch"),
        (["--prompt-tokens", "-5"], "--prompt-tokens"),
        (["--context", "ten"], "--context"),
        (["--generate", "0"], "--generate"),
        (["--dtype", "fp4"], "--dtype"),
        (["--model", "/nonexistent/config.json"], "cannot read"),
    ],
)
def test_bad_input_gives_one_line_and_exit_code_2(args, needle):
    result = roofbench("predict", "--gpu", "h100-sxm", *args)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert needle in lines[0] and "Traceback" not in result.stderr


def test_heads_that_do_not_divide_are_a_one_line_error(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps(
            {
                "hidden_size": 96,
                "num_hidden_layers": 2,
                "num_attention_heads": 6,
                "num_key_value_heads": 4,
                "intermediate_size": 8,
                "vocab_size": 10,
            }
        )
    )
    result = roofbench("predict", "--model", str(path), "--gpu", "h100-sxm")
    assert result.returncode == 2
    assert "not a multiple" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_unreadable_config_is_a_one_line_error(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{")
    result = roofbench("predict", "--model", str(path), "--gpu", "h100-sxm")
    assert result.returncode == 2
    assert "not valid JSON" in result.stderr and "Traceback" not in result.stderr
