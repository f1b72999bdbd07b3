"""`roofbench model`: a whole Llama-shaped decoder measured on this GPU and held against theory.

The decoder is `kernels.llama.Llama` (random bf16 weights) on each backend: a preset ("triton":
this project's kernels; "torch": F.linear and SDPA; "fused": ours with the element-wise work
fused; "fused-folded": "fused" with the norms' gains folded into copies of the weights;
"compile": torch's compiled by torch.compile, `kernels.llama_compiled`, side by side with
`--impls torch,compile,triton`) or per-op choices of registered
implementations (`decode_attention=mine,gemm=triton`). Every measurement is one `Record` in
`model_records.csv`, written as soon as it is made, with its prediction from `theory.llm` on the
run's measured roof (`bench.core.ceilings`, measured once per run) and on the datasheet roof:

- `ttft`: one prefill of `batch` prompts of `seq` tokens (`Llama.prefill`: every position, K and
  V cached, logits of the last token), timed per call with CUDA events (by graph replay when
  predicted under 50 ms, where launching from Python would be timed); `theory.llm.prefill`.
- `tbt`: one decode step of `batch` sequences holding `seq` cached tokens each (the cache filled
  with random K and V, as a prefill would leave it), captured in a CUDA graph and timed by
  replaying it; `theory.llm.decode_step`. Throughput = batch / TBT tokens per second.
- `naive_step`: the next token without a KV cache, all `seq` tokens recomputed
  (`Llama.naive_step`), timed with events; `theory.llm.naive_step`. Set against `tbt` at batch 1
  and the same `seq`, the two growth exponents (slope of log time vs log N over the upper half
  of the points) are fitted for the measured and for the predicted times.
- MHA vs GQA: `tbt` of the same model with one KV head per query head (`ModelConfig.with_mha`).
- Memory-bound batch: at one short context, the smallest swept batch whose TBT exceeds 1.25x the
  batch-1 TBT, for the measured times and, by the same rule, for the predicted ones.
- `gate` (`bench.model.gate`): before any timing, each backend's logits against the torch
  backend's on the same weights and tokens; a backend over the tolerance is never timed.

A point that cannot fit in free memory (theory's KV-cache bytes plus the decoder's workspace
estimate, and the fit margin of `points.fits`), or that runs out of memory, is `skipped` with
the reason. Depth: a model whose weights would take more than half the memory free at the start
(less the margin) is measured with fewer layers
(`ModelConfig.with_layers`); its predictions are for the same reduced model, and the summary adds
a full-depth estimate. Without a CUDA GPU the run writes theory's predictions only.

Output: `results/<gpu-slug>/model-<model>-<UTC time>/` with model_records.csv, model_summary.md,
ttft.png, tbt.png, throughput_latency.png, naive_vs_cached.png and run.json.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from roofbench.bench.core.identity import (
    roof_dict,
    unique_folder,
    utc_now,
    versions,
    write_meta,
)
from roofbench.bench.core.records import Record, RecordWriter, progress_line
from roofbench.bench.core.signals import interruptible
from roofbench.bench.model.measure import MIN_SAMPLES, MeasureContext, ModelBench
from roofbench.bench.model.points import (
    DTYPE,
    FIT_MARGIN_BYTES,
    NO_GPU_NOTE,
    NO_GPU_REASON,
    RECORDS_CSV,
    SWEEPS,
    WEIGHT_FRACTION,
    Task,
    base_record,
    fitting_layers,
    held_weight_bytes,
    run_tasks,
    slug,
    sweep_points,
)
from roofbench.bench.model.step_report import ALL_POINTS_KEY, record_step_plans
from roofbench.kernels import fused_step
from roofbench.kernels._util import has_pdl
from roofbench.kernels.llama import (
    COMPILE,
    FOLDED,
    FUSED,
    PRESETS,
    backend_label,
    resolve_backend,
)
from roofbench.kernels.llama_plan import DECLARATIONS
from roofbench.theory import llm
from roofbench.theory.llm import ModelConfig
from roofbench.theory.roofline import Roof

BACKENDS = PRESETS  # the default
ALL_PRESETS = (*PRESETS, FUSED, FOLDED, COMPILE)  # every whole-decoder backend a name stands for


def parse_impls(text: str) -> tuple[str | dict[str, str], ...]:
    """`--impls` of a model run: presets (`triton,torch`: one backend each) and/or per-op
    choices (`decode_attention=mine,gemm=triton`: together one backend, the other ops on their
    baselines). Raises ValueError naming an unknown preset, op or implementation."""
    presets, per_op = [], {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if "=" in part:
            op, name = (x.strip() for x in part.split("=", 1))
            per_op[op] = name
        else:
            presets.append(part)
    backends: list[str | dict[str, str]] = list(dict.fromkeys(presets))
    if per_op:
        backends.append(per_op)
    if not backends:
        raise ValueError("--impls is empty")
    for backend in backends:
        resolve_backend(backend)
    return tuple(backends)


def _variants(config: ModelConfig) -> dict[str, ModelConfig]:
    variants = {"base": config}
    if config.num_kv_heads != config.num_heads:
        variants["mha"] = config.with_mha()
    return variants


def run_model(
    model_name: str,
    layers: int | None = None,
    sweep: str = "quick",
    out_dir: str | Path = "results",
    backends: Sequence[str | dict[str, str]] = BACKENDS,
    time_budget_s: float | None = None,
    console=None,
    *,
    time_cap_s: float = 1.0,
    gpm: bool = True,
    calibration: str | bool | None = None,
) -> Path:
    """Measure (or, without a GPU, predict) `model_name` over sweep `sweep`; returns the folder.

    `model_name`: a built-in name (`theory.llm.MODELS`) or a config.json path. `layers`: the
    depth to measure (default: the model's, or as many layers as fit in half the memory free).
    `time_budget_s`: wall time after which the remaining points are written as skipped.
    `time_cap_s`: most seconds of sampling per point. `gpm`: GPM windows for short calls.
    `calibration`: a calibration file for the kernel-by-kernel tier, None (this GPU's cached
    one, or calibrate now) or False (none).
    """
    import torch
    from rich.console import Console

    from roofbench.bench.core.gpu import resolve_gpu

    began = time.perf_counter()
    console = console or Console()
    if sweep not in SWEEPS:
        raise ValueError(f"unknown sweep {sweep!r} (known: {', '.join(SWEEPS)})")
    if not backends:
        raise ValueError("no backend to measure")
    for backend in backends:
        resolve_backend(backend)  # an unknown preset, op or implementation fails here
    specs = {backend_label(b): b for b in backends}
    backends = tuple(specs)
    if layers is not None and layers <= 0:
        raise ValueError(f"layers must be positive, got {layers}")
    full = llm.load_model(model_name)
    gpu = resolve_gpu(None)
    cuda = torch.cuda.is_available()
    # What the weights and caches may take: the memory free now less the fit margin, or for a
    # prediction the datasheet's memory.
    if cuda:
        free_bytes, _ = torch.cuda.mem_get_info(torch.cuda.current_device())
        memory_bytes = free_bytes - FIT_MARGIN_BYTES
    else:
        memory_bytes = gpu.memory_gb * 1e9
    # The name the device reports, as the kernel sweep records it; the table's name without one.
    gpu_name = torch.cuda.get_device_name() if cuda else f"predicted for {gpu.name}"
    auto = layers is None
    folded = FOLDED in backends  # its copies of the weights are held beside them
    layers = min(layers or fitting_layers(full, memory_bytes, folded=folded), full.num_layers)
    config = full if layers == full.num_layers else full.with_layers(layers)
    variants = _variants(config)
    points = sweep_points(SWEEPS[sweep], mha="mha" in variants)
    # Only the variants the sweep has points on are built and gated (a decode-only sweep has no
    # MHA twin: its weights are not worth the memory and the gate's time).
    variants = {k: v for k, v in variants.items() if any(p.variant == k for p in points)}
    # Variant by variant (one model's weights in memory at a time); each point on every backend
    # before the next, so a time budget that runs out leaves the backends compared point by point.
    tasks = [
        Task(config_, p, b)
        for variant, config_ in variants.items()
        for p in points
        if p.variant == variant
        for b in backends
    ]
    started = datetime.now(timezone.utc)
    # Predictions only (no GPU) go under out/predicted/, where no committed-results check looks.
    root = Path(out_dir) if cuda else Path(out_dir) / "predicted"
    folder = unique_folder(root / gpu.slug, f"model-{slug(full.name)}-{started:%Y%m%dT%H%M%SZ}")
    datasheet = Roof.from_spec(gpu)
    meta = {
        "model": full.name,
        "configs": {
            "full": dataclasses.asdict(full),
            **{k: dataclasses.asdict(v) for k, v in variants.items()},
        },
        "layers": layers,
        "full_layers": full.num_layers,
        "depth_reduced": layers < full.num_layers,
        "depth_reason": _depth_reason(full, layers, auto, memory_bytes, folded),
        "sweep": sweep,
        "sweep_spec": dataclasses.asdict(SWEEPS[sweep]),
        "backends": list(backends),
        "dtype": DTYPE,
        "gpu": gpu_name,
        "gpu_slug": gpu.slug,
        "started": utc_now(),
        **versions(),
        "datasheet_roof": roof_dict(datasheet),
        "measured_roof": None,
        "ceilings": None,
        "time_budget_s": time_budget_s,
    }
    identity = {"gpu": gpu_name, "sweep": f"model-{sweep}", **versions()}
    if not cuda:
        meta["note"] = NO_GPU_NOTE
        write_meta(folder, meta)
        with RecordWriter(folder / RECORDS_CSV) as writer:
            for task in tasks:
                record = base_record(task, datasheet, None, {**identity, "timestamp": utc_now()})
                writer.write(dataclasses.replace(record, status="skipped", reason=NO_GPU_REASON))
        console.print(f"[yellow]{NO_GPU_NOTE}[/]")
    else:
        deadline = None if time_budget_s is None else began + time_budget_s
        try:
            with interruptible() as stop:  # SIGTERM too, not only Ctrl-C: the report written
                _measure(
                    folder, meta, tasks, specs, identity, deadline, console, time_cap_s, gpm,
                    calibration, stop,
                )  # fmt: skip
        except BaseException:
            # Interrupted or broken beyond one point: report what was written, then re-raise.
            meta["interrupted"] = True
            _finish(folder, meta, began, console)
            raise
    _finish(folder, meta, began, console)
    return folder


def _finish(folder: Path, meta: dict, began: float, console) -> None:
    from roofbench.bench.model.report import write_report  # the report reads this module

    meta["wall_time_s"] = time.perf_counter() - began
    meta["finished"] = utc_now()
    write_meta(folder, meta)
    try:
        write_report(folder)
    except Exception as err:  # a report problem must not hide the run's own outcome
        console.print(f"[red]could not write the report of {folder}: {err}[/]")
        if not meta.get("interrupted"):
            raise
    console.print(f"wrote {folder}")


def _depth_reason(
    full: ModelConfig, layers: int, auto: bool, memory_bytes: float, folded: bool = False
) -> str:
    if layers >= full.num_layers:
        return ""
    held = held_weight_bytes(full, folded)
    what = "and fused-folded's copies of them " if folded else ""
    why = (
        f"the weights of all {full.num_layers} layers {what}({held / 1e9:.0f} GB) "
        f"exceed {WEIGHT_FRACTION:.0%} of the {memory_bytes / 1e9:.0f} GB free for them"
        if auto
        else "as asked"
    )
    return f"measured with {layers} of {full.num_layers} layers ({why})"


def _cuda_device():
    import torch

    return torch.device("cuda", torch.cuda.current_device())


def _measure(
    folder,
    meta,
    tasks,
    specs,
    identity,
    deadline,
    console,
    time_cap_s,
    gpm,
    calibration=None,
    stop=None,
) -> None:
    """Ceilings, then every task, each record flushed as it is made (none after `stop`, the
    StopFlag of `interruptible`, caught a signal)."""
    import torch

    from roofbench.bench.core.ceilings import (
        ceiling_records,
        ceilings_dict,
        measure_ceilings,
        measured_roof,
    )
    from roofbench.bench.core.telemetry import Telemetry
    from roofbench.bench.core.timing import StopRule

    device = _cuda_device()
    telemetry = Telemetry(torch.cuda.current_device())
    info = telemetry.info()
    identity.update(gpu=info.name or torch.cuda.get_device_name(device))
    identity.update(driver=info.driver_version or "")
    datasheet = Roof(**meta["datasheet_roof"])
    console.print(f"measuring ceilings on {identity['gpu']} ...")
    ceilings = measure_ceilings(telemetry=telemetry, gpm=gpm)
    roof = measured_roof(ceilings)
    meta.update(
        gpu=identity["gpu"],
        driver=identity["driver"],
        measured_roof=roof_dict(roof),
        ceilings=ceilings_dict(ceilings),
    )
    if calibration is not False:
        from roofbench.bench.core.calibrate import load_or_calibrate
        from roofbench.theory.tiers import MODEL_VERSION

        meta["calibration"] = load_or_calibrate(calibration or None, telemetry, console)
        meta["tiers_model"] = MODEL_VERSION
    meta["step_declarations"] = dict(DECLARATIONS)
    meta[ALL_POINTS_KEY] = True  # record_step_plans keeps skipped points' plans too
    # The fused decoder's GEMVs launch as programmatic dependents where the GPU allows it, and
    # from this batch its decode step's rotary and attention kernels too (0: never).
    meta["fused_pdl"] = has_pdl(device)
    meta["fused_pdl_attention"] = fused_step.PDL_ATTENTION_MIN_BATCH
    # and from this batch rotary, the KV append and attention as one kernel (0: never)
    meta["fused_one_kernel_attention"] = fused_step.ONE_KERNEL_ATTENTION_MIN_BATCH
    write_meta(folder, meta)
    console.print(roof.source)
    rule = StopRule(min_samples=MIN_SAMPLES, max_samples=200, max_time_s=time_cap_s)
    ctx = MeasureContext(datasheet, roof, telemetry, rule, {**identity}, gpm, device)
    with RecordWriter(folder / RECORDS_CSV) as writer:
        ctx.identity["timestamp"] = meta["started"]
        for record in ceiling_records(ceilings, ctx):
            writer.write(record)
        count = {"n": 0}

        def write(record: Record) -> None:
            if stop is not None:
                stop.check()  # a signal a point swallowed still ends the run, its row unwritten
            writer.write(record)
            # The plans the kernel-by-kernel tier reads back, kept if the run dies later.
            if meta.get("calibration") and record_step_plans(meta, record):
                write_meta(folder, meta)
            if record.op != "gate":
                count["n"] += 1
                line = progress_line(record)
                console.print(f"[{count['n']}/{len(tasks)}] {line}", highlight=False)

        def base(task: Task) -> Record:
            ctx.identity["timestamp"] = utc_now()
            return base_record(task, datasheet, roof, ctx.identity)

        bench = ModelBench(ctx, specs, write, console)
        try:
            meta["stopped_early"] = run_tasks(tasks, base, bench.measure, write, deadline)
        finally:
            meta["gate"] = bench.gate_log
            bench.close()
            telemetry.close()
