"""Weights packed for the GEMV: each program's tiles laid out one after another in memory.

In nn.Linear's [N, K] layout a GEMV program's [BLOCK_N, BLOCK_K] tile is BLOCK_N pieces of
BLOCK_K * element_size bytes, one row stride apart, so the SMs together keep many DRAM pages open
at once. Packed, the same tile is one contiguous block and a program's whole share of W is one
contiguous stream, as in a flat read (serving engines' pre-shuffled weight layouts do the same,
once, when weights load). The values and the products are unchanged; only addresses move.

Layout, for tiles of PACK_N rows x PACK_K columns: `data[i, j]` is the [PACK_N, PACK_K] tile of
rows `order[i * PACK_N : (i + 1) * PACK_N]` and columns `j * PACK_K : (j + 1) * PACK_K`, where
`order` is the row order the kernel reads (`kernels.gemv`: with `glu` gate row j and up row
N/2 + j alternate). Rows are padded with zeros to a multiple of `ROW_ALIGN`, columns to a
multiple of PACK_K, so that no load needs a mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton

ROW_ALIGN = 64  # the largest BLOCK_N the GEMV's plan uses (the tl.dot path's)
# Rows per tile: on an H200 4-row tiles made the Llama 3 8B decode step 1.0-1.4% faster than
# 8-row ones (one GEMV up to 7%); 16-row tiles were up to 6% slower per GEMV than 4.
PACK_N = 4
PACK_BYTES = 1024  # a tile row: the one-row GEMV's K step


@dataclass(frozen=True)
class PackedWeight:
    """W [n, k] packed in [pack_n, pack_k] tiles (module docstring); `glu` fixes the row order."""

    data: torch.Tensor  # [row_tiles, k_tiles, pack_n, pack_k], contiguous
    n: int
    k: int
    pack_n: int
    pack_k: int
    glu: bool

    @property
    def dtype(self) -> torch.dtype:
        return self.data.dtype

    @property
    def device(self) -> torch.device:
        return self.data.device

    @property
    def shape(self) -> tuple[int, int]:
        """The unpacked [n, k]."""
        return (self.n, self.k)

    @property
    def row_tile_stride(self) -> int:
        """Elements from one tile row to the next."""
        return self.data.stride(0)


def default_pack_k(element_size: int) -> int:
    """A tile row's elements: PACK_BYTES, the one-row GEMV's K step (`kernels.gemv_plan.plan`)."""
    return PACK_BYTES // element_size


def row_order(n: int, glu: bool) -> torch.Tensor:
    """The weight row the GEMV kernel reads at each slot s: s, or with `glu` gate row s // 2 at
    even s and up row n / 2 + s // 2 at odd s."""
    slots = torch.arange(n)
    if not glu:
        return slots
    return slots // 2 + (slots % 2) * (n // 2)


def pack(w: torch.Tensor, pack_n: int = PACK_N, pack_k: int | None = None, glu: bool = False):
    """W [n, k] (nn.Linear's layout) as a `PackedWeight` of [pack_n, pack_k] tiles. pack_k
    defaults to `default_pack_k`; the tensor-core path's shorter steps read parts of a tile."""
    if w.ndim != 2 or w.stride(1) != 1:
        raise ValueError(f"expected a [N, K] weight contiguous along K, got {tuple(w.shape)}")
    n, k = w.shape
    if glu and n % 2:
        raise ValueError(f"glu takes gate|up rows, an even number, got N={n}")
    pack_k = pack_k or default_pack_k(w.element_size())
    if ROW_ALIGN % pack_n or pack_k & (pack_k - 1):
        raise ValueError(f"pack_n must divide {ROW_ALIGN} and pack_k be a power of two")
    rows = triton.cdiv(n, ROW_ALIGN) * ROW_ALIGN
    cols = triton.cdiv(k, pack_k) * pack_k
    padded = torch.zeros((rows, cols), dtype=w.dtype, device=w.device)
    padded[:n, :k] = w[row_order(n, glu).to(w.device)]
    tiles = padded.view(rows // pack_n, pack_n, cols // pack_k, pack_k).transpose(1, 2)
    return PackedWeight(tiles.contiguous(), n, k, pack_n, pack_k, glu)


def unpack(p: PackedWeight) -> torch.Tensor:
    """The [n, k] weight back in nn.Linear's layout (for references and tests)."""
    rows, k_tiles = p.data.shape[:2]
    flat = p.data.transpose(1, 2).reshape(rows * p.pack_n, k_tiles * p.pack_k)[: p.n, : p.k]
    w = torch.empty((p.n, p.k), dtype=p.dtype, device=p.device)
    w[row_order(p.n, p.glu).to(p.device)] = flat
    return w
