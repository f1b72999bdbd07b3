"""Every Triton kernel of the project compiles (to Triton IR, for sm_90) on a CPU machine.

The interpreter the other CPU tests run kernels under never type-checks them as the compiler
does: the fused rotary kernel once passed every CPU test and failed to compile on the GPU.
`lower_all.py` runs in a process of its own, without the interpreter (see its docstring)."""

import os
import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).with_name("lower_all.py")
KERNEL_FILES = [
    Path(__file__).resolve().parents[2] / part
    for part in ("kernels/gemm.py", "kernels/gemm_streamk.py", "kernels/gemv.py",
                 "kernels/gemv_epilogue.py",
                 "kernels/decode_attention.py", "kernels/decode_rope_attention.py",
                 "kernels/attention.py", "kernels/fused.py",
                 "bench/core/probes.py")
]  # fmt: skip
# Device functions, called from the kernels and compiled with them.
HELPERS = {"_attn_blocks", "tile_coords", "_first_iteration", "_owner", "_slot", "_segment",
           "_store_tile", "_project", "silu_x_up", "_w_tile", "_step", "_fence",
           "_rotate"}  # fmt: skip


def _kernels_in_source() -> set[str]:
    """The functions under a @triton.jit in the project's kernel files."""
    names = set()
    for path in KERNEL_FILES:
        text = path.read_text()
        names |= set(re.findall(r"@triton\.jit\s*\ndef (\w+)\(", text))
    return names - HELPERS


def test_every_kernel_lowers_to_triton_ir_for_hopper(compile_script):
    done = compile_script(SCRIPT)
    lines = done.stdout.splitlines()
    failed = [line for line in lines if line.startswith("FAILED")]
    assert done.returncode == 0 and not failed, "\n".join(failed) or done.stderr[-3000:]
    lowered = {line.split()[1] for line in lines if line.startswith("ok ")}
    expected = _kernels_in_source()
    assert len(expected) >= 15 and lowered == expected, expected ^ lowered


def test_the_script_refuses_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 2 and "without TRITON_INTERPRET" in done.stderr
