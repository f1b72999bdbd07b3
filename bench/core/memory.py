"""The fit rule: whether an allocation estimated at `need` bytes should be made.

It is made only when need plus a margin is free (torch.cuda.mem_get_info, asked right before).
The margin covers what no estimate counts: cuBLAS's per-stream workspaces, a captured CUDA
graph's private pool, Triton's autotuning buffers, the caching allocator's 2 MiB rounding and
fragmentation, and the growth of the CUDA context; plus a share of the estimate itself, for the
temporaries an estimate (an upper one by design) may still miss. A kernel case whose
implementation allocates more than its inputs and outputs (a library's workspace, an expanded
copy) and runs out of memory is still recorded as skipped with torch's reason.
"""

from __future__ import annotations

FIT_MARGIN_BYTES = 2 * 2**30
FIT_ESTIMATE_SLACK = 0.05


def fit_margin_bytes(need_bytes: float) -> float:
    """The margin the fit rule keeps free beside an allocation of `need_bytes` (estimated)."""
    return FIT_MARGIN_BYTES + FIT_ESTIMATE_SLACK * need_bytes


def fits(free_bytes: float, need_bytes: float) -> bool:
    """The fit rule: `need_bytes` (estimated) plus its margin fit in `free_bytes` free."""
    return need_bytes + fit_margin_bytes(need_bytes) <= free_bytes


def fit_reason(what: str, free_bytes: float, need_bytes: float) -> str:
    """Why an allocation was not made: the need, the margin and the memory free, in GB."""
    return (
        f"needs ~{need_bytes / 1e9:.1f} GB ({what}) + {fit_margin_bytes(need_bytes) / 1e9:.1f} GB "
        f"margin, {free_bytes / 1e9:.1f} GB free"
    )
