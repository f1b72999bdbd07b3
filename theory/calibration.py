"""The constants of one GPU the tiered model runs on (`theory.tiers`), and the measured curves
among them, read at any point by `curve_value`.

Every constant comes from `roofbench calibrate` (a microbenchmark of this GPU) or from hardware
facts; none from the measured times of the cases the tiers predict.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import asdict, dataclass, fields

# Measured curves: (x field, y field). fixed: a streaming kernel of fixed_bytes[i] bytes took
# fixed_excess_s[i] beyond launch + bytes at the read roof. cta: a streaming read over
# cta_programs[i] programs reached cta_read_bytes_per_s[i] (empty: not probed).
CURVES = (("fixed_bytes", "fixed_excess_s"), ("cta_programs", "cta_read_bytes_per_s"))
CURVE_FIELDS = tuple(name for pair in CURVES for name in pair)
# Constants a calibration may lack (probed by later versions of `roofbench calibrate`): None.
OPTIONAL_FIELDS = ("mma_sync_flops",)


@dataclass(frozen=True)
class Calibration:
    """The constants of one GPU, from `roofbench calibrate` (or any source that states them)."""

    read_bytes_per_s: float
    write_bytes_per_s: float
    copy_bytes_per_s: float
    matmul_burst_flops: float
    matmul_sustained_flops: float
    launch_s: float  # one kernel, graph-replayed (the GPU-side floor)
    launch_stream_s: float  # one kernel launched from the host, back to back
    dram_latency_s: float  # one DRAM round trip, the bus nearly idle
    dram_latency_loaded_s: float  # one round trip with the bus as busy as a streaming kernel's
    exp2_per_clock_per_sm: float
    fma_per_clock_per_sm: float
    writeback_s: float  # the dirty-L2 write-back an events-timed read-only kernel pays
    sms: int
    sm_clock_hz: float  # the clock per-clock rates are taken at (the max SM clock)
    l2_bytes: float
    # bf16 dense matmul FLOP/s of the tensor cores driven by warp-level mma.sync (Ampere's MMA)
    # instead of Hopper's wgmma, burst as matmul_burst_flops; None where a calibration did not
    # probe it (the tiers then charge every kernel the wgmma-era peak).
    mma_sync_flops: float | None = None
    # The measured curves (see CURVES); empty where a calibration did not probe them.
    fixed_bytes: tuple[float, ...] = ()
    fixed_excess_s: tuple[float, ...] = ()
    cta_programs: tuple[float, ...] = ()
    cta_read_bytes_per_s: tuple[float, ...] = ()
    source: str = ""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in CURVE_FIELDS:
                bad = [v for v in value if not (isinstance(v, int | float) and v >= 0)]
                if bad:
                    raise ValueError(f"calibration {f.name} must hold numbers >= 0, got {bad[0]!r}")
            elif f.name in OPTIONAL_FIELDS and value is None:
                continue
            elif f.name != "source" and not (isinstance(value, int | float) and value >= 0):
                raise ValueError(f"calibration {f.name} must be a number >= 0, got {value!r}")
        for xs, ys in CURVES:
            if len(getattr(self, xs)) != len(getattr(self, ys)):
                raise ValueError(f"calibration {xs} and {ys} differ in length")
            if list(getattr(self, xs)) != sorted(set(getattr(self, xs))):
                raise ValueError(f"calibration {xs} must be strictly increasing")

    def to_dict(self) -> dict:
        """A JSON-ready dict: the curves as lists, as JSON reads them back."""
        out = asdict(self)
        return out | {name: list(out[name]) for name in CURVE_FIELDS}

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        names = {f.name for f in fields(cls)}
        missing = names - set(data) - {"source", *CURVE_FIELDS, *OPTIONAL_FIELDS}
        if missing:
            raise ValueError(f"calibration lacks {', '.join(sorted(missing))}")
        given = {k: v for k, v in data.items() if k in names}
        for name in CURVE_FIELDS:
            if name in given:
                if not isinstance(given[name], list | tuple):
                    raise ValueError(f"calibration {name} must be a list, got {given[name]!r}")
                given[name] = tuple(given[name])
        return cls(**given)


def curve_value(xs: tuple[float, ...], ys: tuple[float, ...], x: float) -> float:
    """y at `x` on a measured curve: linear in log(x) between the probed points, the end value
    beyond them (the caller decides what a curve means past its ends)."""
    if x <= xs[0]:
        return ys[0]
    if x >= xs[-1]:
        return ys[-1]
    i = bisect.bisect_right(xs, x)
    lo, hi = math.log(xs[i - 1]), math.log(xs[i])
    w = (math.log(x) - lo) / (hi - lo)
    return ys[i - 1] + w * (ys[i] - ys[i - 1])
