"""Shared test set-up.

Without a CUDA device the Triton kernels run under Triton's CPU interpreter; the switch must be
set before `triton.jit` decorates any kernel, so it happens here, before any test module imports
`roofbench.kernels`.
"""

import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU; none is visible to torch")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def compile_script(tmp_path_factory):
    """Run a script of the tests' own in a Python process without the interpreter (which compiles
    nothing) and with a Triton cache of its own: `compile_script(path, timeout=300)` ->
    subprocess.CompletedProcess, its stdout and stderr captured as text."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path_factory.mktemp("triton-cache"))

    def run(script, timeout: float = 300):
        command = [sys.executable, str(script)]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)

    return run


@pytest.fixture(scope="session")
def compiled_json(compile_script):
    """`compiled_json(path, timeout=300)`: run a compile script as `compile_script` does, require
    it to exit 0, and return the JSON object each of its lines starting with "{" holds."""
    import json

    def run(script, timeout: float = 300) -> list[dict]:
        done = compile_script(script, timeout=timeout)
        assert done.returncode == 0, done.stderr[-3000:]
        return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]

    return run
