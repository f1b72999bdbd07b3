"""`roofbench predict` refuses what makes no sense, in one line, and says when a model does not
fit the GPU it is predicted on."""

import contextlib
import io
import json

import pytest

from roofbench.bench import cli


def call(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(["predict", *argv])
        except SystemExit as stop:
            code = stop.code
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    "argv,needle",
    [
        (("--context", "10", "--prompt-tokens", "100"), "shorter than the prompt"),
        (("--prompt-tokens", "9" * 400), "too large"),
        (("--batch", "9" * 200), "too large"),
        (("--dtype", "int8"), "invalid choice"),
    ],
)
def test_nonsense_is_one_line_and_exit_2(argv, needle):
    code, _, err = call(*argv)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1


def test_a_huge_batch_is_arithmetic_not_a_list():
    code, out, _ = call("--batch", "100000000000", "--json")
    assert code == 0 and json.loads(out)["batch"] == 100000000000


@pytest.mark.parametrize(
    "content,needle",
    [
        (b"\xff\xfe\x00bad", "not UTF-8"),
        (b'{"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4, '
         b'"intermediate_size": 96, "vocab_size": 97, "head_dim": "abc"}', "head_dim"),
    ],
)  # fmt: skip
def test_a_bad_config_names_its_problem(tmp_path, content, needle):
    path = tmp_path / "config.json"
    path.write_bytes(content)
    code, _, err = call("--model", str(path))
    assert code == 2 and needle in err and "Traceback" not in err


def test_a_model_too_big_for_the_gpu_is_said_so():
    code, out, err = call("--model", "llama3-405b", "--gpu", "l4", "--json")
    data = json.loads(out)  # the warning goes to stderr: stdout stays one JSON object
    assert code == 0 and data["fits_in_memory"] is False and "needs" in err
    assert data["memory_bytes_needed"] > 24e9
    code, out, _ = call("--model", "llama3-8b", "--gpu", "h200", "--json")
    assert json.loads(out)["fits_in_memory"] is True


def test_every_dtype_of_the_gpu_table_is_offered_tf32_too():
    assert call("--dtype", "tf32")[0] == 0
