"""Launch configurations of the GEMM kernels (`gemm`'s descriptor kernel and `gemm_streamk`'s),
and the few candidates per shape that `gemm`'s tuner times at first use.

A configuration is a dict: BLOCK_M/N/K, GROUP_M, num_stages, num_warps; SPLIT_K (the two-kernel
split-K), SUBTILE (a halved epilogue), PERSISTENT (one program per SM) for the descriptor kernel;
STREAM_K with PER_TILE and SWAP_AB for `gemm_streamk`'s. Which one wins is measured, not
modelled: the docstrings below quote the measurements that put each candidate on its list.
"""

from __future__ import annotations

import triton

# Launch configurations of the descriptor kernel, timed per shape at first use:
# (BLOCK_M, BLOCK_N, BLOCK_K, num_stages, num_warps, SUBTILE, PERSISTENT).
# Measured on an H200 (bf16, Llama 3 8B projections, cold-L2 graph replay), ratio to cuBLAS:
# - M = 4096: persistent 128x256x64 (3 or 4 stages, halved epilogue) 0.97-1.03; the same tile
#   launched one program per tile 0.88-0.97; 128x128 tiles 0.80-0.95.
# - M = 512..2048 with N = 1024: few 128x256 tiles (0.3-0.6); 128x128 on 4 warps, 5 stages
#   0.55-0.96.
# - M = 129..256: the large-N shapes keep the persistent 128x256 and 128x128 tiles (0.94-1.03).
_WIDE3 = (128, 256, 64, 3, 8, True, True)
_WIDE4 = (128, 256, 64, 4, 8, True, True)
_TALL4 = (256, 128, 64, 4, 8, True, True)
_SQUARE = (128, 128, 64, 5, 4, False, True)
_THIN = (64, 128, 128, 4, 4, False, False)
_NARROW = (64, 64, 128, 6, 4, False, False)
# Shared memory the K-step ring of a small-M tile may fill (H100/H200: 227 KiB a block, less
# the epilogue's tile).
_RING_BYTES = 220_000
# A ring half as deep, so that two programs share an SM.
_HALF_RING_BYTES = 110_000


def as_config(bm, bn, bk, stages, warps, subtile, persistent, split=1, stream_k=False) -> dict:
    return {
        "STREAM_K": stream_k,
        "BLOCK_M": bm,
        "BLOCK_N": bn,
        "BLOCK_K": bk,
        "GROUP_M": 8,
        "SPLIT_K": split,
        "SUBTILE": subtile,
        "PERSISTENT": persistent,
        "num_stages": stages,
        "num_warps": warps,
    }


def _per_tile_config(
    bm, bn, bk, warps, per_tile=1, swap=False, stages=None, ring_bytes=_RING_BYTES
) -> dict:
    """A configuration of `gemm_streamk`'s kernel with `per_tile` programs per output tile (an
    in-kernel split-K where > 1); `stages` defaults to as many K steps as `ring_bytes` holds."""
    ring = stages or min(16, (ring_bytes - 4 * bm * bn) // ((bm + bn) * bk * 2))
    cfg = as_config(bm, bn, bk, ring, warps, False, False, stream_k=True)
    return {**cfg, "PER_TILE": per_tile, "SWAP_AB": swap}


def _on_streamk(shape: tuple, per_tile: int = 1) -> dict:
    """One of the tile shapes above (its tile, stages and warps) on `gemm_streamk`'s kernel."""
    bm, bn, bk, stages, warps = shape[:5]
    return _per_tile_config(bm, bn, bk, warps, per_tile, stages=stages)


def _splits(m: int, n: int, k: int, bm: int, bn: int, bk: int, sms: int) -> list[int]:
    """Programs per tile worth timing beside 1: the largest power of two s that keeps tiles * s
    within half the SMs, and 2s within all of them, each program keeping >= 4 K steps."""
    tiles = triton.cdiv(m, bm) * triton.cdiv(n, bn)
    steps = triton.cdiv(k, bk)
    s = 1
    while tiles * s * 2 <= sms // 2 and steps // (2 * s) >= 4:
        s *= 2
    out = [s] if s > 1 else []
    if tiles * s * 2 <= sms and steps // (2 * s) >= 4:
        out.append(2 * s)
    return out


def _few_tiles(m: int, n: int, k: int, sms: int) -> list[dict]:
    """Where 64x64 or 64x128 tiles fill under half the SMs (N = 1024 to M = 512, 4096 to 128), their
    two-kernel split-K on the descriptor kernel: its partials summed by a kernel on every SM.
    Measured on an H200 under the sweep's timer (M = 64-256, N = 1024, K = 4096-8192) it beat
    cuBLAS by 1-9%, where the in-kernel split (one finisher per tile) was 2-12% behind. At
    M = 257-512 it is offered but not yet measured: there the sweep's worst shape, 512 x 1024 x
    8192 (0.963-0.988 of cuBLAS), ran 64-128 tiles on 132 SMs without it."""
    out = []
    for shape in (_NARROW, _THIN):
        # the most programs per tile within the SMs (each >= 4 K steps), at most 16
        split = min(16, max([1, *_splits(m, n, k, *shape[:3], sms)]))
        if split > 1:
            out.append(as_config(*shape, split=split))
    return out


def _small_m(m: int, n: int, k: int, sms: int) -> list[dict]:
    """Candidates for M <= 256 (decode batches, short prompts), all on `gemm_streamk`'s kernel
    with one program per tile or an even in-kernel split-K. Measured on an H200 (bf16, Llama 3
    8B projections), best of these against cuBLAS:
    - M <= 64: swapping A and W (the weight rows fill the MMA's 64-row side, the tokens its
      16-64 wide side, as cuBLAS's kernels for these shapes do) with a deep ring of 128-wide K
      steps: M = 32 0.99-1.16 (one-tile-per-program 64x64 and 64x128 tiles: 0.86-1.02); a
      128-row weight tile on 8 warps wins at N = 14336 (1.08); N = 1024 needs 4 programs per
      tile (64 for 16 tiles: 0.99-1.03; 1: 0.82). Where the 64-row weight tiles make 1-2 waves
      (N = 14336: 224 tiles), a ring half as deep lets two programs share an SM, so the whole
      grid is resident at once: 30.2 and 30.8 us against 32.4 and 32.5 at M = 16 and 32 (K =
      4096; cuBLAS 29.9 and 31.3), under the sweep's timer.
    - M = 65..128: 64x64 and 64x128 tiles (1.01-1.14), 128x128 where N is large (1.01-1.04),
      and for N = 1024 two programs per tile (1.04 at K = 4096, 0.92 at K = 8192).
    Splitting every tile over the SMs (stream-K proper) lost 1.6-6 us of fix-up latency to these."""
    if m <= 64:
        tokens = min(64, max(16, triton.next_power_of_2(m)))
        out = [_per_tile_config(tokens, 64, 128, 4, swap=True)]
        if m <= 32:
            out.append(_per_tile_config(tokens, 128, 64, 8, swap=True))
            if sms < triton.cdiv(n, 64) <= 2 * sms:  # two programs an SM: no second wave
                half = _per_tile_config(tokens, 64, 128, 4, swap=True, ring_bytes=_HALF_RING_BYTES)
                out.append(half)
        else:
            out.append(_on_streamk(_THIN))
        out += [
            _per_tile_config(tokens, 64, 128, 4, s, swap=True)
            for s in _splits(m, n, k, tokens, 64, 128, sms)
        ]
        return out
    narrow = [_on_streamk(_NARROW, s) for s in [1, *_splits(m, n, k, *_NARROW[:3], sms)]]
    thin = _on_streamk(_THIN)
    if m <= 128:  # the square tile one program per tile, not persistent
        return [*narrow[:3], thin, _on_streamk(_SQUARE)]
    # one program per tile, and the most programs per tile _splits offers
    return [narrow[0], *narrow[1:][-1:], thin, as_config(*_WIDE4), as_config(*_SQUARE)]


def candidates(m: int, n: int, k: int, sms: int) -> list[dict]:
    """Descriptor-kernel launch configurations worth timing for [m, k] x [n, k]^T (<= 7)."""
    if m <= 256:
        return _small_m(m, n, k, sms) + _few_tiles(m, n, k, sms)
    if m >= 1024:
        shapes = [_WIDE3, _WIDE4, _TALL4, _SQUARE] + ([_THIN] if n <= 2048 else [])
        return [as_config(*c) for c in shapes]
    shapes = [_SQUARE, _WIDE4, _THIN, _NARROW]
    return [as_config(*c) for c in shapes] + _few_tiles(m, n, k, sms)
