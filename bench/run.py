"""`roofbench run`: a sweep measured end to end into `results/<gpu-slug>/<UTC time>/`.

The folder holds `records.csv` (written row by row), `run.json` (roofs, ceilings, versions, wall
time), `summary.md`, `roofline.png` and `prefill_vs_decode.png`. Without a GPU the same folder
holds the predictions only, and the summary says that measuring needs a GPU.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console

from roofbench.bench import plot, report
from roofbench.bench.cases import IMPLS, Case
from roofbench.bench.records import Record, RecordWriter, read_records
from roofbench.theory.hardware import GpuSpec
from roofbench.theory.roofline import Roof

NO_GPU_NOTE = (
    "No CUDA GPU is visible to torch: this report holds the roofline predictions only "
    "(datasheet roof). Measuring needs a GPU."
)


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def commit() -> str:
    """The source revision: $ROOFBENCH_COMMIT if set (a copied tree has no .git), else git's."""
    if os.environ.get("ROOFBENCH_COMMIT"):
        return os.environ["ROOFBENCH_COMMIT"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def versions() -> dict:
    import torch

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = ""
    return {"torch": torch.__version__, "triton": triton_version, "commit": commit()}


def run_folder(out: str | os.PathLike, gpu: GpuSpec, started: datetime) -> Path:
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    return Path(out) / gpu.slug / stamp


def roof_dict(roof: Roof | None) -> dict | None:
    return None if roof is None else dataclasses.asdict(roof)


def roof_from(data: dict | None) -> Roof | None:
    return None if data is None else Roof(**data)


def write_reports(folder: Path, note: str = "") -> None:
    """summary.md and the two plots from the folder's records.csv and run.json."""
    meta = json.loads((folder / "run.json").read_text())
    records = read_records(folder / "records.csv")
    datasheet = roof_from(meta.get("datasheet_roof"))
    measured = roof_from(meta.get("measured_roof"))
    text = report.summarize(records, datasheet, measured, meta.get("ceilings"), note=note)
    wall = meta.get("wall_time_s")
    if wall is not None:
        text += f"\nSweep `{meta.get('sweep')}` took {wall:.0f} s of wall time.\n"
    (folder / "summary.md").write_text(text)
    plot.roofline_plot(records, datasheet, measured, folder / "roofline.png")
    plot.prefill_vs_decode_plot(records, measured or datasheet, folder / "prefill_vs_decode.png")


def _write_meta(folder: Path, meta: dict) -> None:
    tmp = folder / "run.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2, default=str))
    tmp.replace(folder / "run.json")


def _done(folder: Path) -> set[tuple[str, str]]:
    path = folder / "records.csv"
    if not path.exists():
        return set()
    return {(r.case, r.impl) for r in read_records(path)}


def predictions_only(cases: list[Case], impls, gpu: GpuSpec, folder: Path, sweep: str, console):
    """Records with the datasheet predictions and status `skipped`: there is nothing to time."""
    from roofbench.bench.measure import RunContext, base_record

    roof = Roof.from_spec(gpu)
    meta = {
        "sweep": sweep,
        "gpu": gpu.name,
        "gpu_slug": gpu.slug,
        "started": utc_now(),
        "datasheet_roof": roof_dict(roof),
        "measured_roof": None,
        "ceilings": None,
        **versions(),
        "note": NO_GPU_NOTE,
    }
    folder.mkdir(parents=True, exist_ok=True)
    _write_meta(folder, meta)
    identity = {"gpu": gpu.name, "timestamp": meta["started"], "sweep": sweep, **versions()}
    ctx = RunContext(roof, roof, telemetry=None, rule=None, identity=identity)
    with RecordWriter(folder / "records.csv") as writer:
        for case in cases:
            for impl in impls:
                record = base_record(case, impl, ctx)
                writer.write(
                    dataclasses.replace(
                        record,
                        predicted_s=None,
                        status="skipped",
                        reason="no CUDA GPU: predictions only",
                    )
                )
    meta["wall_time_s"] = 0.0
    _write_meta(folder, meta)
    write_reports(folder, note=NO_GPU_NOTE)
    console.print(f"[yellow]{NO_GPU_NOTE}[/]")


def measure_sweep(
    cases: list[Case],
    impls,
    folder: Path,
    sweep: str,
    console: Console,
    time_cap_s: float,
    gpm: bool = True,
) -> None:
    """Ceilings first, then every case x implementation, each record flushed as it is made."""
    import torch

    from roofbench.bench.ceilings import measure_ceilings, measured_roof
    from roofbench.bench.gpu import resolve_gpu
    from roofbench.bench.measure import RunContext, measure
    from roofbench.bench.telemetry import Telemetry
    from roofbench.bench.timing import StopRule

    gpu = resolve_gpu(None)
    folder.mkdir(parents=True, exist_ok=True)
    meta_path = folder / "run.json"
    began = time.perf_counter()
    telemetry = Telemetry(torch.cuda.current_device())
    info = telemetry.info()
    gpu_name = info.name or torch.cuda.get_device_name()
    datasheet = Roof.from_spec(gpu)
    ceilings = None
    if meta_path.exists():  # resuming: keep the ceilings the run started with
        meta = json.loads(meta_path.read_text())
        measured = roof_from(meta["measured_roof"])
        console.print(f"resuming {folder}: {len(_done(folder))} measurements already there")
    else:
        console.print(f"measuring ceilings on {gpu_name} ...")
        ceilings = measure_ceilings(telemetry=telemetry, gpm=gpm)
        measured = measured_roof(ceilings)
        meta = {
            "sweep": sweep,
            "gpu": gpu_name,
            "gpu_slug": gpu.slug,
            "driver": info.driver_version,
            "started": utc_now(),
            **versions(),
            "datasheet_roof": roof_dict(datasheet),
            "measured_roof": roof_dict(measured),
            "ceilings": {
                "copy_gbps": ceilings.copy_gbps,
                "read_gbps": ceilings.read_gbps,
                "matmul_tflops": ceilings.matmul_tflops,
                "launch_s": ceilings.launch_s,
                "copy_nvml_dram_gbps": ceilings.gpm.get("copy") and ceilings.gpm["copy"].dram_gbps,
                "matmul_sm_clock_mhz": _clock(ceilings, "matmul"),
                "matmul_power_w": _power(ceilings, "matmul"),
                "matmul_reasons": _reasons(ceilings, "matmul"),
            },
        }
        _write_meta(folder, meta)
        console.print(
            f"copy {ceilings.copy_gbps:.0f} GB/s, read {ceilings.read_gbps:.0f} GB/s, "
            f"bf16 matmul {ceilings.matmul_tflops:.0f} TFLOP/s, launch "
            f"{ceilings.launch_s * 1e6:.2f} us (datasheet: {gpu.hbm_gbps:.0f} GB/s, "
            f"{gpu.peak_tflops('bf16'):.0f} TFLOP/s)"
        )
    identity = {
        "gpu": gpu_name,
        "driver": meta.get("driver") or "",
        "sweep": sweep,
        **versions(),
    }
    ctx = RunContext(
        datasheet,
        measured,
        telemetry,
        StopRule(max_time_s=time_cap_s),
        identity,
        gpm=gpm,
    )
    done = _done(folder)
    todo = [(c, i) for c in cases for i in impls if (c.id, i) not in done]
    device = torch.device("cuda", torch.cuda.current_device())
    with RecordWriter(folder / "records.csv") as writer:
        if ceilings is not None:
            ctx.identity["timestamp"] = meta["started"]
            for record in ceiling_records(ceilings, ctx):
                writer.write(record)
        for index, (case, impl) in enumerate(todo, 1):
            ctx.identity["timestamp"] = utc_now()
            record = measure(case, impl, ctx, device)
            writer.write(record)
            console.print(f"[{index}/{len(todo)}] {progress_line(record)}", highlight=False)
    meta["wall_time_s"] = meta.get("wall_time_s", 0.0) + time.perf_counter() - began
    meta["finished"] = utc_now()
    _write_meta(folder, meta)
    telemetry.close()
    write_reports(folder)


def ceiling_records(ceilings, ctx) -> list[Record]:
    """The copy and matmul ceilings as records, so reports hold NVML against timed GB/s."""
    from roofbench.bench.ceilings import GIB, MATMUL_SIZE
    from roofbench.bench.measure import cost_record, fill_telemetry, fill_timing
    from roofbench.theory import ops

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


def progress_line(record: Record) -> str:
    head = f"{record.case} {record.impl}"
    if record.status != "ok":
        return f"{head}: {record.status} ({record.reason})"
    flag = " THROTTLED" if record.throttled else ""
    return (
        f"{head}: {record.measured_s * 1e6:.1f} us, predicted {record.predicted_s * 1e6:.1f} us "
        f"({record.error:+.1%}), {record.achieved_tflops:.1f} TFLOP/s, "
        f"{record.achieved_gbps:.0f} GB/s, {record.roof_fraction:.0%} of roof{flag}"
    )


def _clock(ceilings, key):
    summary = ceilings.telemetry.get(key)
    return summary.median_sm_clock_mhz if summary else None


def _power(ceilings, key):
    summary = ceilings.telemetry.get(key)
    return summary.max_power_w if summary else None


def _reasons(ceilings, key):
    summary = ceilings.telemetry.get(key)
    return "|".join(summary.reasons) if summary else None


def run(
    sweep: str,
    cases: list[Case],
    out: str,
    impls=IMPLS,
    console: Console | None = None,
    time_cap_s: float = 0.5,
    resume: str | None = None,
    gpm: bool = True,
) -> Path:
    """Measure (or, with no GPU, predict) `cases`; returns the run folder."""
    import torch

    from roofbench.bench.gpu import resolve_gpu

    console = console or Console()
    gpu = resolve_gpu(None)
    folder = Path(resume) if resume else run_folder(out, gpu, datetime.now(timezone.utc))
    if not torch.cuda.is_available():
        predictions_only(cases, impls, gpu, folder, sweep, console)
    else:
        measure_sweep(cases, impls, folder, sweep, console, time_cap_s, gpm)
    return folder
