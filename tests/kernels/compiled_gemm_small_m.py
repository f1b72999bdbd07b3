"""Compile every small-M candidate of `kernels.gemm` that runs on `gemm_streamk`'s kernel for
sm_90 on a machine without a GPU, and print what the compiled kernel shows: its shared memory,
the shape of its wgmma instructions and its spills to local memory.

Run as a script in a process of its own, without TRITON_INTERPRET: `warmup` compiles without
launching, against a stand-in driver that answers sm_90. Prints one JSON object per line.
"""

from __future__ import annotations

import json
import re

import torch
from sm90_driver import use_sm90

WGMMA = r"wgmma\.mma_async\.sync\.aligned\.m(\d+)n(\d+)k(\d+)"
# The decode batches and short prompts of the sweep, with the N and K of Llama 3 8B.
ROWS = (1, 16, 32, 48, 64, 100, 128, 200, 256)
SHAPES = ((1024, 4096), (1024, 8192), (4096, 4096), (14336, 4096), (28672, 8192))
SMS = 132  # an H100 SXM's or an H200's


def main() -> None:
    use_sm90()
    from roofbench.kernels import gemm, gemm_streamk
    from roofbench.kernels._util import TensorDescriptor

    seen = set()
    for m in ROWS:
        for n, k in SHAPES:
            for cfg in gemm.candidates(m, n, k, SMS):
                if not cfg["STREAM_K"]:
                    continue
                bm, bn, bk = cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["BLOCK_K"]
                split = gemm_streamk.per_tile(k, cfg)
                key = (bm, bn, bk, cfg["num_stages"], cfg["num_warps"], cfg["SWAP_AB"], split)
                if key in seen:
                    continue
                seen.add(key)
                a = torch.empty(m, k, dtype=torch.bfloat16)
                w = torch.empty(n, k, dtype=torch.bfloat16)
                c = torch.empty(m, n, dtype=torch.bfloat16)
                kernel = gemm_streamk._gemm_streamk_kernel.warmup(
                    TensorDescriptor(a, [m, k], [k, 1], [bm, bk]),
                    TensorDescriptor(w, [n, k], [k, 1], [bn, bk]),
                    TensorDescriptor(c, [m, n], [n, 1], [bm, bn]),
                    torch.empty(1), torch.zeros(1, dtype=torch.int32), m, n, k,
                    BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=cfg["GROUP_M"],
                    SWAP_AB=cfg["SWAP_AB"], SPLIT=split, num_warps=cfg["num_warps"],
                    num_stages=cfg["num_stages"], grid=(1,),
                )  # fmt: skip
                ptx = kernel.asm["ptx"]
                shapes = sorted({tuple(map(int, s)) for s in re.findall(WGMMA, ptx)})
                print(json.dumps({
                    "m": m, "cfg": cfg, "split": split, "shared": kernel.metadata.shared,
                    "wgmma": shapes, "local_stores": ptx.count("st.local"),
                }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
