"""Every sub-command driven with generated arguments and corrupt input files: whatever it is
given, it exits 0, 1 or 2 with at most a one-line error (never a traceback), and it changes no
file that is not its job to write."""

import contextlib
import io
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roofbench.bench import cli

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "results" / "h200" / "20261201T211032Z"
CORRUPT = [
    b"",
    b"case,op\n",
    b"\xff\xfe\x00 not text",
    b'{"benchmarks": "x"}',
    b"[]",
    b'{"benchmarks": [{"name": "a"}]}',
    b"case,op,impl,dtype\nx,gemm,triton,bf16,extra,cells\n",
    (RUN / "records.csv").read_bytes()[:5000],  # cut mid-line
    b'{"hidden_size": "abc"}',
]
WORDS = ["--json", "--gpu", "h200", "l4", "nope", "--batch", "0", "-5", "9" * 30, "1e3", "64",
         "--prompt-tokens", "--context", "--dtype", "tf32", "int4", "--threshold", "-5%", "5",
         "--format", "markdown", "csv", "--ops", "gemv,conv", "--impls", "mine", "--model",
         "llama3-8b", "llama9", "--sweep", "huge", "--resume", "--retier"]  # fmt: skip


def call(argv: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as stop:  # argparse's own exit
            code = stop.code if isinstance(stop.code, int) else 2
    return code, err.getvalue()


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def area(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    for i, content in enumerate(CORRUPT):
        (root / f"bad{i}.csv").write_bytes(content)
        (root / f"bad{i}.json").write_bytes(content)
    shutil.copytree(RUN, root / "run")
    return root


def argv_strategy(area: Path):
    files = [str(p) for p in sorted(area.glob("bad*"))] + [str(area / "run" / "records.csv")]
    files += [str(area), str(area / "missing.csv")]
    token = st.sampled_from(WORDS) | st.sampled_from(files) | st.text(max_size=8)
    predict = st.lists(token, max_size=6).map(lambda a: ["predict", *a])
    compare = st.tuples(st.sampled_from(files), st.sampled_from(files), st.lists(token, max_size=4))
    compare = compare.map(lambda t: ["compare", t[0], t[1], *t[2]])
    report = st.sampled_from([str(area / "run"), str(area), str(area / "bad0.csv")]).map(
        lambda f: ["report", f, "--retier"]
    )
    listing = st.lists(st.sampled_from(["--json", "--plugin", *files]), max_size=3).map(
        lambda a: ["list", *a]
    )
    resume = st.sampled_from([str(area / "run"), str(area), "nowhere"]).map(
        lambda f: ["run", "--resume", f, "--out", str(area / "out")]
    )
    model = st.lists(token, max_size=3).map(lambda a: ["model", "--model", *a])
    return predict | compare | report | listing | resume | model


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_arguments_end_in_an_exit_code_and_at_most_one_line(area, data):
    argv = data.draw(argv_strategy(area))
    if argv[0] == "model" and "--model" in argv and len(argv) > 2 and argv[2] == "llama3-8b":
        argv = argv[:3]  # a valid model run is the slow path measured elsewhere
    before = tree(area)
    code, err = call(argv)
    assert code in (0, 1, 2), (argv, code, err)
    assert "Traceback" not in err, (argv, err)
    if code == 2:
        assert len([line for line in err.split("\n") if line.strip()]) <= 2, (argv, err)
    after = tree(area)
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    allowed = {k for k in changed if k.startswith(("out/", "predicted/"))}
    assert changed == allowed, (argv, sorted(changed - allowed))
