"""Compile the GEMV and the split-KV decode kernel for sm_90 on a machine without a GPU and print,
per launch configuration a plan declares, the bytes the plan says a program keeps in flight and
what the compiled kernel shows: its shared memory and whether it copies asynchronously (cp.async).

Run as a script in a process of its own, without TRITON_INTERPRET (the interpreter compiles
nothing). Prints one JSON object per line.
"""

from __future__ import annotations

import json
import os
import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

TARGET = GPUTarget("cuda", 90, 32)
SMS = 132  # an H100/H200
# Shapes whose plans take each of the GEMV's tilings and both decode block sizes.
GEMV_SHAPES = [(1, 4096, 4096), (1, 1024, 4096), (4, 4096, 4096), (4, 8192, 8192), (4, 14336, 4096)]
DECODE_SHAPES = [(1, 512), (1, 32768)]  # (batch, context) at 32 query and 8 KV heads of 128


def _compile(fn, types: dict, constexprs: dict, options: dict):
    """The kernel compiled for TARGET, with pointers and strides 16-divisible as a launch on
    contiguous tensors specializes them."""
    names = fn.arg_names
    signature = {n: types.get(n, "i32") for n in names} | {k: "constexpr" for k in constexprs}
    aligned = {
        (i,): [["tt.divisibility", 16]]
        for i, n in enumerate(names)
        if n.endswith("_ptr") or n.startswith("stride") or n in ("K", "N", "K_SPLIT")
    }
    fixed = {(names.index(k),): v for k, v in constexprs.items()}
    source = ASTSource(fn, signature, constexprs=fixed, attrs=aligned)
    return triton.compile(source, target=TARGET, options=options)


def _report(name, shape, tile, kernel, declared) -> None:
    ptx = kernel.asm["ptx"]
    line = {"kernel": name, "shape": shape, "tile": tile, "declared": declared,
            "shared": kernel.metadata.shared, "cp_async": "cp.async" in ptx}  # fmt: skip
    print(json.dumps(line), flush=True)


def gemv() -> None:
    from roofbench.kernels.gemv import _gemv_kernel
    from roofbench.kernels.gemv_plan import geometry, launch_plan

    types = {n: "*bf16" for n in _gemv_kernel.arg_names if n.endswith("_ptr")}
    types |= {"ss_ptr": "*fp32", "eps": "fp32"}
    plain = dict(NORM=False, BIAS=False, GLU=False, RESIDUAL=False, PDL=False, GAIN=False,
                 PACK_N=0, PACK_K=0)  # fmt: skip
    # Each shape's plan as launched; the first two again with the whole epilogue (the norm's
    # squares, its gain, SiLU x up, the residual), which must compile on both paths too; and
    # both paths on packed weights (`kernels.gemv_pack`: 4-row tiles of 512).
    epilogue = plain | dict(NORM=True, GAIN=True, GLU=True, RESIDUAL=True)
    packed = plain | dict(PACK_N=4, PACK_K=512)
    launches = [(shape, plain, "gemv") for shape in GEMV_SHAPES]
    launches += [((1, 4096, 4096), epilogue, "gemv_epilogue"), ((4, 4096, 4096), epilogue,
                 "gemv_epilogue")]  # fmt: skip
    launches += [((1, 6144, 4096), packed, "gemv_packed"), ((4, 6144, 4096), packed,
                 "gemv_packed")]  # fmt: skip
    for (m, n, k), flags, name in launches:
        glu, pack_k = flags["GLU"], flags["PACK_K"]
        g = geometry(m, n, k, 2, SMS, glu=glu, pack_k=pack_k)
        constexprs = dict(BLOCK_M=g.block_m, BLOCK_N=g.block_n, BLOCK_K=g.block_k,
                          EVEN_K=True, PARTIAL=g.split_k > 1, **flags)  # fmt: skip
        options = {"num_warps": g.params["num_warps"], "num_stages": g.params["num_stages"]}
        kernel = _compile(_gemv_kernel, types, constexprs, options)
        declared = launch_plan(m, n, k, 2, SMS, glu=glu, pack_k=pack_k).main.inflight_bytes
        _report(name, [m, n, k], [g.block_m, g.block_n, g.block_k], kernel, declared)


def decode() -> None:
    from roofbench.kernels.decode_attention import _decode_split_kernel, launch_plan, plan

    types = {"q_ptr": "*bf16", "k_ptr": "*bf16", "v_ptr": "*bf16", "lens_ptr": "*i32",
             "o_ptr": "*fp32", "lse_ptr": "*fp32", "qk_scale": "fp32"}  # fmt: skip
    for batch, context in DECODE_SHAPES:
        p = plan(batch, 8, context, SMS)
        lp = launch_plan(batch, 32, 8, context, 128, SMS)
        constexprs = dict(HEAD_DIM=128, BLOCK_D=128, BLOCK_H=lp.main.tile[0],
                          BLOCK_N=p["BLOCK_N"], DIRECT=p["num_splits"] == 1, PDL=False)  # fmt: skip
        options = {"num_warps": p["num_warps"], "num_stages": p["num_stages"]}
        kernel = _compile(_decode_split_kernel, types, constexprs, options)
        tile = list(lp.main.tile)
        _report("decode_split", [batch, context], tile, kernel, lp.main.inflight_bytes)


if __name__ == "__main__":
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("run without TRITON_INTERPRET: the interpreter never compiles", file=sys.stderr)
        sys.exit(2)
    gemv()
    decode()
