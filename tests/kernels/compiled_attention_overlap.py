"""Compile `kernels.attention_hopper` (Gluon) for sm_90 on a machine without a GPU and print, per
configuration and head dimension, what the compiled kernel shows: its shared memory, the wgmma
instructions and the wait depths, the exp2 instructions and whether P went through shared memory.

Run as a script in a process of its own, without TRITON_INTERPRET. A Gluon launch asks the
active driver for the target and a stream; a stand-in answers sm_90 and `warmup` compiles
without launching. Prints one JSON object per line.
"""

from __future__ import annotations

import json
import re

import torch
from sm90_driver import use_sm90

WAIT = r"wgmma\.wait_group\.sync\.aligned\s+(\d+)"
SETMAXNREG = r"setmaxnreg\.(?:inc|dec)\.sync\.aligned\.u32\s+(\d+)"


def main() -> None:
    use_sm90()
    from roofbench.kernels import attention_hopper as H
    from roofbench.kernels import attention_hopper_ws as W

    if not H.HAS_GLUON:
        print(json.dumps({"gluon": False}))
        return
    for head_dim in H.HEAD_DIMS:
        q = torch.randn(1, 4, 512, head_dim, dtype=torch.bfloat16)
        kv = torch.randn(1, 2, 512, head_dim, dtype=torch.bfloat16)
        for cfg in H.configs():
            q_desc, k_desc, v_desc = H.descriptors(q, kv, kv, cfg["BLOCK_M"], cfg["BLOCK_N"])
            kernel = H._attn_fwd_overlap.warmup(
                q_desc, k_desc, v_desc, q, 0.1, 512, 4, 2, *q.stride()[:3],
                HEAD_DIM=head_dim, CAUSAL=True, BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"],
                K_STAGES=cfg["K_STAGES"], V_STAGES=cfg["V_STAGES"], Q_REGS=bool(cfg.get("Q_REGS")),
                num_warps=cfg["num_warps"], grid=(1,),
            )  # fmt: skip
            print(json.dumps(_facts(kernel, head_dim, cfg)), flush=True)
        for cfg in W.configs():
            q_desc, k_desc, v_desc = H.descriptors(q, kv, kv, 64, cfg["BLOCK_N"])
            kernel = W._attn_fwd_ws.warmup(
                q_desc, k_desc, v_desc, q, 0.1, 512, 4, 2, *q.stride()[:3],
                HEAD_DIM=head_dim, CAUSAL=True, BLOCK_N=cfg["BLOCK_N"],
                K_STAGES=cfg["K_STAGES"], V_STAGES=cfg["V_STAGES"],
                BATCH_MAJOR=cfg["BATCH_MAJOR"], Q_REGS=cfg["Q_REGS"],
                num_warps=4, maxnreg=W.MAXNREG, grid=(1,),
            )  # fmt: skip
            print(json.dumps(_facts(kernel, head_dim, cfg)), flush=True)


def _facts(kernel, head_dim: int, cfg: dict) -> dict:
    ptx = kernel.asm["ptx"]
    return {
        "head_dim": head_dim,
        "cfg": cfg,
        "shared": kernel.metadata.shared,
        "wgmma": ptx.count("wgmma.mma_async"),
        "waits": [int(w) for w in re.findall(WAIT, ptx)],
        "ex2": ptx.count("ex2.approx"),
        # Stores to shared memory at a computed address (data); a warp-specialized kernel also
        # writes its partitions' start words at fixed addresses, which are not counted.
        "st_shared": len(re.findall(r"st\.shared\S*\s+\[(?!global_smem\+\d+\])", ptx)),
        "setmaxnreg": sorted({int(r) for r in re.findall(SETMAXNREG, ptx)}),
    }


if __name__ == "__main__":
    main()
