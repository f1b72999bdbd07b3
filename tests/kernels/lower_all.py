"""Lower every Triton kernel of the project to Triton IR for sm_90, on a machine without a GPU.

Run as a script in a process of its own, without TRITON_INTERPRET: the interpreter runs a
kernel's Python body and never type-checks it as the compiler does, so a kernel can pass every
CPU test and still fail to compile on the GPU (a pointer of a block type on one side of an `if`
and a scalar one on the other, say). Here each wrapper is called on small CPU tensors with its
GPU code path; the launch it would make is captured instead of run (`JITFunction.run` replaced),
every candidate of a tuner included (the tuning timer launches each once, and each configuration
of a triton.autotune is captured); each captured launch
is then compiled by Triton's front end (AST to Triton IR, the step that raised that error) for an
H100/H200 target. Prints one line per kernel and specialization, and exits 1 if any failed.
"""

from __future__ import annotations

import inspect
import itertools
import os
import sys

import torch
import triton
from triton.backends import backends
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.runtime.autotuner import Autotuner
from triton.runtime.jit import JITFunction, mangle_type

TARGET = GPUTarget("cuda", 90, 32)
OPTIONS = ("num_warps", "num_stages")

captured: list[tuple[JITFunction, tuple, dict]] = []


def _capture(self, *args, grid, warmup, **kwargs):
    captured.append((self, args, kwargs))


def _capture_every_config(self, *args, **kwargs):
    """triton.autotune's run: each of its configurations captured (none benchmarked)."""
    for config in self.configs:
        self.fn.run(*args, **{**kwargs, **config.all_kwargs()})


def _launch_all() -> None:
    """Each wrapper on small inputs, through the branches the GPU takes."""
    from roofbench.bench.core import probes
    from roofbench.kernels import attention, decode_attention, fused, gemm, gemv, gemv_pack
    from roofbench.kernels import decode_rope_attention as rope_attention
    from roofbench.kernels._util import set_tuning_timer

    set_tuning_timer(lambda launch: (launch(), 1.0)[1])  # every candidate launched once
    bf16 = torch.bfloat16
    for m, n, k in ((1, 64, 4096), (3, 40, 256), (16, 32, 8192)):
        x, w = torch.randn(m, k, dtype=bf16), torch.randn(n, k, dtype=bf16)
        gemv.gemv(x, w)
        for split in (None, 2):  # the fused decoder's epilogues, in both passes of split-K
            config = {"SPLIT_K": split} if split else None
            norm, bias = torch.randn(k, dtype=bf16), torch.randn(n, dtype=bf16)
            gemv.gemv(x, w, config=config, norm=norm, bias=bias, glu=True)
            gemv.gemv(x, w, config=config, residual=torch.randn(m, n, dtype=bf16))
            gemv.gemv(x, w, config=config, rms=True)  # the gain folded into w
    a, w = torch.randn(100, 64, dtype=bf16), torch.randn(72, 64, dtype=bf16)
    gemm.gemm(a, w)  # the pointer kernel, as off a Hopper GPU
    for m, n, k in ((100, 72, 64), (64, 1024, 4096), (4096, 4096, 256)):  # split-K, subtiles
        a, w = torch.randn(m, k, dtype=bf16), torch.randn(n, k, dtype=bf16)
        gemm.gemm(a, w, config={"TMA": True})  # the descriptor kernels, every candidate
    a, w = torch.randn(64, 4096, dtype=bf16), torch.randn(1024, 4096, dtype=bf16)
    tile = {"TMA": True, "STREAM_K": False, "BLOCK_M": 64, "BLOCK_N": 128, "PERSISTENT": False}
    gemm.gemm(a, w, config={**tile, "SPLIT_K": 2})  # fp32 partials and their sum
    gemm.gemm(a, w, config={"TMA": True, "STREAM_K": True, "PER_TILE": 0})  # stream-K proper
    for b, s in ((1, 4096), (4, 100)):
        q = torch.randn(b, 8, 128, dtype=bf16)
        k, v = (torch.randn(b, 2, s, 128, dtype=bf16) for _ in range(2))
        decode_attention.decode_attention(q, k, v, torch.full((b,), s, dtype=torch.int32))
    for d, causal in ((128, True), (96, False)):
        q = torch.randn(1, 4, 64, d, dtype=bf16)
        k, v = (torch.randn(1, 2, 64, d, dtype=bf16) for _ in range(2))
        attention.attention(q, k, v, causal=causal)
    res, w = torch.randn(3, 256, dtype=bf16), torch.randn(256, dtype=bf16)
    fused.add_rms_norm(None, res, w, 1e-5)
    fused.add_rms_norm(torch.randn(3, 256, dtype=bf16), res, w, 1e-5)
    heads, kv_heads, dim = 4, 2, 64
    qkv = torch.randn(2 * 3, (heads + 2 * kv_heads) * dim, dtype=bf16)
    cos, sin = (torch.randn(16, dim // 2, dtype=bf16) for _ in range(2))
    fused.rope_kv_append(qkv, cos, sin, 2, heads, kv_heads)
    cache = torch.zeros(2, kv_heads, 16, dim, dtype=bf16)
    start = torch.tensor([2, 5], dtype=torch.int32)
    fused.rope_kv_append(qkv, cos, sin, 2, heads, kv_heads, start, cache, cache.clone())
    fused.silu_mul(torch.randn(3, 2 * 96, dtype=bf16))

    def rope_attend(batch, s_max, dim, pdl=False):  # several slices at batch 1, direct at 16
        qkv = torch.randn(batch, (8 + 2 * 2) * dim, dtype=bf16)
        tables = (torch.randn(s_max, dim // 2, dtype=bf16) for _ in range(2))
        k, v = (torch.randn(batch, 2, s_max, dim, dtype=bf16) for _ in range(2))
        at = torch.full((batch,), s_max - 1, dtype=torch.int32)
        rope_attention.rope_decode_attention(qkv, *tables, 8, 2, at, k, v, pdl=pdl)

    for batch, s_max, dim in ((1, 4096, 128), (16, 64, 96)):
        rope_attend(batch, s_max, dim)
    # the GPU's launches as programmatic dependents
    gemv.has_pdl = decode_attention.has_pdl = fused.has_pdl = lambda device: True
    rope_attention.has_pdl = lambda device: True
    rope_attend(1, 4096, 128, pdl=True)
    for m, split in itertools.product((1, 3), (None, 2)):  # both paths
        x, w = torch.randn(m, 4096, dtype=bf16), torch.randn(64, 4096, dtype=bf16)
        gemv.gemv(x, w, config={"SPLIT_K": split} if split else None, pdl=True)
    for b, s in ((1, 4096), (4, 100)):  # split-KV with its combine pass, and direct
        q = torch.randn(b, 8, 128, dtype=bf16)
        k, v = (torch.randn(b, 2, s, 128, dtype=bf16) for _ in range(2))
        lens = torch.full((b,), s, dtype=torch.int32)
        decode_attention.decode_attention(q, k, v, lens, pdl=True)
    fused.rope_kv_append(qkv, cos, sin, 2, heads, kv_heads, start, cache, cache.clone(), pdl=True)
    pack = gemv_pack.pack(torch.randn(64, 4096, dtype=bf16))
    for m in (1, 3):  # packed weights, both paths
        gemv.gemv(torch.randn(m, 4096, dtype=bf16), pack, pdl=True)
    x, out = torch.randn(4096), torch.empty(4)
    probes.read_sum[(4,)](x, out, BLOCK=1024, ITERS=1)
    probes.fill[(4,)](x, 1.0, BLOCK=1024, ITERS=1)
    probes.copy[(4,)](x, out, BLOCK=1024, ITERS=1)
    probes.dependent_rounds[(4,)](torch.zeros(4096, dtype=torch.int32), out, 1, ROUNDS=2, BLOCK=128)
    probes.exp2_chains[(4,)](x, out, ITERS=2, BLOCK=128)
    probes.fma_chains[(4,)](x, out, ITERS=2, BLOCK=128)


def _signature(fn: JITFunction, args: tuple, kwargs: dict) -> tuple[dict, dict]:
    bound = dict(zip(fn.arg_names, args, strict=False))
    bound.update({k: v for k, v in kwargs.items() if k in fn.arg_names})
    signature, constexprs = {}, {}
    for p in fn.params:
        value = bound.get(p.name, p.default if p.default is not inspect.Parameter.empty else None)
        if p.is_constexpr:
            signature[p.name], constexprs[p.name] = "constexpr", value
        else:
            signature[p.name] = mangle_type(value)
    return signature, constexprs


def lower(fn: JITFunction, args: tuple, kwargs: dict) -> None:
    """Triton IR of one launch; raises the compiler's error."""
    from triton._C.libtriton import ir

    signature, constexprs = _signature(fn, args, kwargs)
    backend = backends["nvidia"].compiler(TARGET)
    context = ir.context()
    ir.load_dialects(context)
    backend.load_dialects(context)
    options = backend.parse_options({k: v for k, v in kwargs.items() if k in OPTIONS})
    source = ASTSource(fn, signature, constexprs)
    codegen = backend.get_codegen_implementation(options)
    source.make_ir(TARGET, options, codegen, backend.get_module_map(), context)


def main() -> int:
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("run without TRITON_INTERPRET: the interpreter never compiles", file=sys.stderr)
        return 2
    JITFunction.run = _capture
    Autotuner.run = _capture_every_config
    _launch_all()
    failed, seen = 0, set()
    for fn, args, kwargs in captured:
        signature, constexprs = _signature(fn, args, kwargs)
        key = (fn.__name__, tuple(sorted((k, str(v)) for k, v in constexprs.items())))
        if key in seen:
            continue
        seen.add(key)
        try:
            lower(fn, args, kwargs)
            print(f"ok {fn.__name__} {dict(key[1])}")
        except triton.compiler.errors.CompilationError as err:
            failed += 1
            print(f"FAILED {fn.__name__} {dict(key[1])}: {str(err).splitlines()[-1]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
