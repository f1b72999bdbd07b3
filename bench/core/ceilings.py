"""The empirical roof of this GPU, measured at the start of a run.

Datasheet peaks are leads, not ceilings: a power-capped part runs its matrix units below the
boost clock the datasheet assumes, and no kernel reaches the DRAM's theoretical bandwidth. So the
suite measures what the simplest, best-tuned operations reach here and holds kernels against that:

- copy: `dst.copy_(src)` over 1 GiB of random data, bytes counted as read + write
  (`theory.ops.copy`); the bandwidth of the roof.
- read: `src.sum()` over the same buffer, counting the bytes read (a reduction writes one
  scalar), for kernels that mostly read, such as GEMV and decode attention.
- matmul: bf16 `torch.matmul` at 8192^3 on random inputs (zeros run faster), FLOPs from
  `theory.ops.gemm`; the peak of the roof.
- launch: a one-element kernel replayed in a CUDA graph, time per call; the roof's latency floor.

Each is timed with `bench.timing` under a telemetry window, so a capped clock is on record, and
the copy and matmul also get a GPM window (DRAM and tensor utilisation read by the hardware).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from roofbench.bench.core.nvml_facts import DeviceInfo, TelemetrySummary
from roofbench.bench.core.telemetry import GpmResult, Telemetry
from roofbench.bench.core.timing import StopRule, TimingStats, time_gpu
from roofbench.theory import ops
from roofbench.theory.roofline import Roof

GIB = 2**30
MATMUL_SIZE = 8192


@dataclass(frozen=True)
class Ceilings:
    """Measured ceilings; `timings`, `telemetry` and `gpm` are keyed copy/read/matmul/launch.

    `matmul_tflops` is the noise-stopped burst (tens of milliseconds, the way kernel cases are
    timed); `matmul_sustained_tflops` is the same product over the GPM window (a few hundred
    milliseconds without a gap), where a power cap has had time to pull the clock down. Seen on
    an H200: 792 TFLOP/s at 1980 MHz in the burst, 665-685 at about 1500 MHz sustained.
    """

    copy_gbps: float
    read_gbps: float
    matmul_tflops: float
    launch_s: float
    matmul_sustained_tflops: float | None = None
    timings: dict[str, TimingStats] = field(default_factory=dict)
    telemetry: dict[str, TelemetrySummary] = field(default_factory=dict)
    gpm: dict[str, GpmResult] = field(default_factory=dict)
    device: DeviceInfo | None = None


def measured_roof(ceilings: Ceilings) -> Roof:
    """Roof from measured ceilings: peak = bf16 matmul, bandwidth = copy, launch = launch floor."""
    return Roof(
        peak_flops=ceilings.matmul_tflops * 1e12,
        bandwidth_bytes_per_s=ceilings.copy_gbps * 1e9,
        launch_s=ceilings.launch_s,
        source=(
            f"measured: bf16 matmul {ceilings.matmul_tflops:.0f} TFLOP/s, "
            f"copy {ceilings.copy_gbps:.0f} GB/s, launch {ceilings.launch_s * 1e6:.2f} us"
        ),
    )


def measure_ceilings(
    *,
    buffer_bytes: int = GIB,
    matmul_size: int = MATMUL_SIZE,
    rule: StopRule | None = None,
    telemetry: Telemetry | None = None,
    gpm: bool = True,
) -> Ceilings:
    """Measure copy and read bandwidth, bf16 matmul peak and launch floor on the current GPU.

    `buffer_bytes` (default 1 GiB) must be many times the L2 so the bandwidths are DRAM's. A
    `telemetry` given is used and left open; otherwise one is opened and closed here.
    """
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("measuring ceilings needs a CUDA device; torch sees none")
    device = torch.device("cuda", torch.cuda.current_device())
    l2_bytes = torch.cuda.get_device_properties(device).L2_cache_size
    if buffer_bytes < 8 * l2_bytes:
        raise ValueError(f"buffer_bytes {buffer_bytes} is under 8x the L2 ({l2_bytes} bytes)")
    own = telemetry is None
    tel = Telemetry(device.index) if own else telemetry
    run = _Run(tel, rule, gpm)
    try:
        copy_gbps, read_gbps = run.bandwidth(device, buffer_bytes)
        matmul_tflops, matmul_sustained_tflops = run.matmul(device, matmul_size)
        launch_s = run.launch(device)
        info = tel.info()
    finally:
        if own:
            tel.close()
    return Ceilings(
        copy_gbps=copy_gbps,
        read_gbps=read_gbps,
        matmul_tflops=matmul_tflops,
        launch_s=launch_s,
        matmul_sustained_tflops=matmul_sustained_tflops,
        timings=run.timings,
        telemetry=run.summaries,
        gpm=run.gpms,
        device=info,
    )


class _Run:
    """One ceiling measurement after another, each timed under a telemetry window.

    One method per ceiling, so each one's buffers are freed when it returns.
    """

    def __init__(self, tel: Telemetry, rule: StopRule | None, gpm: bool):
        self.tel, self.rule, self.gpm = tel, rule, gpm
        self.timings: dict[str, TimingStats] = {}
        self.summaries: dict[str, TelemetrySummary] = {}
        self.gpms: dict[str, GpmResult] = {}

    def _timed(self, key: str, fn: Callable[[], object], **kwargs: Any) -> float:
        with self.tel.window() as win:
            self.timings[key] = time_gpu(fn, rule=self.rule, **kwargs)
        self.summaries[key] = win.summary()
        return self.timings[key].median_s

    def bandwidth(self, device: Any, nbytes: int) -> tuple[float, float]:
        """(copy GB/s counting read + write, read GB/s counting bytes read) over `nbytes`."""
        import torch

        # Random float32 values; the copy moves bytes, the sum reads each element once.
        src = torch.rand(nbytes // 4, dtype=torch.float32, device=device)
        dst = torch.empty_like(src)
        nbytes = src.numel() * src.element_size()
        copy = lambda: dst.copy_(src)
        copy_gbps = ops.copy(nbytes).bytes_ / self._timed("copy", copy, method="events") / 1e9
        read_bytes = ops.read(nbytes, src.element_size()).bytes_
        read_gbps = read_bytes / self._timed("read", lambda: src.sum(), method="events") / 1e9
        if self.gpm:
            self.gpms["copy"] = self.tel.gpm_window(copy)
        return copy_gbps, read_gbps

    def matmul(self, device: Any, n: int) -> tuple[float, float | None]:
        """bf16 TFLOP/s of an n x n x n torch.matmul on random inputs: (burst, sustained).

        Sustained comes from the GPM window's calls over its duration; None without GPM.
        """
        import torch

        a = torch.randn(n, n, dtype=torch.bfloat16, device=device)
        b = torch.randn(n, n, dtype=torch.bfloat16, device=device)
        c = torch.empty(n, n, dtype=torch.bfloat16, device=device)
        product = lambda: torch.matmul(a, b, out=c)
        flops = ops.gemm(n, n, n, "bf16").flops
        burst_tflops = flops / self._timed("matmul", product, method="events") / 1e12
        sustained_tflops = None
        if self.gpm:
            window = self.gpms["matmul"] = self.tel.gpm_window(product)
            if window.per_call_s:
                sustained_tflops = flops / window.per_call_s / 1e12
        return burst_tflops, sustained_tflops

    def launch(self, device: Any) -> float:
        """Seconds per call of a one-element kernel replayed in a CUDA graph: the launch floor."""
        import torch

        one = torch.zeros(1, device=device)
        return self._timed(
            "launch",
            lambda: one.add_(1.0),
            method="graph",
            flush_l2=False,
            check_streams=False,
            rotate_min_bytes=0,
        )


def ceiling_records(ceilings: Ceilings, ctx) -> list:
    """The copy and matmul ceilings as records (ctx: a measure.RunContext or anything with its
    roofs and identity), so reports hold NVML against timed GB/s."""
    from roofbench.bench.core.measure import cost_record, fill_telemetry, fill_timing

    costs = {
        "copy": ("ceiling/copy_1GiB", ops.copy(GIB)),
        "matmul": (
            f"ceiling/matmul_{MATMUL_SIZE}",
            ops.gemm(MATMUL_SIZE, MATMUL_SIZE, MATMUL_SIZE),
        ),
    }
    records = []
    for op, (case, cost) in costs.items():
        stats = ceilings.timings.get(op)
        if stats is None:
            continue
        record = cost_record(case, op, "torch", "bf16", cost, ctx)
        record = fill_timing(record, stats, ctx.measured_roof)
        telemetry = ceilings.telemetry.get(op)
        if telemetry is not None:
            record = fill_telemetry(record, telemetry, ceilings.gpm.get(op))
        records.append(record)
    return records


def ceilings_dict(ceilings: Ceilings) -> dict:
    """The ceilings as run.json holds them."""

    def summary(key: str, field_name: str):
        found = ceilings.telemetry.get(key)
        return getattr(found, field_name) if found else None

    reasons = ceilings.telemetry.get("matmul")
    copy_gpm = ceilings.gpm.get("copy")
    return {
        "copy_gbps": ceilings.copy_gbps,
        "read_gbps": ceilings.read_gbps,
        "matmul_tflops": ceilings.matmul_tflops,
        "matmul_sustained_tflops": ceilings.matmul_sustained_tflops,
        "launch_s": ceilings.launch_s,
        "copy_nvml_dram_gbps": copy_gpm.dram_gbps if copy_gpm else None,
        "matmul_sm_clock_mhz": summary("matmul", "median_sm_clock_mhz"),
        "matmul_power_w": summary("matmul", "max_power_w"),
        "matmul_reasons": "|".join(reasons.reasons) if reasons else None,
    }
