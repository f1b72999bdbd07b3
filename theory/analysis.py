"""Arithmetic the reports draw from measured series and from theory: ridge M, the batch where
decode stops being memory-bound, growth exponents, the layers' share of a model's time.

Pure functions of numbers (no torch, no records): the sweep and model reports call them on
measured medians and on predictions alike, so both sides follow one rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from roofbench.theory import llm, ops
from roofbench.theory.llm import ModelConfig
from roofbench.theory.roofline import Roof

# Measured ridge: the first M whose time exceeds this multiple of the time at the smallest M
# (below the ridge a GEMM's time is flat in M: the weight read dominates).
RIDGE_TIME_FACTOR = 1.25
# Memory-bound batch: the first batch whose TBT exceeds this multiple of the batch-1 TBT.
KNEE_FACTOR = 1.25
# Growth exponents are fitted over this upper fraction of the swept lengths (at least 2 points).
FIT_UPPER_FRACTION = 0.5
MODEL_PHASES = ("ttft", "tbt", "naive_step")


def predicted_ridge_m(n: int, k: int, dtype: str, roof: Roof, max_m: int = 2**40) -> int | None:
    """Smallest M whose GEMM (M x K) @ (K x N) reaches the ridge intensity of `roof`.

    Intensity grows with M (the weight bytes are shared by more rows), so a bisection finds it.
    None when even `max_m` rows stay below the ridge (the weight shape is too small to ever be
    compute-bound on this roof).
    """
    return first_true(lambda m: ops.gemm(m, n, k, dtype).intensity >= roof.ridge, max_m)


def measured_ridge_m(times_by_m: dict[int, float]) -> int | None:
    """Smallest M whose time exceeds RIDGE_TIME_FACTOR x the time at the smallest M.

    None when the series stays flat (or has fewer than two points).
    """
    if len(times_by_m) < 2:
        return None
    ms = sorted(times_by_m)
    base_s = times_by_m[ms[0]]
    return next((m for m in ms[1:] if times_by_m[m] > RIDGE_TIME_FACTOR * base_s), None)


def first_true(holds: Callable[[int], bool], high: int) -> int | None:
    """The smallest n in 1..high where `holds` (monotone: false, then true) is true; None when
    it is false even at `high`. Bisection, so `holds` runs about log2(high) times."""
    if not holds(high):
        return None
    lo, hi = 1, high
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if holds(mid) else (mid + 1, hi)
    return lo


def fit_exponent(
    lengths: Sequence[float], times_s: Sequence[float | None], upper: float = FIT_UPPER_FRACTION
) -> float | None:
    """Least-squares slope of log(time) against log(length) over the largest lengths: the upper
    `upper` fraction of the points, at least 2. None with fewer than 2 usable points.

    slope = sum((x - x_mean)(y - y_mean)) / sum((x - x_mean)^2), x = ln length, y = ln time.
    """
    pairs = sorted(
        (n, t) for n, t in zip(lengths, times_s, strict=True) if n > 0 and t is not None and t > 0
    )
    if len(pairs) < 2:
        return None
    kept = pairs[-max(2, math.ceil(upper * len(pairs))) :]
    xs = [math.log(n) for n, _ in kept]
    ys = [math.log(t) for _, t in kept]
    x_mean, y_mean = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - x_mean) ** 2 for x in xs)
    if sxx == 0:
        return None
    return sum((x - x_mean) * (y - y_mean) for x, y in zip(xs, ys, strict=True)) / sxx


def memory_bound_batch(
    batches: Sequence[int], tbts_s: Sequence[float | None], factor: float = KNEE_FACTOR
) -> int | None:
    """The smallest batch whose TBT exceeds `factor` x the batch-1 TBT; None when batch 1 was
    not measured or no batch exceeds it."""
    times = {b: t for b, t in zip(batches, tbts_s, strict=True) if t is not None and t > 0}
    if 1 not in times:
        return None
    over = [b for b in sorted(times) if times[b] > factor * times[1]]
    return over[0] if over else None


def model_phase(
    config: ModelConfig, roof: Roof, op: str, batch: int, seq: int, dtype: str = "bf16"
) -> llm.Phase:
    """Theory's cost and time of one model measurement: `ttft` (a prefill of `seq` tokens),
    `tbt` (a decode step over `seq` cached tokens) or `naive_step` (`seq` tokens recomputed)."""
    if op == "ttft":
        return llm.prefill(config, roof, seq, batch, dtype)
    if op == "tbt":
        return llm.decode_step(config, roof, seq, batch, dtype)
    if op == "naive_step":
        return llm.naive_step(config, roof, seq, batch, dtype)
    raise ValueError(f"unknown phase {op!r} (known: {', '.join(MODEL_PHASES)})")


def predicted_knee_batch(
    config: ModelConfig, roof: Roof, context: int, max_batch: int = 8192, dtype: str = "bf16"
) -> int | None:
    """The same rule as `memory_bound_batch` on theory's TBT, over every batch 1..max_batch."""
    one = llm.decode_step(config, roof, context, 1, dtype).time_s
    return first_true(
        lambda b: llm.decode_step(config, roof, context, b, dtype).time_s > KNEE_FACTOR * one,
        max_batch,
    )


def compute_bound_batch(
    config: ModelConfig, roof: Roof, context: int, max_batch: int = 8192, dtype: str = "bf16"
) -> int | None:
    """The smallest batch whose decode step theory calls compute-bound on `roof`."""
    return first_true(
        lambda b: llm.decode_step(config, roof, context, b, dtype).bound == "compute", max_batch
    )


def layer_share(
    config: ModelConfig, roof: Roof, op: str, batch: int, seq: int, dtype: str = "bf16"
) -> float:
    """The share of theory's time that the layers take (the rest: embedding, final norm, LM
    head, launch): (t(2L) - t(L)) / t(L), L = config's layers, clamped to [0, 1]."""
    once = model_phase(config, roof, op, batch, seq, dtype).time_s
    doubled = config.with_layers(2 * config.num_layers)
    twice = model_phase(doubled, roof, op, batch, seq, dtype).time_s
    return min(1.0, max(0.0, (twice - once) / once))


def full_depth_estimate(measured_s: float, share: float, layers: int, full_layers: int) -> float:
    """A reduced-depth time scaled to full depth: the layer part (`share` of it) times
    full_layers / layers, the rest as measured."""
    return measured_s * ((1 - share) + share * full_layers / layers)
