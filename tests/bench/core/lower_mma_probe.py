"""Compile the mma.sync probe's kernel for sm_90 on a machine without a GPU; one JSON line per
configuration: its label, the versionMajor of every nvidia_mma encoding of its TTGIR, and the
matrix instructions its PTX issues.

Run as a script in a process of its own, without TRITON_INTERPRET (under the interpreter a
`triton.jit` function is never compiled). `triton.compile` with an explicit target runs every
stage (TTIR, TTGIR, LLVM IR, PTX and the bundled ptxas) on the CPU, with the same compile-time
arguments and warps the probe launches it with.
"""

from __future__ import annotations

import json
import os
import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from roofbench.bench.core import mma_probe

TARGET = GPUTarget("cuda", 90, 32)
POINTERS = {"a_ptr": "*bf16", "b_ptr": "*bf16", "out_ptr": "*fp32"}


# The contrast's loop is short: Triton unrolls a wgmma loop of a constant trip count, and the
# compile time grows with it (26 s at the probe's 64 products); its encoding does not.
CONTRAST_ITERS = 2


def lowered(config: tuple[int, int, int, int], iters: int | None = None) -> dict:
    constexprs = mma_probe.constexprs(config) | ({"ITERS": iters} if iters else {})
    signature = POINTERS | dict.fromkeys(constexprs, "constexpr")
    source = ASTSource(mma_probe.mma_loop, signature, constexprs)
    kernel = triton.compile(source, target=TARGET, options={"num_warps": config[3]})
    return {
        "label": mma_probe.label(config),
        "versions": sorted(mma_probe.ttgir_mma_versions(kernel.asm["ttgir"])),
        "ptx": mma_probe.ptx_mma(kernel.asm["ptx"]),
    }


def main() -> int:
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("run without TRITON_INTERPRET: the interpreter never compiles", file=sys.stderr)
        return 2
    for config in mma_probe.SYNC_CONFIGS:
        print(json.dumps(lowered(config)))
    print(json.dumps(lowered(mma_probe.WGMMA_CONFIG, CONTRAST_ITERS)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
