"""The kernels a vendor library launches, observed once per case (never timed).

cuBLAS, cuDNN and SDPA's backends do not say which kernels they run. torch.profiler lists them:
each kernel's name and grid. That is all this module reads - not a duration, so nothing measured
here feeds a prediction's time. From the list, `observed_plan` builds the `theory.plan` plan the
tiered model charges: one launch and one fixed cost per kernel, and the tile a kernel's name
carries (cutlass-style `128x128x64`, cuDNN's `64x128x128`) where the grid agrees with it: the
grid must hold exactly the tiles that tile makes of the output, or a whole multiple of them (the
multiple is the split-K), in one of the two orientations (cuBLAS is column-major: its M is our
N). A tile the grid does not confirm (a persistent or stream-K kernel) is left undeclared.
The name also says which matrix instructions a kernel runs (`name_mma`): Ampere-era code
(FlashAttention 2, an `sm80` kernel) issues mma.sync even on Hopper, Hopper's own wgmma.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

from roofbench.theory.plan import KernelLaunch, LaunchPlan
from roofbench.theory.tiers import Work, output_tiles

TILE = re.compile(r"(?<![0-9])(\d{2,3})x(\d{2,3})x(\d{2,3})(?![0-9])")
# FlashAttention 2's kernels name their block shape in a template: Flash_fwd_kernel_traits<
# head dim, BLOCK_M, BLOCK_N, warps, ...> (its kernel_traits.h).
FLASH_TRAITS = re.compile(r"Flash_fwd_kernel_traits<\s*(\d+),\s*(\d+),\s*(\d+),")
# Kernels that run mma.sync on Hopper: FlashAttention 2's forward kernels (its sm80 code, which
# SDPA's flash backend runs on an H200; not the split-KV combine, which runs no MMA) and any
# kernel built for sm80. Those built for sm90, or naming wgmma, run wgmma.
MMA_SYNC = re.compile(r"\bflash_fwd_(splitkv_)?kernel\b|sm80(?![0-9])", re.IGNORECASE)
MMA_WGMMA = re.compile(r"sm90|wgmma", re.IGNORECASE)
NAME_CHARS = re.compile(r"[^A-Za-z0-9_]+")
MAX_NAME = 60


@dataclass(frozen=True)
class ObservedKernel:
    """One kernel of a profiler's list: its full name and grid (CTAs per dimension)."""

    name: str
    grid: tuple[int, ...] = ()


def short_name(name: str) -> str:
    """A kernel's name as one word: the function name without its return type, namespace or
    template arguments (`void at::native::foo<float>(...)` -> `foo`)."""
    base = name.split("(")[0].split("<")[0].strip()
    base = base.split()[-1] if base.split() else name
    base = base.rsplit("::", 1)[-1]
    word = NAME_CHARS.sub("_", base).strip("_") or "kernel"
    return word[:MAX_NAME]


def name_tile(name: str) -> tuple[int, ...]:
    """The first AxBxC block shape in a kernel's name, else FlashAttention 2's traits as
    (BLOCK_M, BLOCK_N, head dim), or ()."""
    match = TILE.search(name)
    if match:
        return tuple(int(g) for g in match.groups())
    flash = FLASH_TRAITS.search(name)
    if flash:
        head_dim, block_m, block_n = (int(g) for g in flash.groups())
        return (block_m, block_n, head_dim)
    return ()


def name_mma(name: str) -> str:
    """The matrix instructions a kernel's name says it runs: "sync" (FlashAttention 2's forward
    kernels, an sm80 kernel), "wgmma" (an sm90 or wgmma kernel, cuBLAS's nvjet_sm90), else ""
    (not known: the tiers charge it as before)."""
    if MMA_SYNC.search(name):
        return "sync"
    if MMA_WGMMA.search(name):
        return "wgmma"
    return ""


def with_named_mma(plan: LaunchPlan | None) -> LaunchPlan | None:
    """The plan with each kernel's `mma` read from its name where the plan does not give it
    (a record written before the plan's text carried it)."""
    if plan is None:
        return None
    kernels = tuple(
        k if k.mma else dataclasses.replace(k, mma=name_mma(k.name)) for k in plan.kernels
    )
    return dataclasses.replace(plan, kernels=kernels)


def confirmed_tile(work: Work, tile: tuple[int, ...], programs: int) -> tuple[tuple, int]:
    """(the tile as (BLOCK_M, BLOCK_N, rest...) in our orientation, splits) where the grid's
    `programs` are the tiles it makes (times a whole split), else ((), 1)."""
    if len(tile) < 2 or programs <= 0:
        return (), 1
    if work.kind == "matmul":
        # A column-major library computes C^T = W A^T: the name's first extent runs over our N.
        candidates = [(tile[1], tile[0]), (tile[0], tile[1])]
    elif work.kind == "attention" and work.q_len > 1:
        candidates = [(tile[0], tile[1]), (tile[1], tile[0])]
    elif work.kind == "attention" and work.kv_heads:  # decode: a group's heads are the rows
        candidates = [(tile[0], tile[1])]
    else:
        return (), 1
    counts = [output_tiles(work, bm, bn) for bm, bn in candidates]
    pairs = list(zip(candidates, counts, strict=True))
    for (bm, bn), count in pairs:  # one program per tile, in either orientation
        if programs == count:
            return (bm, bn, *tile[2:]), 1
    for (bm, bn), count in pairs:  # a whole multiple of the tiles: a split-K
        if count and programs % count == 0:
            return (bm, bn, *tile[2:]), programs // count
    return (), 1


def observed_plan(kernels: list[ObservedKernel], work: Work, declared: LaunchPlan | None):
    """The plan of the observed kernels, in launch order; the declared plan's partial bytes
    (our wrapper's copy into `out`) stay with its last kernel and the main kernel."""
    if not kernels:
        return None
    launches = []
    tile_found = False
    for kernel in kernels:
        programs = math.prod(kernel.grid) if kernel.grid else 0
        tile, splits = ((), 1)
        if not tile_found:
            tile, splits = confirmed_tile(work, name_tile(kernel.name), programs)
            tile_found = bool(tile)
        name, mma = short_name(kernel.name), name_mma(kernel.name)
        launches.append(KernelLaunch(name, kernel.grid, tile, splits, mma=mma))
    if declared is not None and declared.partial_bytes:
        main_index = next((i for i, k in enumerate(launches) if k.tile), 0)
        first, last = declared.kernels[0].partial_bytes, declared.kernels[-1].partial_bytes
        if len(launches) > 1:
            launches[-1] = _with_partial(launches[-1], last)
        launches[main_index] = _with_partial(launches[main_index], first)
    return LaunchPlan(
        tuple(launches),
        source="observed",
        notes=("kernels and grids as torch.profiler listed them",),
        exp_overlapped=declared.exp_overlapped if declared else False,
        exp_beside_pv=declared.exp_beside_pv if declared else False,
        alu_ops_per_score=declared.alu_ops_per_score if declared else 0.0,
    )


def _with_partial(kernel: KernelLaunch, partial_bytes: float) -> KernelLaunch:
    return dataclasses.replace(kernel, partial_bytes=partial_bytes)


def trace_kernels(trace: dict) -> list[ObservedKernel]:
    """The kernels of a chrome trace torch.profiler exported, in start order."""
    events = [e for e in trace.get("traceEvents", []) if e.get("cat") == "kernel"]
    events.sort(key=lambda e: e.get("ts", 0))
    out = []
    for event in events:
        grid = event.get("args", {}).get("grid") or ()
        out.append(ObservedKernel(str(event.get("name", "")), tuple(int(g) for g in grid)))
    return out


def observe(call: Callable[[], object]) -> list[ObservedKernel]:
    """The kernels one `call()` launches, as torch.profiler lists them."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        call()
        torch.cuda.synchronize()
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    try:
        prof.export_chrome_trace(path)
        with open(path) as f:
            return trace_kernels(json.load(f))
    finally:
        os.unlink(path)
