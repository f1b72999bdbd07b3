"""The tiered performance model: a kernel's time explained term by term.

Each tier adds one effect to the one below it (every term is a named function below, with its
formula and where it comes from):

- T0 the textbook roofline on the datasheet: launch + max(flops / peak, bytes / bandwidth).
- T1 the measured roofline: bytes read over the read roof plus bytes written over the write
  roof (`memory_s`), flops over the burst matmul peak, one launch floor.
- T2 + the fixed cost of a kernel (`fixed_s`: what a streaming probe kernel of the same bytes
  takes beyond launch + bytes at the read roof: first loads, ramp to full bandwidth, tail and
  drain) and, for the events timer, the dirty-L2 write-back its flush leaves to the timed kernel
  (`writeback_s`).
- T3 + the implementation's declared (or observed) launch plan: one launch floor and one fixed
  cost per kernel, and the traffic of the partial results passed between them (`partials_s`).
- T4 + power: the compute rate between the burst and the sustained (power-capped) matmul peak,
  by how busy the timing method keeps the GPU (`duty`, `compute_rate`).
- T5 tiles and waves: the whole tiles a kernel executes (edge tiles of a GEMM, the causal
  diagonal of attention, a decode tile's rows beyond the GQA group it holds), their schedule
  on the SMs (`makespan_s`), the read bandwidth its programs' bytes in flight reach
  (`concurrency_s`, where the calibration probed it and the plan declares them), and for
  attention one exp2 per executed score on the special-function unit, in series with the
  tensor cores unless the plan declares them overlapped, or overlapped with the P V half of the
  products only (`exp_s`); and the tensor cores' rate
  of a kernel known to run mma.sync, not wgmma, from the calibration's mma.sync peak
  (`tensor_rate`).
- T6 the per-score ALU work an implementation declares in its plan (`alu_s`).

Parameters come only from the calibration (`roofbench calibrate`: microbenchmarks of this GPU),
hardware facts (SM count, L2 size, clocks) and plans an implementation declares from its own
code. Never from the measured times of the cases being predicted: nothing here is fitted, and a
test predicts one committed sweep with the constants of another. Where a tier misses, the
residual is the missing term, and the report says which rows miss most.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

from roofbench.theory.calibration import Calibration, curve_value
from roofbench.theory.ops import OpCost
from roofbench.theory.plan import LaunchPlan
from roofbench.theory.roofline import Roof

# Bumped when a tier's formula changes, so a committed run's tiers are reproduced only by the
# model that wrote them (run.json's tiers_model; runs without it are model 1).
# 2: a fixed cost per kernel of the plan, from the calibration's probed curve; T5's memory side
# (the bandwidth a grid of few programs reaches) where the calibration probed it.
# 3: that bandwidth from the bytes in flight (programs x the bytes each declares in flight),
# not from the programs alone; a kernel that declares none is charged no such term.
# 4: T5's tensor-core rate of a kernel known to run mma.sync from the calibration's mma.sync
# peak; a calibration without it, or a kernel not known to, predicts as model 3.
MODEL_VERSION = 4
TIERS = ("T0", "T1", "T2", "T3", "T4", "T5", "T6")
TERMS = ("launch", "fixed", "writeback", "memory", "compute", "exp", "alu")
# Without a measured fixed-cost curve (calibrations older than the probe), a kernel's fixed cost
# is taken as two loaded DRAM round trips: its first loads and its last stores draining.
FIXED_ROUND_TRIPS = 2
# A timed schedule simulates at most this many work items; beyond, waves are counted evenly.
MAX_SCHEDULED_ITEMS = 200_000


@dataclass(frozen=True)
class Work:
    """What the tiers need of one case: its cost, and the shape family its tiles come from.

    kind "matmul": C[m, n] = A[m, k] W[n, k]^T; "attention": batch x heads query rows q_len
    each over kv_len keys of head_dim (causal: query i of the last q_len sees kv_len - q_len + i
    + 1 keys), `kv_heads` K/V heads (0: as many as heads) shared by groups of heads; "stream":
    anything else (only its bytes and flops count).
    """

    cost: OpCost
    kind: str = "stream"
    m: int = 0
    n: int = 0
    k: int = 0
    batch: int = 0
    heads: int = 0
    q_len: int = 0
    kv_len: int = 0
    head_dim: int = 0
    causal: bool = False
    kv_heads: int = 0

    @property
    def group(self) -> int:
        """Query heads per K/V head (1 without GQA)."""
        return self.heads // self.kv_heads if self.kv_heads else 1

    def __post_init__(self) -> None:
        if self.kind not in ("matmul", "attention", "stream"):
            raise ValueError(f"work kind must be matmul, attention or stream, got {self.kind!r}")


@dataclass(frozen=True)
class Tiered:
    """The prediction at every tier (seconds), the top tier's seconds by term, its bound, and
    the roofline time a measurement must not beat (the T1 roof without launch)."""

    tiers: dict[str, float]
    terms: dict[str, float]
    bound: str
    roof_s: float

    @property
    def time_s(self) -> float:
        return self.tiers[TIERS[-1]]


# --- the terms ---------------------------------------------------------------------------------


def memory_s(bytes_read: float, bytes_written: float, cal: Calibration) -> float:
    """Streaming time with separate roofs: bytes_read / read roof + bytes_written / write roof.

    Reads and writes share the DRAM bus, so their times add; a copy of N bytes then takes
    N / read + N / write, which is what the copy roof measures (within a few percent on H200).
    """
    return bytes_read / cal.read_bytes_per_s + bytes_written / cal.write_bytes_per_s


def fixed_s(bytes_moved: float, cal: Calibration) -> float:
    """The fixed cost of one kernel moving `bytes_moved` bytes: what the calibration's streaming
    probe kernel of that size took beyond launch + bytes / read roof (its first loads, the ramp
    to full bandwidth, the last wave's tail and the stores draining), interpolated linearly in
    log(bytes) between the probed sizes and flat beyond them. DESIGN ("Where the time goes")
    found 3-7 us of this on GEMV and decode kernels of the H200.

    A calibration without the probe: FIXED_ROUND_TRIPS loaded DRAM round trips.
    """
    if not cal.fixed_bytes:
        return FIXED_ROUND_TRIPS * cal.dram_latency_loaded_s
    return curve_value(cal.fixed_bytes, cal.fixed_excess_s, bytes_moved)


def probe_inflight_bytes(cal: Calibration) -> float:
    """Bytes one program of the concurrency probe keeps in flight, by Little's law: its rate
    alone times one DRAM round trip with the bus nearly idle, cta_read_bytes_per_s[0] /
    cta_programs[0] * dram_latency_s (0 where the curve was not probed)."""
    if not cal.cta_programs:
        return 0.0
    return cal.cta_read_bytes_per_s[0] / cal.cta_programs[0] * cal.dram_latency_s


def read_bandwidth(programs: int, cal: Calibration, inflight_bytes: float = 0.0) -> float:
    """Bytes per second a streaming read of `programs` programs (CTAs), each keeping
    `inflight_bytes` of loads in flight, reaches.

    Little's law: a read's bandwidth is the bytes in flight across the GPU over the round-trip
    latency, up to the read roof. The calibration's concurrency probe measured bandwidth
    against bytes in flight: P programs of `probe_inflight_bytes` each. A kernel sits at the
    probe's point of equal bytes in flight, P_eq = programs x inflight_bytes /
    probe_inflight_bytes: linear in log(P_eq) between the probed counts, proportional to P_eq
    below the smallest, the read roof from the largest on. The read roof (no term) where the
    curve was not probed, or the kernel declares no grid or no bytes in flight (a library's
    kernels: their pipelines are not known here).

    On an H200 the probe's programs kept ~6.6 KB in flight each (20 GB/s alone, 0.33 us round
    trip); our split-KV decode's 128 programs keep 96-192 KiB each and read at the roof, which a
    curve in programs alone (2.2 TB/s at 128 programs) missed by up to 2x (model 2).
    """
    per_probe = probe_inflight_bytes(cal)
    if programs <= 0 or inflight_bytes <= 0 or per_probe <= 0:
        return cal.read_bytes_per_s
    counts, rates = cal.cta_programs, cal.cta_read_bytes_per_s
    equivalent = programs * inflight_bytes / per_probe
    if equivalent < counts[0]:
        rate = rates[0] * equivalent / counts[0]
    elif equivalent >= counts[-1]:
        rate = cal.read_bytes_per_s
    else:
        rate = curve_value(counts, rates, equivalent)
    return min(rate, cal.read_bytes_per_s)


def plan_fixed_s(cost: OpCost, plan: LaunchPlan | None, cal: Calibration) -> float:
    """One fixed cost per kernel of the plan: its main kernel moves the op's bytes, each other
    one its partial results (a split reduction, the reference's copy into `out`)."""
    if plan is None:
        return fixed_s(cost.bytes_, cal)
    main = plan.main
    others = [k for k in plan.kernels if k is not main]
    return fixed_s(cost.bytes_, cal) + sum(fixed_s(k.partial_bytes, cal) for k in others)


def writeback_s(bytes_written: float, method: str, cal: Calibration) -> float:
    """The dirty-L2 write-back the events timer's flush leaves to the timed kernel, beyond the
    kernel's own writes: max(0, writeback_s - bytes_written / write roof).

    The flush leaves L2 full of dirty lines; the kernel's traffic evicts them, so its DRAM
    writes are at least that write-back. Its own writes replace the flush's lines in L2, so the
    time its writes take is max(own writes, write-back), not their sum: ~16 us extra for a
    read-only kernel on the H200, ~0 for one that writes about L2's bytes or more (DESIGN,
    "Where the time goes"). Graph replay rotates inputs without a flush: 0.
    """
    if method != "events":
        return 0.0
    return max(0.0, cal.writeback_s - bytes_written / cal.write_bytes_per_s)


def partials_s(plan: LaunchPlan | None, cal: Calibration) -> float:
    """Traffic of the partial results between a plan's kernels: each partial byte written once
    by one kernel and read once by the next (plan.partial_bytes counts both sides)."""
    if plan is None or not plan.partial_bytes:
        return 0.0
    half = plan.partial_bytes / 2
    return memory_s(half, half, cal)


def launches(plan: LaunchPlan | None) -> int:
    """Kernels per call: the plan's, or one where the implementation declares none."""
    return plan.launches if plan is not None else 1


def duty(busy_s: float, method: str, idle_gap_s: float) -> float:
    """The fraction of the timed window the GPU computes: 1 for graph replay (back to back),
    busy / (busy + idle gap) for the events timer (the flush and hold between calls)."""
    if method != "events" or busy_s <= 0:
        return 1.0
    return busy_s / (busy_s + idle_gap_s)


def compute_rate(load: float, cal: Calibration) -> float:
    """FLOP/s of the tensor cores at duty `load`: burst + (sustained - burst) x load.

    A first-order model of the power cap: average power grows with the duty, and the clock the
    cap allows falls with it; at duty 1 the sustained (power-capped) peak, at 0 the burst one.
    """
    return cal.matmul_burst_flops + (cal.matmul_sustained_flops - cal.matmul_burst_flops) * load


def tensor_rate(rate: float, plan: LaunchPlan | None, cal: Calibration) -> float:
    """FLOP/s of the tensor cores at T5: `rate` (T4's, by duty between the burst and sustained
    peaks of wgmma-era matmul) for a kernel of wgmma or unknown MMA; for one whose main kernel
    runs mma.sync, the calibrated mma.sync peak scaled by the same duty, rate x mma_sync_flops
    / matmul_burst_flops.

    On Hopper the warp-level mma.sync that Ampere-era kernels issue (FlashAttention 2, cuDNN's
    sm80 kernels) tops out well below wgmma: about 0.6-0.66x on similar parts. The calibration
    times it in a loop of mma.sync on operands held in registers, burst as the wgmma-era burst
    peak; the power cap is taken to pull both down by the same fraction (first order: the
    clock it allows falls with the duty, whatever instruction keeps the tensor cores busy).
    Without the probe, or for a kernel not known to run mma.sync: `rate`.
    """
    if plan is None or plan.main.mma != "sync" or not cal.mma_sync_flops:
        return rate
    return rate * cal.mma_sync_flops / cal.matmul_burst_flops


def makespan_s(item_times_s: list[float], workers: int) -> float:
    """Finish time of items run longest first on `workers` SMs, each taking the next free one
    (a greedy list schedule, as a persistent or longest-first launch order runs them)."""
    if not item_times_s:
        return 0.0
    if len(item_times_s) > MAX_SCHEDULED_ITEMS:
        total = sum(item_times_s)
        return max(total / workers, max(item_times_s))
    finish = [0.0] * min(workers, len(item_times_s))
    heapq.heapify(finish)
    for t in sorted(item_times_s, reverse=True):
        heapq.heappush(finish, heapq.heappop(finish) + t)
    return max(finish)


def output_tiles(work: Work, block_m: int, block_n: int) -> int:
    """Programs a one-program-per-tile grid launches: ceil(M / BM) x ceil(N / BN) output tiles
    of a GEMM; for attention, ceil(q_len / BM) query blocks per (batch, head); for decode (one
    query) ceil(group / BM) blocks per (batch, K/V head): a group's query heads are the rows
    of one tile, as our split-KV kernel, cuDNN's and FlashAttention 2's decode grids show (a
    grid of batch x K/V heads programs, each split of the keys one more)."""
    if work.kind == "matmul":
        return math.ceil(work.m / block_m) * math.ceil(work.n / block_n)
    if work.kind == "attention":
        if work.q_len == 1:
            return math.ceil(work.group / block_m) * work.batch * (work.kv_heads or work.heads)
        return math.ceil(work.q_len / block_m) * work.batch * work.heads
    raise ValueError(f"{work.kind} work has no output tiles")


def matmul_items(work: Work, plan: LaunchPlan | None) -> tuple[list[float], float] | None:
    """(flops of each work item, total flops executed) of a GEMM plan's main kernel: whole
    tiles of BLOCK_M x BLOCK_N over K / split (edge tiles computed whole); for a stream-K
    schedule the same tiles' flops dealt evenly, one item per program; None without a
    declared tile."""
    if plan is None or len(plan.main.tile) < 2:
        return None
    main = plan.main
    bm, bn = main.tile[0], main.tile[1]
    tiles = output_tiles(work, bm, bn)
    if main.schedule == "stream-k" and main.programs:
        total = 2.0 * bm * bn * work.k * tiles
        return [total / main.programs] * main.programs, total
    split = max(1, main.splits)
    per_item = 2.0 * bm * bn * work.k / split
    return [per_item] * (tiles * split), per_item * tiles * split


def attention_items(work: Work, plan: LaunchPlan | None) -> list[float] | None:
    """Scores computed per work item, where the plan declares its tile; None otherwise, and the
    exact pairs are then spread evenly over the SMs (`scores`): an undeclared schedule is not
    ours to quantise.

    Prefill (q_len > 1): one query block of one head per item, whole BLOCK_M x BLOCK_N tiles up
    to the causal diagonal. Decode (one query): one item per (batch, K/V head, block of the
    group's heads, split of the keys), each BLOCK_M x BLOCK_N x ceil(kv_len / (splits x
    BLOCK_N)) scores: the tile's rows are computed whole however few heads the group fills
    (FlashAttention 2's 128 rows for a group of 4 run 32x the exact scores on the tensor cores
    and the exp unit)."""
    tile = plan.main.tile if plan is not None else ()
    if len(tile) < 2 or work.q_len < 1:
        return None
    bm, bn = tile[0], tile[1]
    if work.q_len == 1:
        if not work.kv_heads:
            return None
        splits = max(1, plan.main.splits)
        per_item = float(bm * bn * math.ceil(work.kv_len / (splits * bn)))
        return [per_item] * (output_tiles(work, bm, bn) * splits)
    offset = work.kv_len - work.q_len  # queries are the last q_len positions
    items = []
    for block in range(math.ceil(work.q_len / bm)):
        last_row = min(work.q_len, (block + 1) * bm) - 1
        keys = offset + last_row + 1 if work.causal else work.kv_len
        items.append(float(bm * bn * math.ceil(keys / bn)))
    return items * (work.batch * work.heads)


def scores(work: Work) -> float:
    """The exact (query, key) pairs of all heads: S(S+1)/2 causal for q_len = kv_len = S."""
    offset = work.kv_len - work.q_len
    if work.causal:
        pairs = work.q_len * offset + work.q_len * (work.q_len + 1) / 2
    else:
        pairs = work.q_len * work.kv_len
    return float(pairs) * work.batch * work.heads


def exp_s(scores: float, cal: Calibration) -> float:
    """One exp2 per score on the special-function unit: scores / (exp2 per clock per SM x
    clock) on one SM (the caller spreads work over SMs). FA3 paper: 16 per clock per SM."""
    return scores / (cal.exp2_per_clock_per_sm * cal.sm_clock_hz)


def alu_s(scores: float, ops_per_score: float, cal: Calibration) -> float:
    """The FP32 work an implementation declares per score (scale, max, subtract, sum, convert),
    on one SM's FP32 pipes: scores x ops / (FMA per clock per SM x clock)."""
    return scores * ops_per_score / (cal.fma_per_clock_per_sm * cal.sm_clock_hz)


def concurrency_s(cost: OpCost, plan: LaunchPlan | None, cal: Calibration) -> float:
    """The read time a plan's main kernel adds for keeping too few bytes in flight to fill the
    bus: bytes read / read_bandwidth(its programs, their bytes in flight) - bytes read / read
    roof (0 without a declared grid and bytes in flight)."""
    if plan is None or not cost.bytes_read:
        return 0.0
    main = plan.main
    bandwidth = read_bandwidth(main.programs, cal, main.inflight_bytes)
    return cost.bytes_read / bandwidth - cost.bytes_read / cal.read_bytes_per_s


# --- the tiers ---------------------------------------------------------------------------------


def _compute_tiers(work: Work, plan, rate: float, cal: Calibration) -> tuple[float, float, dict]:
    """(T5 compute seconds, T6 compute seconds, T6 split into tensor / exp / alu)."""
    per_sm = rate / cal.sms
    if work.kind == "matmul":
        items = matmul_items(work, plan)
        if items is None:
            t = work.cost.flops / rate
            return t, t, {"compute": t, "exp": 0.0, "alu": 0.0}
        per_item, _ = items
        t = makespan_s([f / per_sm for f in per_item], cal.sms)
        return t, t, {"compute": t, "exp": 0.0, "alu": 0.0}
    if work.kind == "attention":
        items = attention_items(work, plan)
        # Without a declared tile: the exact pairs as one item per SM, evenly spread.
        items = items if items is not None else [scores(work) / cal.sms] * cal.sms
        series = plan.products_in_series if plan is not None else 1.0
        ops = plan.alu_ops_per_score if plan is not None else 0.0
        flops_per_score = 4.0 * work.head_dim
        tensor = [s * flops_per_score / per_sm for s in items]
        exps = [exp_s(s, cal) for s in items]
        alus = [alu_s(s, ops, cal) for s in items]

        def item(t, e, a=0.0):
            return series * t + max((1.0 - series) * t, e + a)

        t5 = makespan_s([item(t, e) for t, e in zip(tensor, exps, strict=True)], cal.sms)
        t6_items = [item(t, e, a) for t, e, a in zip(tensor, exps, alus, strict=True)]
        t6 = makespan_s(t6_items, cal.sms)
        total = sum(tensor) + sum(exps) + sum(alus) or 1.0
        split = {
            "compute": t6 * sum(tensor) / total,
            "exp": t6 * sum(exps) / total,
            "alu": t6 * sum(alus) / total,
        }
        return t5, t6, split
    t = work.cost.flops / rate
    return t, t, {"compute": t, "exp": 0.0, "alu": 0.0}


def predict(
    work: Work,
    cal: Calibration,
    datasheet: Roof,
    method: str = "graph",
    plan: LaunchPlan | None = None,
    idle_gap_s: float = 0.0,
) -> Tiered:
    """The prediction of every tier for `work` timed by `method` ("events" or "graph"), with the
    implementation's declared `plan` (None: one kernel, nothing declared); `idle_gap_s` is the
    events timer's idle time between calls (flush and hold)."""
    cost = work.cost
    t0 = datasheet.predict(cost).time_s
    mem1 = memory_s(cost.bytes_read, cost.bytes_written, cal)
    comp1 = cost.flops / cal.matmul_burst_flops
    t1 = cal.launch_s + max(mem1, comp1)

    fixed2 = fixed_s(cost.bytes_, cal)
    wb = writeback_s(cost.bytes_written, method, cal)
    t2 = cal.launch_s + fixed2 + max(mem1 + wb, comp1)

    launch3 = launches(plan) * cal.launch_s
    fixed = plan_fixed_s(cost, plan, cal)
    mem3 = mem1 + wb + partials_s(plan, cal)
    t3 = launch3 + fixed + max(mem3, comp1)

    rate = compute_rate(duty(t3, method, idle_gap_s), cal)
    comp4 = cost.flops / rate
    t4 = launch3 + fixed + max(mem3, comp4)

    comp5, comp6, split = _compute_tiers(work, plan, tensor_rate(rate, plan, cal), cal)
    mem5 = mem3 + concurrency_s(cost, plan, cal)
    t5 = launch3 + fixed + max(mem5, comp5)
    t6 = launch3 + fixed + max(mem5, comp6)

    terms = dict.fromkeys(TERMS, 0.0) | {"launch": launch3, "fixed": fixed}
    if mem5 >= comp6:
        terms |= {"memory": mem5 - wb, "writeback": wb}
        bound = "memory"
    else:
        terms |= split
        bound = "compute"
    if launch3 + fixed > max(mem5, comp6):
        bound = "latency"
    tiers = dict(zip(TIERS, (t0, t1, t2, t3, t4, t5, t6), strict=True))
    return Tiered(tiers=tiers, terms=terms, bound=bound, roof_s=max(mem1, comp1))
