"""The alpha-beta cost of collectives over n GPUs, and the bandwidths nccl-tests reports.

A collective of message size S over n ranks, run by `algorithm`, costs

    time = alpha * steps + wire_bytes / link bandwidth

(Hockney's model: a fixed latency per step, then bytes at the link's rate), where `steps` is how
many times in a row a rank waits on its neighbour and `wire_bytes` is what each rank sends over
its link (each way at once: a link's bandwidth here is one direction's, see theory/hardware).

Message size S is the size nccl-tests prints (its PERFORMANCE.md): for all-reduce the buffer
each rank holds; for all-gather the gathered output (n chunks); for reduce-scatter the input
each rank holds (n chunks); for all-to-all each rank's send buffer; for send/recv the message.
Then, as nccl-tests defines them:

    algbw = S / time;  busbw = algbw * bus_factor(collective, n)

with bus factors 2(n-1)/n (all-reduce), (n-1)/n (all-gather, reduce-scatter, all-to-all) and 1
(send/recv): the share of S that crosses each rank's link in the bandwidth-optimal algorithm,
so busbw is comparable with the link bandwidth whatever n is.

Algorithms (Patarasuk & Yuan 2009 for the ring; Sanders, Speck & Traeff 2009 for the two trees
NCCL uses):
- ring: all-reduce is a reduce-scatter then an all-gather, 2(n-1) steps of S/n each, so
  wire_bytes = 2(n-1)/n * S; all-gather, reduce-scatter and all-to-all (pairwise exchange) take
  n-1 steps of S/n; send/recv (each rank to the next, as nccl-tests' sendrecv) one step of S.
  On a ring, wire_bytes = bus_factor * S: busbw is what each link carries per second.
- tree (all-reduce only, as in NCCL): a reduction up and a broadcast down two binary trees
  that each carry half the data: 2 * ceil(log2 n) steps; a rank is inner in one tree and a
  leaf in the other, so it sends S/2 up and 2 * S/2 down in the first and S/2 up in the
  second: wire_bytes = 2 S. Fewer steps than the ring, more bytes.

Alpha and the link bandwidth come from the datasheet (`Link.from_spec`: the link's one-way
bandwidth, and a nominal per-step latency) or from two send/recv probes (`calibrate_link`),
never from the case being predicted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from roofbench.theory.hardware import GpuSpec
from roofbench.theory.ops import dtype_bytes

COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "send_recv")
ALGORITHMS = ("ring", "tree")
# The collectives that reduce (add) what they receive.
REDUCING = ("all_reduce", "reduce_scatter")
# Collectives whose message is n equal chunks, one per rank: S must divide by n elements.
CHUNKED = ("all_gather", "reduce_scatter", "all_to_all")

# A nominal per-step latency where nothing was calibrated: the per-hop latency NCCL's own tuning
# model charges its low-latency (LL) protocol, 0.6 us over NVLink and 1.0 us over PCIe
# (src/graph/tuning.cc, hwLat). A prior, not a datasheet figure: `calibrate_link` measures it.
NOMINAL_ALPHA_S = {"NVLink": 0.6e-6, "PCIe": 1.0e-6}


def _check(collective: str, ranks: int) -> None:
    if collective not in COLLECTIVES:
        raise ValueError(f"unknown collective {collective!r} (known: {', '.join(COLLECTIVES)})")
    if not isinstance(ranks, int) or ranks < 1:
        raise ValueError(f"ranks must be a positive whole number, got {ranks!r}")


def bus_factor(collective: str, ranks: int) -> float:
    """nccl-tests' busbw / algbw: 2(n-1)/n, (n-1)/n or 1 (module docstring)."""
    _check(collective, ranks)
    if collective == "send_recv":
        return 1.0
    share = (ranks - 1) / ranks
    return 2 * share if collective == "all_reduce" else share


def algbw_bytes_per_s(size_bytes: float, time_s: float) -> float:
    """nccl-tests' algorithm bandwidth: S / time."""
    if time_s <= 0:
        raise ValueError(f"time must be positive, got {time_s}")
    return size_bytes / time_s


def busbw_bytes_per_s(collective: str, ranks: int, size_bytes: float, time_s: float) -> float:
    """nccl-tests' bus bandwidth: algbw * bus_factor."""
    return algbw_bytes_per_s(size_bytes, time_s) * bus_factor(collective, ranks)


def steps(collective: str, ranks: int, algorithm: str = "ring") -> int:
    """Latency-bound steps in a row: 2(n-1) for a ring all-reduce, n-1 for the other rings, 1
    for send/recv, 2 ceil(log2 n) for the tree all-reduce; 0 on one rank (nothing to send)."""
    _algorithm(collective, algorithm)
    _check(collective, ranks)
    if ranks == 1:
        return 0
    if algorithm == "tree":
        return 2 * math.ceil(math.log2(ranks))
    if collective == "send_recv":
        return 1
    return 2 * (ranks - 1) if collective == "all_reduce" else ranks - 1


def wire_bytes(collective: str, ranks: int, size_bytes: float, algorithm: str = "ring") -> float:
    """Bytes each rank sends over its link: bus_factor * S on a ring, 2 S on the tree."""
    _algorithm(collective, algorithm)
    if size_bytes < 0:
        raise ValueError(f"message size must not be negative, got {size_bytes}")
    if ranks == 1:
        return 0.0
    if algorithm == "tree":
        return 2.0 * size_bytes
    return bus_factor(collective, ranks) * size_bytes


def reduce_flops(collective: str, ranks: int, size_bytes: float, dtype: str) -> float:
    """Additions each rank performs: (n-1)/n of the elements of S for a reducing collective (each
    chunk is added to n-1 times over the ring, spread over the n ranks); 0 for the others."""
    _check(collective, ranks)
    if collective not in REDUCING:
        return 0.0
    return (ranks - 1) / ranks * size_bytes / dtype_bytes(dtype)


def _algorithm(collective: str, algorithm: str) -> None:
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r} (known: {', '.join(ALGORITHMS)})")
    if algorithm == "tree" and collective != "all_reduce":
        raise ValueError(f"NCCL runs {collective} on rings only; the tree is all-reduce's")


def algorithms(collective: str) -> tuple[str, ...]:
    """The algorithms the theory knows for `collective`."""
    return ALGORITHMS if collective == "all_reduce" else ("ring",)


@dataclass(frozen=True)
class Link:
    """What one rank's link does: a latency per step and a one-way bandwidth."""

    alpha_s: float
    bandwidth_bytes_per_s: float
    source: str = ""

    def __post_init__(self) -> None:
        if self.alpha_s < 0 or not self.bandwidth_bytes_per_s > 0:
            raise ValueError(f"need alpha >= 0 and bandwidth > 0, got {self}")

    @classmethod
    def from_spec(cls, spec: GpuSpec, alpha_s: float | None = None) -> Link:
        """The datasheet link of `spec` (theory.hardware) and a nominal per-step latency."""
        if not spec.link_gbps > 0:
            raise ValueError(f"{spec.name}: no link bandwidth is known (theory.hardware)")
        if alpha_s is None:
            kind = "NVLink" if spec.link.startswith("NVLink") else "PCIe"
            alpha_s = NOMINAL_ALPHA_S[kind]
        source = f"datasheet: {spec.link}, {spec.link_gbps:.0f} GB/s each way ({spec.link_source})"
        return cls(alpha_s, spec.link_gbps * 1e9, source)


@dataclass(frozen=True)
class CommPrediction:
    """One collective's predicted time and what it is made of."""

    collective: str
    algorithm: str
    ranks: int
    size_bytes: float
    steps: int
    wire_bytes: float
    latency_s: float  # alpha * steps
    transfer_s: float  # wire_bytes / bandwidth

    @property
    def time_s(self) -> float:
        return self.latency_s + self.transfer_s

    @property
    def bound(self) -> str:
        """`latency` when alpha * steps is the larger term, else `link`."""
        return "latency" if self.latency_s >= self.transfer_s else "link"

    @property
    def busbw_bytes_per_s(self) -> float:
        """The bus bandwidth this time implies (nccl-tests' definition)."""
        if self.time_s <= 0:
            return 0.0
        return busbw_bytes_per_s(self.collective, self.ranks, self.size_bytes, self.time_s)


def predict_with(
    collective: str, ranks: int, size_bytes: float, link: Link, algorithm: str = "ring"
) -> CommPrediction:
    """time = alpha * steps + wire_bytes / bandwidth for one algorithm."""
    n_steps = steps(collective, ranks, algorithm)
    wire = wire_bytes(collective, ranks, size_bytes, algorithm)
    return CommPrediction(
        collective,
        algorithm,
        ranks,
        size_bytes,
        n_steps,
        wire,
        link.alpha_s * n_steps,
        wire / link.bandwidth_bytes_per_s,
    )


def predict(collective: str, ranks: int, size_bytes: float, link: Link) -> CommPrediction:
    """The fastest algorithm the theory knows (NCCL's tuner picks by the same kind of model)."""
    options = [predict_with(collective, ranks, size_bytes, link, a) for a in algorithms(collective)]
    return min(options, key=lambda p: p.time_s)


@dataclass(frozen=True)
class Probe:
    """One timed collective used for calibration: its steps, wire bytes and time."""

    steps: int
    wire_bytes: float
    time_s: float


def calibrate_link(small: Probe, large: Probe, source: str = "") -> Link:
    """alpha and bandwidth from two probes, solving time = alpha * steps + wire / bandwidth for
    both exactly (two equations, two unknowns); alpha is clamped at 0 when noise makes it go
    negative, and then the bandwidth is the large probe's wire / time.

    The probes are their own measurements (send/recv at a tiny and a large size, say), not the
    cases predicted from the result.
    """
    det = small.steps * large.wire_bytes - large.steps * small.wire_bytes
    if det <= 0 or large.time_s <= 0 or small.time_s < 0:
        raise ValueError(f"probes do not determine alpha and bandwidth: {small}, {large}")
    alpha_s = (small.time_s * large.wire_bytes - large.time_s * small.wire_bytes) / det
    inv_bw = (small.steps * large.time_s - large.steps * small.time_s) / det
    if alpha_s < 0 or inv_bw <= 0:
        alpha_s = max(alpha_s, 0.0)
        inv_bw = (large.time_s - alpha_s * large.steps) / large.wire_bytes
        if inv_bw <= 0:
            alpha_s, inv_bw = 0.0, large.time_s / large.wire_bytes
    return Link(alpha_s, 1.0 / inv_bw, source or "calibrated from two probes")


def chunk_elements(collective: str, ranks: int, size_bytes: int, dtype: str) -> int:
    """Elements of the message S in `dtype`, which must divide into whole elements (and, for a
    chunked collective, n equal chunks); ValueError naming what does not divide."""
    _check(collective, ranks)
    elt = dtype_bytes(dtype)
    if size_bytes <= 0 or size_bytes % elt:
        raise ValueError(f"{size_bytes} B is not a whole number of {dtype} elements")
    count = size_bytes // elt
    if collective in CHUNKED and count % ranks:
        raise ValueError(f"{collective} of {count} {dtype} elements does not split over {ranks}")
    return count
