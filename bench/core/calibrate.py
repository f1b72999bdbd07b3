"""`roofbench calibrate`: the constants of the tiered model, measured on this GPU.

Each constant is the result of one microbenchmark (`bench.core.probes`, torch where torch is the
best we have), recorded with its method, samples, p20..p80 spread, and the SM clock and power
NVML saw while it ran:

- read, write and copy roofs: the fastest of a few streaming kernels over 2 GiB, graph-replayed
  (the buffer is 35x the L2, so nothing is served from cache and no flush is needed);
- matmul burst (the fastest of cuBLAS and roofbench's Triton GEMM at 8192^3 and at a long-K
  4096 x 4096 x 32768, each over its first ten bf16 products after a second of idle) and
  sustained (that GEMM after more than half a second back to back, when the power cap has
  pulled the clock down);
- the mma.sync peak: bf16 products on the tensor cores driven by the warp-level mma.sync that
  Ampere-era kernels issue on Hopper, not by wgmma (`bench.core.mma_probe`), timed as the burst
  matmul is; optional: a calibration without it is still whole;
- launch floors: a one-element kernel graph-replayed, and launched from the host back to back;
- the fixed cost of a kernel: a streaming read kernel from 256 KiB to 64 MiB, graph-replayed
  over rotating buffers as the sweep times short kernels; what each size takes beyond launch +
  bytes at the read roof is the curve `theory.tiers.fixed_s` interpolates;
- the bandwidth of few programs: a streaming read of 1 .. 1024 programs of 256 KiB each, the
  curve `theory.tiers.read_bandwidth` interpolates;
- one loaded DRAM round trip: rounds of loads over all SMs, each depending on the last;
- exp2 and FP32 FMA throughput per SM per clock (at the SM clock NVML read during the probe);
- the dirty-L2 write-back: a read-only kernel after the events timer's flush (which leaves L2
  full of dirty lines) against the same kernel after a flush that only reads.

The document is cached per GPU (UUID, driver, max clocks) for a day, so `roofbench run` and
`roofbench model` calibrate once; `--calibration FILE` gives one, `calibrate --out` writes one.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import fields
from datetime import datetime, timezone
from pathlib import Path

from roofbench.bench.core.calibrate_matmul import probe_matmul, probe_mma_sync
from roofbench.bench.core.calibrate_probes import (
    Probe,
    probe_chains,
    probe_concurrency,
    probe_fixed,
    probe_latency,
    probe_launches,
    probe_streams,
    probe_writeback,
)
from roofbench.bench.core.identity import utc_now, versions
from roofbench.theory.calibration import CURVE_FIELDS, OPTIONAL_FIELDS
from roofbench.theory.tiers import Calibration

VERSION = 5  # 2: the fixed-cost curve; 3: the concurrency curve; 4: the mma.sync peak;
# 5: the burst matmul peak the fastest of several GEMMs, not cuBLAS at 8192^3 alone
MAX_AGE_S = 24 * 3600


def cache_path(uuid: str) -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "roofbench"
    return root / f"calibration-{uuid or 'unknown'}.json"


def is_fresh(doc: dict, device: dict, now: datetime | None = None) -> str | None:
    """None when `doc` calibrates `device` (same UUID, driver and max clocks, this version,
    less than a day old), else why not."""
    if doc.get("version") != VERSION:
        return f"calibration version {doc.get('version')} is not {VERSION}"
    for key in ("uuid", "driver", "max_sm_clock_mhz", "max_mem_clock_mhz"):
        if doc.get("device", {}).get(key) != device.get(key):
            return f"calibrated on another {key} ({doc.get('device', {}).get(key)})"
    created = datetime.fromisoformat(doc["created"].replace("Z", "+00:00"))
    age_s = ((now or datetime.now(timezone.utc)) - created).total_seconds()
    if age_s > MAX_AGE_S:
        return f"calibration is {age_s / 3600:.0f} h old (more than {MAX_AGE_S // 3600} h)"
    return None


def calibration_of(doc: dict) -> Calibration:
    """The theory's constants from a calibration document."""
    return Calibration.from_dict(doc["calibration"])


def calibrate(telemetry=None, console=None) -> dict:
    """Run every probe on the current GPU; returns the calibration document."""
    import torch

    from roofbench.bench.core.telemetry import Telemetry

    if not torch.cuda.is_available():
        raise RuntimeError("calibrating needs a CUDA device; torch sees none")
    device = torch.device("cuda", torch.cuda.current_device())
    props = torch.cuda.get_device_properties(device)
    own = telemetry is None
    tel = Telemetry(device.index) if own else telemetry
    info = tel.info()
    max_clock_hz = (info.max_sm_clock_mhz or 0) * 1e6
    probe = Probe(tel, console)
    began = time.perf_counter()
    steps = (
        ("streams", lambda: probe_streams(probe, device)),
        ("matmul", lambda: probe_matmul(probe, device)),
        ("mma_sync", lambda: probe_mma_sync(probe, device, props.multi_processor_count)),
        ("launches", lambda: probe_launches(probe, device)),
        ("fixed", lambda: probe_fixed(probe, device)),
        ("concurrency", lambda: probe_concurrency(probe, device)),
        ("latency", lambda: probe_latency(probe, device, props.multi_processor_count)),
        ("chains", lambda: probe_chains(probe, device, props.multi_processor_count, max_clock_hz)),
        ("writeback", lambda: probe_writeback(probe, device, props.L2_cache_size)),
    )
    errors = {}
    try:
        for name, step in steps:
            try:
                step()
            except Exception as err:  # noqa: BLE001 - recorded; the constant is then missing
                errors[name] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
                if console is not None:
                    console.print(f"[red]  {name} failed: {errors[name]}[/]")
            torch.cuda.empty_cache()
    finally:
        if own:
            tel.close()
    device_doc = {
        "name": info.name or torch.cuda.get_device_name(device),
        "uuid": info.uuid,
        "driver": info.driver_version,
        "max_sm_clock_mhz": info.max_sm_clock_mhz,
        "max_mem_clock_mhz": info.max_mem_clock_mhz,
        "power_limit_w": info.power_limit_w,
        "sms": props.multi_processor_count,
        "l2_bytes": props.L2_cache_size,
    }
    doc = {
        "version": VERSION,
        "created": utc_now(),
        "device": device_doc,
        **versions(),
        "wall_time_s": time.perf_counter() - began,
        "constants": probe.constants,
        "errors": errors,
    }
    doc["calibration"] = _theory_constants(probe.constants, device_doc) if whole(errors) else None
    return doc


def whole(errors: dict) -> bool:
    """Whether a calibration whose probes failed with `errors` (step: message) still gives the
    theory's constants: only optional probes failed (their constants are then None)."""
    return not set(errors) - set(OPTIONAL_STEPS)


# Calibration fields that are not a probe's constant: facts of the device, and the fixed-cost
# curves (the lists of the kernel_fixed_s and cta_read_bytes_per_s probes).
DEVICE_FIELDS = ("sms", "sm_clock_hz", "l2_bytes", "source", *CURVE_FIELDS)
# Probes whose failure leaves their constant None (OPTIONAL_FIELDS) and the calibration whole.
OPTIONAL_STEPS = ("mma_sync",)


def _theory_constants(constants: dict, device: dict) -> dict:
    """The theory's Calibration: each probe constant's value (None for an optional one not
    measured), and the device's facts."""
    measured = [f.name for f in fields(Calibration) if f.name not in DEVICE_FIELDS]
    optional = {name: constants.get(name, {}).get("value") for name in OPTIONAL_FIELDS}
    cal = Calibration(
        **{name: constants[name]["value"] for name in measured if name not in optional},
        **optional,
        sms=device["sms"],
        sm_clock_hz=(device["max_sm_clock_mhz"] or 0) * 1e6,
        l2_bytes=device["l2_bytes"],
        fixed_bytes=tuple(float(b) for b in constants["kernel_fixed_s"]["bytes"]),
        fixed_excess_s=tuple(constants["kernel_fixed_s"]["excess_s"]),
        cta_programs=tuple(float(p) for p in constants["cta_read_bytes_per_s"]["programs"]),
        cta_read_bytes_per_s=tuple(constants["cta_read_bytes_per_s"]["rates"]),
        source=f"roofbench calibrate on {device['name']}",
    )
    return cal.to_dict()


def load_or_calibrate(path: str | None, telemetry, console, use_cache: bool = True) -> dict:
    """The calibration document `path` names, else a fresh cached one of this GPU, else a new
    one (cached). A given file of another GPU or driver is refused (ValueError)."""
    info = telemetry.info()
    device = {
        "uuid": info.uuid,
        "driver": info.driver_version,
        "max_sm_clock_mhz": info.max_sm_clock_mhz,
        "max_mem_clock_mhz": info.max_mem_clock_mhz,
    }
    if path:
        doc = json.loads(Path(path).read_text())
        stale = is_fresh(doc, device)
        if stale and "old" not in stale:
            raise ValueError(f"--calibration {path}: {stale}")
        if stale and console is not None:
            console.print(f"[yellow]using {path} although {stale}[/]")
        return doc
    cached = cache_path(info.uuid)
    if use_cache and cached.exists():
        try:
            doc = json.loads(cached.read_text())
            if is_fresh(doc, device) is None and doc.get("calibration"):
                if console is not None:
                    console.print(f"calibration from {cached} ({doc['created']})")
                return doc
        except (ValueError, KeyError):
            pass  # a broken cache file is replaced
    if console is not None:
        console.print("calibrating ...")
    doc = calibrate(telemetry, console)
    if doc.get("calibration") and use_cache:
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_text(json.dumps(doc, indent=2, default=str))
    return doc
