"""`roofbench tp`: a tensor-parallel decoder measured across ranks started by torchrun, into
`results/<gpu-slug>/tp-<model>-<UTC time>/`.

`torchrun --nproc-per-node=N --no-python roofbench tp --model llama3-70b`: the ranks are the TP
group (TP = N), each a process on its own GPU (NCCL) or CPU (gloo), set up by bench.comm.run
(multicast kept off in every rank). Then, in order:

1. the link: two send/recv probes calibrate alpha and bandwidth (bench.comm.run.calibrate),
   unless --no-calibration;
2. the check: the reduced model of `tp_points.check_config` (the real model's heads and head_dim,
   2 layers), each rank's part drawn in float64 and cast to the run's dtype, split over the ranks
   (kernels.tp.TPLlama), its prefill and decode logits against the whole reduced model in
   float64 on the same rounded weights; the worst relative error of any rank decides, and a
   failed check leaves every point `failed`, never timed;
3. the model: each rank draws only its own part of the random weights
   (kernels.tp.random_shard), so no process ever holds the whole model;
4. each point on every rank: `ttft` is one prefill of `batch` prompts, `tbt` one decode step of
   `batch` sequences over a cache of `seq` random K and V; on GPUs the call is captured in a CUDA
   graph (NCCL's kernels with it) where every rank manages to, else called eagerly. A sample is
   timed as bench.comm.timing times a collective: CUDA events on GPUs, the host clock under gloo,
   the slowest rank's time agreed by every rank; NVML windows on every GPU.

Rank 0 writes every record (tp_points: theory.tp's prediction beside the measured time); each
record's figures are gathered from every rank first, and a point whose ranks do not hold the
same time and check is `failed`.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.distributed as dist

from roofbench.bench.comm import tp_points, tp_report
from roofbench.bench.comm.cases import keep_multicast_off
from roofbench.bench.comm.records import _telemetry_fields
from roofbench.bench.comm.run import (
    World,
    _agree_max,
    _gpu,
    _share,
    _telemetry,
    calibrate,
    start,
    timed_on_every_rank,
)
from roofbench.bench.comm.tp_points import TPPoint
from roofbench.bench.core.identity import roof_dict, unique_folder, utc_now, versions, write_meta
from roofbench.bench.core.records import Record, RecordWriter
from roofbench.bench.core.sampling import StopRule
from roofbench.kernels.llama import Llama, parse_backend
from roofbench.kernels.tp import TPLlama, random_shard, weights_to
from roofbench.theory import comm, llm, tp
from roofbench.theory.roofline import Roof

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
SEED = 0


def _phases(model, batch: int, tokens: torch.Tensor) -> list[torch.Tensor]:
    """Prefill logits, then CHECK_STEPS decode steps' logits, as float64 on the CPU."""
    n = tp_points.CHECK_TOKENS
    model.allocate_cache(batch, n + tp_points.CHECK_STEPS)
    out = [model.prefill(tokens[:, :n].to(model.device))]
    lens = torch.full((batch,), n, dtype=torch.int32, device=model.device)
    for step in range(tp_points.CHECK_STEPS):
        token = tokens[:, n + step : n + step + 1].to(model.device)
        out.append(model.decode_step(token, lens))
        lens += 1
    model.free_cache()
    return [o.double().cpu() for o in out]


def check(world: World, config, impl: str, dtype: str) -> tuple[float, float]:
    """(worst relative L2 error, worst |error|) of the split reduced model against float64,
    agreed over ranks."""
    small = tp_points.check_config(config, world.ranks)
    cast = _DTYPES[dtype]
    part = random_shard(small, world.ranks, world.rank, "cpu", torch.float64, SEED)
    weights = weights_to(part, world.device, cast)
    model = TPLlama(small, weights, world.ranks, world.rank, parse_backend(impl), sharded=True)
    whole = weights_to(random_shard(small, 1, 0, "cpu", torch.float64, SEED), "cpu", cast)
    reference = Llama(small, weights_to(whole, "cpu", torch.float64))
    gen = torch.Generator().manual_seed(SEED)
    shape = (tp_points.CHECK_BATCH, tp_points.CHECK_TOKENS + tp_points.CHECK_STEPS)
    tokens = torch.randint(0, small.vocab_size, shape, generator=gen)
    try:
        got = _phases(model, tp_points.CHECK_BATCH, tokens)
        want = _phases(reference, tp_points.CHECK_BATCH, tokens)
        rel = max(float((g - w).norm() / w.norm()) for g, w in zip(got, want, strict=True))
        abs_ = max(float((g - w).abs().max()) for g, w in zip(got, want, strict=True))
    except Exception:  # a broken split is a failed check, on every rank alike
        rel = abs_ = math.inf
    rel = math.inf if math.isnan(rel) else rel
    return _agree_max(world, rel), _agree_max(world, abs_)


def _setup(model: TPLlama, point: TPPoint, rank: int):
    """The call to time, on tokens every rank draws alike (and a random cache of its own)."""
    b, n, device = point.batch, point.seq, model.device
    gen = torch.Generator(device=device).manual_seed(point.seq * 131 + point.batch)
    vocab = model.whole.vocab_size
    if point.op == "tbt":
        model.allocate_cache(b, n + 1).fill_random_(seed=n * 8 + rank)
        toks = torch.randint(0, vocab, (b, 1), generator=gen, device=device)
        lens = torch.full((b,), n, dtype=torch.int32, device=device)
        return lambda: model.decode_step(toks, lens)
    toks = torch.randint(0, vocab, (b, n), generator=gen, device=device)
    model.allocate_cache(b, n)
    return lambda: model.prefill(toks)


def _captured(world: World, fn) -> tuple[object, str, str]:
    """(call, method, note): a CUDA graph's replay where every rank captured `fn`, else `fn`."""
    if world.device.type != "cuda":
        return fn, "host", ""
    graph, note = None, ""
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            fn()
            fn()
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
    except RuntimeError as err:
        graph, note = None, f"graph capture failed ({str(err).splitlines()[0]})"
        torch.cuda.synchronize()
    if _agree_max(world, 0.0 if graph is not None else 1.0):
        return fn, "events", note or "graph capture failed on another rank"
    return graph.replay, "graph", ""


def measure_point(world, model, point, record: Record, rule, nvml) -> Record:
    """Time one point on every rank (the same calls in the same order on each)."""
    try:
        fn = _setup(model, point, world.rank)
        oom = 0.0
    except torch.cuda.OutOfMemoryError:
        fn, oom = None, 1.0
    if _agree_max(world, oom):
        model.free_cache()
        return dataclasses.replace(record, status="skipped", reason="out of memory on some rank")
    call, method, note = _captured(world, fn)
    stats, summaries = timed_on_every_rank(world, call, rule, nvml)
    del fn, call
    model.free_cache()
    gc.collect()
    measured = stats.median_s
    changes = {
        "measured_s": measured,
        "p20_s": stats.p20_s,
        "p80_s": stats.p80_s,
        "samples": stats.samples,
        "method": method,
        "reason": note,
    }
    if record.predicted_s:
        changes["error"] = measured / record.predicted_s - 1
    if record.flops:
        changes["achieved_tflops"] = record.flops / measured / 1e12
        changes["achieved_gbps"] = record.bytes / measured / 1e9
    return dataclasses.replace(record, **changes, **_telemetry_fields(summaries))


def _agreed(world: World, record: Record) -> Record:
    """`record` as rank 0 holds it, failed unless every rank holds the same figures."""
    mine = (record.status, record.measured_s, record.samples, record.rel_err)
    held = [None] * world.ranks
    dist.all_gather_object(held, mine)
    if any(h != held[0] for h in held):
        return dataclasses.replace(record, status="failed", reason=f"ranks disagree: {held}")
    return record


def run_tp(args, console) -> Path | None:
    """The whole run on this rank; the run folder on rank 0 (which writes it), None elsewhere."""
    world = start(args.backend)
    try:
        return _run(world, args, console)
    finally:
        dist.destroy_process_group()


@dataclasses.dataclass
class _Run:
    """What every point of a run shares."""

    world: World
    args: object
    config: object  # the measured ModelConfig
    dtype: str
    identity: dict
    roof: Roof | None
    calibrated: comm.Link | None
    datasheet: comm.Link | None
    rule: StopRule
    meta: dict
    console: object
    nvml: object = None
    writer: RecordWriter | None = None

    def write(self, record: Record) -> None:
        record = _agreed(self.world, record)
        if self.writer is not None:
            self.writer.write(record)
            self.console.print(progress(record), highlight=False)


def progress(r: Record) -> str:
    """One console line per finished point."""
    head = f"{r.case} {r.impl}"
    if r.status != "ok":
        return f"{head}: {r.status} ({r.reason})"
    if r.op == "gate":
        return f"{head}: ok (relative error {r.rel_err:.2e})"
    text = f"{head}: {r.measured_s * 1e3:.4g} ms"
    if r.predicted_s:
        text += f", predicted {r.predicted_s * 1e3:.4g} ms ({r.error:+.1%})"
    return text


def _run(world: World, args, console) -> Path | None:
    began = time.perf_counter()
    full = llm.load_model(args.model)
    layers = min(args.layers or full.num_layers, full.num_layers)
    config = full if layers == full.num_layers else full.with_layers(layers)
    tp.shard(config, world.ranks)  # a split that does not exist fails before any work
    todo = tp_points.points(args.sweep, args.max_seq)
    dtype = args.dtype if world.device.type == "cuda" else "fp32"
    slug, gpu_name, driver, spec = _gpu(world)
    folder = None
    if world.leader:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        name = f"tp-{tp_points.slug(full.name)}-tp{world.ranks}-{stamp}"
        folder = str(unique_folder(Path(args.out) / slug, name))
    folder = Path(_share(world, folder))
    roof = Roof.from_spec(spec) if spec is not None else None
    datasheet = comm.Link.from_spec(spec) if spec is not None and spec.link_gbps > 0 else None
    rule = StopRule(max_time_s=args.time_cap)
    calibrated, cal_doc = None, {"skipped": "--no-calibration"}
    if not args.no_calibration:
        largest = max(tp.activation_bytes(config, p.batch * p.seq, dtype) for p in todo)
        calibrated, cal_doc = calibrate(world, dtype, largest, rule)
    identity = {"gpu": gpu_name, "driver": driver, "sweep": f"tp-{args.sweep}", **versions()}
    meta = {
        "kind": "tp",
        "model": full.name,
        "config": dataclasses.asdict(config),
        "layers": config.num_layers,
        "full_layers": full.num_layers,
        "tp": world.ranks,
        "gpus": world.ranks,
        "impl": args.impl,
        "dtype": dtype,
        "sweep": args.sweep,
        "backend": world.backend,
        "gpu": gpu_name,
        "gpu_slug": slug,
        "environment": keep_multicast_off(),
        "started": utc_now(),
        **versions(),
        "datasheet_roof": roof_dict(roof) if roof else None,
        "datasheet_link": dataclasses.asdict(datasheet) if datasheet else None,
        "link_calibration": cal_doc,
        "weights_per_gpu_bytes": tp.shard(config, world.ranks).weights_bytes(dtype),
    }
    run = _Run(
        world, args, config, dtype, identity, roof, calibrated, datasheet, rule, meta, console
    )
    if world.leader:
        run.writer = RecordWriter(folder / "records.csv")
        write_meta(folder, meta)
    run.nvml = _telemetry(world)
    try:
        _measure(run, todo)
    finally:
        if run.nvml is not None:
            run.nvml.close()
        if world.leader:
            run.writer.close()
            meta["wall_time_s"] = time.perf_counter() - began
            meta["finished"] = utc_now()
            write_meta(folder, meta)
            try:  # the records are written: a report that fails loses nothing
                tp_report.write_report(folder)
            except Exception as err:  # noqa: BLE001 - said, not raised over the run's outcome
                console.print(f"[yellow]no summary: {type(err).__name__}: {err}[/]")
    return folder if world.leader else None


def _build(run: _Run) -> tuple[TPLlama | None, str]:
    """This rank's part of the model, or None and why (on every rank alike)."""
    world, model, why = run.world, None, ""
    try:
        model = TPLlama.random_rank(
            run.config,
            world.ranks,
            world.rank,
            parse_backend(run.args.impl),
            world.device,
            _DTYPES[run.dtype],
            SEED,
        )
    except torch.cuda.OutOfMemoryError as err:
        why = f"out of memory building the weights: {str(err).splitlines()[0]}"
    if _agree_max(world, 0.0 if model is not None else 1.0):
        return None, why or "out of memory building the weights on another rank"
    return model, ""


def _measure(run: _Run, todo: list[TPPoint]) -> None:
    world, impl = run.world, run.args.impl
    run.identity["timestamp"] = utc_now()
    rel, abs_ = check(world, run.config, impl, run.dtype)
    gate = tp_points.check_record(run.config, world.ranks, impl, run.dtype, run.identity, rel, abs_)
    run.meta["check"] = {"rel_err": rel, "max_abs_err": abs_, "status": gate.status}
    run.write(gate)
    model, why = _build(run) if gate.status == "ok" else (None, "")
    for point in todo:
        run.identity["timestamp"] = utc_now()
        record = tp_points.tp_record(
            run.config,
            world.ranks,
            point,
            impl,
            run.dtype,
            run.identity,
            run.roof,
            run.calibrated,
            run.datasheet,
        )
        if gate.status != "ok":
            record = dataclasses.replace(record, status="failed", reason=f"check: {gate.reason}")
        elif model is None:
            record = dataclasses.replace(record, status="skipped", reason=why)
        else:
            record = measure_point(world, model, point, record, run.rule, run.nvml)
        run.write(record)
