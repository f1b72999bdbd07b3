"""`roofbench comm`: collectives measured across ranks into `results/<gpu-slug>/comm-<UTC time>/`.

One process per GPU, started by torchrun (so one command spans several hosts through torchrun's
rendezvous): `torchrun --nproc-per-node=N --no-python roofbench comm`. NCCL on GPUs, gloo on
CPUs. Per case: the theory half (theory.comm on the datasheet link and on the calibrated one),
the correctness check of what the collective delivered (every rank checks its own output; the
worst error is agreed, so all ranks skip the timing of a failed case together), the timing
(bench.comm.timing) under an NVML window on every GPU, and one record written by rank 0 as it
finishes. Before the cases, two send/recv probes (8 B and a large message) calibrate the link's
alpha and bandwidth (theory.comm.calibrate_link), unless --no-calibration.
"""

from __future__ import annotations

import dataclasses
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.distributed as dist

from roofbench.bench.comm import collectives, report
from roofbench.bench.comm.cases import CommCase, cases, keep_multicast_off, sizes
from roofbench.bench.comm.records import comm_record, fill_measurement, probe_size
from roofbench.bench.comm.timing import time_collective
from roofbench.bench.core.identity import unique_folder, utc_now, versions, write_meta
from roofbench.bench.core.records import RecordWriter, replace
from roofbench.bench.core.sampling import StopRule
from roofbench.theory import comm

TORCHRUN_HINT = (
    "roofbench comm runs one process per GPU under torchrun: "
    "torchrun --nproc-per-node=N --no-python roofbench comm [options]"
)
CPU_SLUG = "cpu"  # where gloo runs on CPUs go: out/cpu/comm-<time>/


@dataclasses.dataclass
class World:
    """This rank's place: rank, ranks, local rank, device, backend."""

    rank: int
    ranks: int
    local_rank: int
    device: torch.device
    backend: str

    @property
    def leader(self) -> bool:
        return self.rank == 0


def torchrun_env(env=os.environ) -> tuple[int, int, int]:
    """(rank, world size, local rank) as torchrun sets them; ValueError with the command to run
    when they are absent."""
    try:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", env["RANK"]))
    except (KeyError, ValueError):
        raise ValueError(TORCHRUN_HINT) from None


def start(backend: str | None) -> World:
    """The process group: NCCL with one GPU per local rank where CUDA is, else gloo."""
    rank, ranks, local = torchrun_env()
    keep_multicast_off()
    cuda = torch.cuda.is_available() and backend != "gloo"
    if backend == "nccl" and not torch.cuda.is_available():
        raise ValueError("--backend nccl needs CUDA GPUs; torch sees none (gloo runs on CPUs)")
    if cuda:
        if local >= torch.cuda.device_count():
            raise ValueError(
                f"local rank {local} has no GPU: {torch.cuda.device_count()} visible; start "
                "at most that many processes per node"
            )
        torch.cuda.set_device(local)
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    name = "nccl" if cuda else "gloo"
    dist.init_process_group(name)
    return World(rank, ranks, local, device, name)


def _share(world: World, value):
    """Rank 0's `value` on every rank."""
    box = [value if world.leader else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _gpu(world: World):
    """(slug, name, driver, spec) of this host's GPU; the CPU's when gloo runs there."""
    if world.device.type != "cuda":
        return CPU_SLUG, "cpu (gloo)", "", None
    from roofbench.bench.core.gpu import resolve_gpu
    from roofbench.bench.core.telemetry import Telemetry

    with Telemetry(world.local_rank) as nvml:
        info = nvml.info()
    spec = resolve_gpu(None)
    name = info.name or torch.cuda.get_device_name(world.device)
    return spec.slug, name, info.driver_version or "", spec


def _probe(world: World, size_bytes: int, dtype: str, rule: StopRule) -> comm.Probe:
    case = CommCase("send_recv", size_bytes, dtype, world.ranks)
    buffers = collectives.allocate(
        "send_recv", world.ranks, case.count, world.rank, 1, dtype, world.device
    )
    fn = collectives.call("send_recv", buffers, world.rank, world.ranks)
    stats, _ = time_collective(fn, world.device, rule)
    return comm.Probe(1, float(size_bytes), stats.median_s)


def calibrate(
    world: World, dtype: str, largest: int, rule: StopRule
) -> tuple[comm.Link | None, dict]:
    """The link from two send/recv probes (8 B and `probe_size`), and what run.json says of it."""
    if world.ranks < 2:
        return None, {"skipped": "one rank: no link to calibrate"}
    big = probe_size(largest)
    small_probe = _probe(world, 8, dtype, rule)
    large_probe = _probe(world, big, dtype, rule)
    doc = {
        "method": f"send/recv (each rank to the next) at 8 B and {big} B, medians; "
        "time = alpha + bytes / bandwidth solved for both",
        "probes": [dataclasses.asdict(small_probe), dataclasses.asdict(large_probe)],
    }
    try:
        link = comm.calibrate_link(small_probe, large_probe, "calibrated: " + doc["method"])
    except ValueError as err:
        return None, {**doc, "error": str(err)}
    return link, {**doc, "alpha_s": link.alpha_s, "link_gbps": link.bandwidth_bytes_per_s / 1e9}


def _telemetry(world: World):
    if world.device.type != "cuda":
        return None
    from roofbench.bench.core.telemetry import Telemetry

    return Telemetry(world.local_rank)


def timed_on_every_rank(world: World, call, rule, nvml):
    """(`call` timed by time_collective on this rank, every rank's NVML window summary, or
    None where a rank reads no NVML), under this rank's telemetry window when it has one."""
    summary = None
    if nvml is not None:
        with nvml.window() as win:
            stats, _ = time_collective(call, world.device, rule)
        summary = win.summary()
    else:
        stats, _ = time_collective(call, world.device, rule)
    summaries = [None] * world.ranks
    dist.all_gather_object(summaries, summary)
    return stats, summaries


def measure_case(world: World, case: CommCase, record, rule: StopRule, nvml, seed: int, link):
    """Check, then time, one case on every rank; the finished record on rank 0 (None elsewhere)."""
    refused = case.refuses()
    if refused:
        return replace(record, status="skipped", reason=refused)
    try:
        buffers = collectives.allocate(
            case.collective, world.ranks, case.count, world.rank, seed, case.dtype, world.device
        )
        oom = 0.0
    except torch.cuda.OutOfMemoryError:
        buffers, oom = None, 1.0
    if _agree_max(world, oom):  # every rank skips together, or none does
        return replace(record, status="skipped", reason="out of memory on some rank")
    fn = collectives.call(case.collective, buffers, world.rank, world.ranks)
    fn()
    if world.device.type == "cuda":
        torch.cuda.synchronize(world.device)
    err, tol = collectives.check(
        case.collective, buffers, world.ranks, case.count, world.rank, seed, case.dtype
    )
    worst = _agree_max(world, err / tol if tol else err)
    record = replace(record, max_abs_err=_agree_max(world, err))
    if worst > 1.0:
        return replace(record, status="failed", reason=f"wrong values (max |err| {err:g})")
    stats, summaries = timed_on_every_rank(world, fn, rule, nvml)
    del buffers
    return fill_measurement(record, case, stats, summaries, link)


def _agree_max(world: World, value: float) -> float:
    held = torch.tensor([float(value)], dtype=torch.float64, device=world.device)
    dist.all_reduce(held, op=dist.ReduceOp.MAX)
    return held.item()


def run_comm(args, console) -> Path | None:
    """The whole run on this rank; returns the run folder on rank 0 (which writes it), None on
    the others."""
    world = start(args.backend)
    try:
        return _run(world, args, console)
    finally:
        dist.destroy_process_group()


def _run(world: World, args, console) -> Path | None:
    began = time.perf_counter()
    todo = cases(args.sweep, args.collectives, args.dtype, world.ranks, args.max_bytes)
    slug, gpu_name, driver, spec = _gpu(world)
    folder = None
    if world.leader:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        folder = str(unique_folder(Path(args.out) / slug, f"comm-{stamp}"))
    folder = Path(_share(world, folder))
    datasheet = comm.Link.from_spec(spec) if spec is not None and spec.link_gbps > 0 else None
    rule = StopRule(max_time_s=args.time_cap)
    calibrated, cal_doc = None, {"skipped": "--no-calibration"}
    if not args.no_calibration:
        largest = max(sizes(args.sweep, args.max_bytes))
        calibrated, cal_doc = calibrate(world, args.dtype, largest, rule)
    identity = {"gpu": gpu_name, "driver": driver, "sweep": args.sweep, **versions()}
    meta = {
        "kind": "comm",
        "sweep": args.sweep,
        "gpu": gpu_name,
        "gpu_slug": slug,
        "gpus": world.ranks,
        "backend": world.backend,
        "local_world_size": int(os.environ.get("LOCAL_WORLD_SIZE", world.ranks)),
        "environment": keep_multicast_off(),
        "started": utc_now(),
        **versions(),
        "datasheet_link": dataclasses.asdict(datasheet) if datasheet else None,
        "link_calibration": cal_doc,
        "datasheet_roof": None,
        "measured_roof": None,
    }
    nvml = _telemetry(world)
    writer = RecordWriter(folder / "records.csv") if world.leader else None
    if world.leader:
        write_meta(folder, meta)
    try:
        for index, case in enumerate(todo, 1):
            identity["timestamp"] = utc_now()
            record = comm_record(case, world.backend, identity, calibrated, datasheet)
            link = calibrated or datasheet
            record = measure_case(world, case, record, rule, nvml, index, link)
            if world.leader:
                writer.write(record)
                console.print(f"[{index}/{len(todo)}] {report.progress(record)}", highlight=False)
    finally:
        if nvml is not None:
            nvml.close()
        if world.leader:
            writer.close()
            meta["wall_time_s"] = time.perf_counter() - began
            meta["finished"] = utc_now()
            write_meta(folder, meta)
    if not world.leader:
        return None
    report.write_report(folder)
    return folder
