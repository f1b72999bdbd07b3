"""`roofbench run`: a sweep measured end to end into `results/<gpu-slug>/<UTC time>/`.

The folder holds `records.csv` (written row by row), `run.json` (roofs, ceilings, versions, wall
time), `summary.md`, `roofline.png` and `prefill_vs_decode.png`. Without a GPU the same folder
holds the predictions only, and the summary says that measuring needs a GPU.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console

from roofbench.bench.core.identity import (
    read_meta,
    roof_dict,
    roof_from,
    unique_folder,
    utc_now,
    versions,
    write_meta,
)
from roofbench.bench.core.records import (
    RecordWriter,
    drop_partial_row,
    progress_line,
    read_records,
)
from roofbench.bench.core.signals import Interrupted, interruptible  # noqa: F401 - re-exported
from roofbench.bench.sweep import plot, report, tiers_report
from roofbench.bench.sweep.ncu import read_ncu, run_ncu
from roofbench.kernels import catalog, registry
from roofbench.kernels.spec import OpCase
from roofbench.theory.hardware import GpuSpec
from roofbench.theory.roofline import Roof

PREDICTED = "predicted"  # predictions-only runs go under out/predicted/, apart from measured ones


def no_gpu_note(gpu: GpuSpec) -> str:
    return (
        f"Predicted for {gpu.name}: no CUDA GPU is visible to torch, so this report holds the "
        "roofline predictions only (datasheet roof). Nothing here was measured."
    )


def run_folder(out: str | os.PathLike, gpu: GpuSpec, started: datetime, prefix: str = "") -> Path:
    """A new folder out/<gpu-slug>/<prefix><UTC time> (unique: see identity.unique_folder)."""
    return unique_folder(Path(out) / gpu.slug, prefix + started.strftime("%Y%m%dT%H%M%SZ"))


def check_resume(folder: Path, sweep: str, gpu_name: str | None) -> dict:
    """run.json of a kernel run `folder` that this run may finish; ValueError (one line) for a
    model run, another sweep, GPU or roofbench version, or no GPU here."""
    from roofbench.bench.core.identity import version

    if not (folder / "run.json").is_file():
        raise ValueError(f"{folder} is not a run folder (no run.json)")
    meta = read_meta(folder)
    if (folder / "model_records.csv").exists() or "model" in meta:
        raise ValueError(f"{folder} is a model run: resume it with roofbench model")
    if gpu_name is None:
        raise ValueError(f"resuming {folder} needs the GPU it was measured on; torch sees none")
    for key, here in (("sweep", sweep), ("gpu", gpu_name), ("roofbench", version())):
        if meta.get(key) != here:
            raise ValueError(
                f"{folder} is a run of {key} {meta.get(key)!r}, not {here!r}: start a new run"
            )
    if not meta.get("measured_roof"):
        raise ValueError(f"{folder} holds predictions only: there is nothing measured to finish")
    return meta


def tasks(cases: list[OpCase], impls: tuple[str, ...] | None) -> list[tuple[OpCase, str]]:
    """(case, implementation name) for every case and every registered implementation of its op
    that `impls` names (None: all of them), in the order they are measured."""
    return [
        (case, impl.name)
        for case in cases
        for impl in catalog.impls(case.op)
        if impls is None or impl.name in impls
    ]


def run_identity(cases: list[OpCase], impls: tuple[str, ...] | None) -> dict:
    """What run.json records about the implementations: each op's baseline, the names timed and
    the plugins they came from."""
    ops = sorted({c.op for c in cases}, key=lambda op: [c.op for c in cases].index(op))
    chosen = [catalog.get_impl(c.op, name) for c, name in tasks(cases, impls)]
    return {
        "baselines": {op: b.name for op in ops if (b := catalog.baseline(op)) is not None},
        "impls": {op: sorted({i.name for i in chosen if i.op == op}) for op in ops},
        "plugins": sorted({i.origin for i in chosen if i.origin != registry.BUILTIN}),
    }


def calibrated_roofs(meta: dict) -> dict[str, Roof]:
    """The calibration's roofs for the roofline plot: the read and copy roofs under the burst
    matmul peak, and the read roof under the sustained one."""
    from roofbench.bench.core.calibrate import calibration_of

    doc = meta.get("calibration")
    if not doc or not doc.get("calibration"):
        return {}
    cal = calibration_of(doc)
    burst, sustained = cal.matmul_burst_flops, cal.matmul_sustained_flops
    return {
        "read (burst)": Roof(burst, cal.read_bytes_per_s, cal.launch_s, "calibrated"),
        "copy (burst)": Roof(burst, cal.copy_bytes_per_s, cal.launch_s, "calibrated"),
        "read (sustained)": Roof(sustained, cal.read_bytes_per_s, cal.launch_s, "calibrated"),
    }


def write_reports(folder: Path, note: str = "") -> None:
    """summary.md and the plots from the folder's records.csv and run.json. A folder whose
    records or run.json cannot be read, or hold nothing, raises ValueError before any file is
    written: a good summary is never replaced by an empty one."""
    meta = read_meta(folder)
    records = read_records(folder / "records.csv")
    if not records:
        raise ValueError(f"{folder}/records.csv holds no records: nothing to report")
    datasheet = roof_from(meta.get("datasheet_roof"))
    measured = roof_from(meta.get("measured_roof"))
    if meta.get("interrupted"):  # a partial run says so first, with how to finish it
        stop = f"The run was interrupted ({meta['interrupted']}): the records hold what finished."
        note = f"{note} {stop}".strip()
    text = report.summarize(
        records,
        datasheet,
        measured,
        meta.get("ceilings"),
        note=note,
        baselines=meta.get("baselines"),
        calibration=meta.get("calibration"),
        ncu=read_ncu(folder),
    )
    wall = meta.get("wall_time_s")
    if wall is not None:
        text += f"\nSweep `{meta.get('sweep')}` took {wall:.0f} s of wall time.\n"
    (folder / "summary.md").write_text(text)
    plot.roofline_plot(
        records, datasheet, measured, folder / "roofline.png", calibrated_roofs(meta)
    )
    if any(r.predicted_t6_s for r in records):
        tiers_report.where_time_goes_plot(records, folder / "where_time_goes.png")
    plot.prefill_vs_decode_plot(records, measured or datasheet, folder / "prefill_vs_decode.png")


def _done(folder: Path) -> set[tuple[str, str]]:
    path = folder / "records.csv"
    if not path.exists():
        return set()
    return {(r.case, r.impl) for r in read_records(path)}


def predictions_only(
    cases: list[OpCase], impls, gpu: GpuSpec, folder: Path, sweep: str, console
) -> None:
    """Records with the datasheet predictions and status `skipped`: there is nothing to time."""
    from roofbench.bench.core.measure import RunContext, base_record

    roof = Roof.from_spec(gpu)
    label = f"predicted for {gpu.name}"
    meta = {
        "sweep": sweep,
        "gpu": label,
        "predicted_for": gpu.name,
        "gpu_slug": gpu.slug,
        "started": utc_now(),
        "datasheet_roof": roof_dict(roof),
        "measured_roof": None,
        "ceilings": None,
        **versions(),
        **run_identity(cases, impls),
        "note": no_gpu_note(gpu),
    }
    folder.mkdir(parents=True, exist_ok=True)
    write_meta(folder, meta)
    identity = {"gpu": label, "timestamp": meta["started"], "sweep": sweep, **versions()}
    ctx = RunContext(roof, roof, telemetry=None, rule=None, identity=identity)
    with RecordWriter(folder / "records.csv") as writer:
        for case, impl in tasks(cases, impls):
            record = base_record(case, impl, ctx)
            record.predicted_s = None
            record.status, record.reason = "skipped", "no CUDA GPU: predictions only"
            writer.write(record)
    meta["wall_time_s"] = 0.0
    write_meta(folder, meta)
    write_reports(folder, note=no_gpu_note(gpu))
    console.print(f"[yellow]{no_gpu_note(gpu)}[/]")


def _start_meta(folder: Path, sweep, gpu, info, gpu_name, datasheet, cases, impls, console, gpm):
    """Measure the ceilings and write the first run.json; returns (meta, ceilings, roof)."""
    from roofbench.bench.core.ceilings import ceilings_dict, measure_ceilings, measured_roof

    console.print(f"measuring ceilings on {gpu_name} ...")
    ceilings = measure_ceilings(telemetry=info["telemetry"], gpm=gpm)
    measured = measured_roof(ceilings)
    meta = {
        "sweep": sweep,
        "gpu": gpu_name,
        "gpu_slug": gpu.slug,
        "driver": info["driver"],
        "started": utc_now(),
        **versions(),
        **run_identity(cases, impls),
        "datasheet_roof": roof_dict(datasheet),
        "measured_roof": roof_dict(measured),
        "ceilings": ceilings_dict(ceilings),
    }
    write_meta(folder, meta)
    console.print(
        f"copy {ceilings.copy_gbps:.0f} GB/s, read {ceilings.read_gbps:.0f} GB/s, "
        f"bf16 matmul {ceilings.matmul_tflops:.0f} TFLOP/s, launch "
        f"{ceilings.launch_s * 1e6:.2f} us (datasheet: {gpu.hbm_gbps:.0f} GB/s, "
        f"{gpu.peak_tflops('bf16'):.0f} TFLOP/s)"
    )
    return meta, ceilings, measured


def _calibration(meta: dict, folder: Path, path, telemetry, console):
    """The run's calibration: the one run.json holds (a resumed run), else `path`'s, a fresh
    cached one or a new one; written into run.json. None when asked for none (path False)."""
    from roofbench.bench.core.calibrate import calibration_of, load_or_calibrate

    if path is False:
        return None
    if not meta.get("calibration"):
        from roofbench.theory.tiers import MODEL_VERSION

        meta["calibration"] = load_or_calibrate(path or None, telemetry, console)
        meta["tiers_model"] = MODEL_VERSION
        write_meta(folder, meta)
    doc = meta["calibration"]
    if not doc.get("calibration"):
        console.print(f"[yellow]calibration incomplete ({doc.get('errors')}): no tiers[/]")
        return None
    return calibration_of(doc)


def measure_sweep(
    cases: list[OpCase],
    impls,
    folder: Path,
    sweep: str,
    console: Console,
    time_cap_s: float,
    gpm: bool = True,
    calibration=None,
    observe: bool = True,
) -> None:
    """Ceilings first, then every case x implementation, each record flushed as it is made."""
    import torch

    from roofbench.bench.core.ceilings import ceiling_records
    from roofbench.bench.core.gpu import resolve_gpu
    from roofbench.bench.core.measure import RunContext, measure
    from roofbench.bench.core.telemetry import Telemetry
    from roofbench.bench.core.timing import StopRule

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
        meta = check_resume(folder, sweep, gpu_name)
        measured = roof_from(meta["measured_roof"])
        cut = drop_partial_row(folder / "records.csv")
        if cut is not None:
            console.print(f"[yellow]dropped a row cut mid-line: {cut[:60]!r}[/]")
        console.print(f"resuming {folder}: {len(_done(folder))} measurements already there")
    else:
        started = {"telemetry": telemetry, "driver": info.driver_version}
        meta, ceilings, measured = _start_meta(
            folder, sweep, gpu, started, gpu_name, datasheet, cases, impls, console, gpm
        )
    identity = {"gpu": gpu_name, "driver": meta.get("driver") or "", "sweep": sweep, **versions()}
    rule = StopRule(max_time_s=time_cap_s)
    cal = _calibration(meta, folder, calibration, telemetry, console)
    ctx = RunContext(
        datasheet, measured, telemetry, rule, identity, gpm=gpm, calibration=cal, observe=observe
    )
    done = _done(folder)
    todo = [(c, i) for c, i in tasks(cases, impls) if (c.id, i) not in done]
    device = torch.device("cuda", torch.cuda.current_device())
    written = 0
    try:
        with interruptible() as stop, RecordWriter(folder / "records.csv") as writer:
            if ceilings is not None:
                ctx.identity["timestamp"] = meta["started"]
                for record in ceiling_records(ceilings, ctx):
                    writer.write(record)
            for index, (case, impl) in enumerate(todo, 1):
                ctx.identity["timestamp"] = utc_now()
                record = measure(case, impl, ctx, device)
                stop.check()  # a signal the case swallowed still ends the run, its row unwritten
                writer.write(record)
                written = index
                console.print(f"[{index}/{len(todo)}] {progress_line(record)}", highlight=False)
    except BaseException as err:  # a signal or a crash: keep what was measured, then re-raise
        name = str(err) if isinstance(err, Interrupted) else type(err).__name__
        meta["interrupted"] = f"{name} after {written} of {len(todo)} measurements"
        console.print(
            f"[yellow]{name}: {written} of {len(todo)} measurements written; finish with "
            f"roofbench run --sweep {sweep} --resume {folder}[/]"
        )
        _finish(folder, meta, began, telemetry, console)
        raise
    _finish(folder, meta, began, telemetry, console)


def _finish(folder: Path, meta: dict, began: float, telemetry, console) -> None:
    """run.json's wall time, then the summary and plots; a report that cannot be written after
    an interruption is said, not raised over the interruption."""
    meta["wall_time_s"] = meta.get("wall_time_s", 0.0) + time.perf_counter() - began
    meta["finished"] = utc_now()
    write_meta(folder, meta)
    telemetry.close()
    try:
        write_reports(folder)
    except Exception as err:  # noqa: BLE001
        if not meta.get("interrupted"):
            raise
        console.print(f"[red]could not write the report of {folder}: {err}[/]")


def run(
    sweep: str,
    cases: list[OpCase],
    out: str,
    impls: tuple[str, ...] | None = None,
    console: Console | None = None,
    time_cap_s: float = 0.5,
    resume: str | None = None,
    gpm: bool = True,
    calibration: str | bool | None = None,
    gpu_slug: str | None = None,
    observe: bool = True,
    ncu_cases: int = 0,
    plugins: tuple[str, ...] = (),
) -> Path:
    """Measure (or, with no GPU, predict) `cases` for the implementations named in `impls`
    (None: every registered one); returns the run folder. `calibration`: a calibration file,
    None (this GPU's cached one, or calibrate now) or False (no tiered model). `observe`: list
    the vendor libraries' kernels; `ncu_cases`: profile that many cases per op and
    implementation with Nsight Compute afterwards (`plugins` loaded in its processes)."""
    import torch

    from roofbench.bench.core.gpu import resolve_gpu

    console = console or Console()
    cuda = torch.cuda.is_available()
    if gpu_slug and cuda:
        raise ValueError(
            "--gpu names the GPU of a predictions-only run; this one measures the GPU here"
        )
    gpu = resolve_gpu(gpu_slug)
    if resume and not cuda:
        check_resume(Path(resume), sweep, None)  # refuses: nothing is resumed without a GPU
    now = datetime.now(timezone.utc)
    if not cuda:
        # Where no committed-results check looks, and labelled as predictions throughout.
        folder = run_folder(Path(out) / PREDICTED, gpu, now)
        predictions_only(cases, impls, gpu, folder, sweep, console)
    else:
        folder = Path(resume) if resume else run_folder(out, gpu, now)
        measure_sweep(cases, impls, folder, sweep, console, time_cap_s, gpm, calibration, observe)
        if ncu_cases:
            run_ncu(folder, read_records(folder / "records.csv"), console, ncu_cases, plugins)
            write_reports(folder)
    return folder
