"""What a model run measures, as data: sweeps, points, tasks and the theory half of a record.

A point is one measurement's shape (phase `ttft`, `tbt` or `naive_step`, batch, length) on the
model or its MHA variant; a task is a point on one backend. Each record starts as
`base_record`: theory's prediction of the point (`theory.llm` via `theory.analysis`) on the
measured and the datasheet roof.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from roofbench.bench.core.memory import (  # noqa: F401 - the model's fit rule, by these names
    FIT_ESTIMATE_SLACK,
    FIT_MARGIN_BYTES,
    fit_margin_bytes,
    fit_reason,
    fits,
)
from roofbench.bench.core.records import Record
from roofbench.kernels.spec import powers_of_two
from roofbench.theory import llm
from roofbench.theory.analysis import MODEL_PHASES, model_phase
from roofbench.theory.llm import ModelConfig
from roofbench.theory.ops import dtype_bytes
from roofbench.theory.roofline import Roof

PHASES = MODEL_PHASES
DTYPE = "bf16"
RECORDS_CSV = "model_records.csv"
SUMMARY_MD = "model_summary.md"
PLOTS = ("ttft.png", "tbt.png", "throughput_latency.png", "naive_vs_cached.png")

NO_GPU_REASON = "no CUDA GPU: predictions only"
NO_GPU_NOTE = (
    "No CUDA GPU is visible to torch: this report holds theory's predictions only, on the "
    "datasheet roof. Measuring needs a GPU."
)
BUDGET_REASON = "time budget reached"

# A model is cut to the layers whose weights fit in this share of the memory free for it (free
# memory less the fit margin), leaving the rest for the KV cache and activations.
WEIGHT_FRACTION = 0.5


# --- sweeps, as data ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSweep:
    """What one sweep measures; every length is in tokens."""

    name: str
    ttft_batches: tuple[int, ...]
    ttft_prompts: tuple[int, ...]
    tbt_batches: tuple[int, ...]
    tbt_contexts: tuple[int, ...]
    naive_sequences: tuple[int, ...]  # naive_step at batch 1, and tbt at batch 1 beside it
    knee_context: int  # short, so the weights (not the KV cache) decide the memory-bound batch
    knee_batches: tuple[int, ...]
    mha_batches: tuple[int, ...]
    mha_contexts: tuple[int, ...]
    max_prefill_tokens: int | None = None  # TTFT points with batch x prompt above it are left out


SWEEPS: dict[str, ModelSweep] = {
    "quick": ModelSweep(
        name="quick",
        ttft_batches=(1,),
        ttft_prompts=(512, 4096),
        tbt_batches=(1, 16),
        tbt_contexts=(512, 8192),
        naive_sequences=(512, 2048, 8192),
        knee_context=32,
        knee_batches=(1, 64, 256, 512),
        mha_batches=(1,),
        mha_contexts=(8192,),
    ),
    # The decode step the weight-read check is about (batch 1, 4 and 16 at a short context,
    # where the weights dominate the bytes) and nothing else: a few points, so that a backend
    # that compiles every shape (torch.compile) is measured in minutes.
    "decode": ModelSweep(
        name="decode",
        ttft_batches=(),
        ttft_prompts=(),
        tbt_batches=(1, 4, 16),
        tbt_contexts=(512,),
        naive_sequences=(),
        knee_context=512,
        knee_batches=(),
        mha_batches=(),
        mha_contexts=(),
    ),
    "medium": ModelSweep(
        name="medium",
        ttft_batches=(1, 4, 16),
        ttft_prompts=powers_of_two(128, 32768)[::2],  # 128, 512, 2048, 8192, 32768
        tbt_batches=(1, 4, 16, 64, 256),
        tbt_contexts=powers_of_two(128, 32768)[::2],
        naive_sequences=powers_of_two(128, 8192)[::2],
        knee_context=32,
        knee_batches=powers_of_two(1, 512),
        mha_batches=(1, 16),
        mha_contexts=(512, 8192),
        max_prefill_tokens=32768,
    ),
    "full": ModelSweep(
        name="full",
        ttft_batches=(1, 4, 16),
        ttft_prompts=powers_of_two(128, 32768),
        tbt_batches=powers_of_two(1, 256),
        tbt_contexts=powers_of_two(128, 32768),
        naive_sequences=powers_of_two(128, 8192),
        knee_context=32,
        knee_batches=powers_of_two(1, 1024),
        mha_batches=(1, 16),
        mha_contexts=(512, 2048, 8192, 32768),
    ),
}


@dataclass(frozen=True)
class Point:
    """One measurement's shape: `variant` "base" (the model) or "mha"; `seq` is the prompt
    (ttft), the cached context (tbt) or the recomputed sequence (naive_step)."""

    variant: str
    op: str
    batch: int
    seq: int


def sweep_points(sweep: ModelSweep, mha: bool = True) -> list[Point]:
    """The points of `sweep` in the order they are measured, each once."""
    cap = sweep.max_prefill_tokens
    base = [
        Point("base", "ttft", b, n)
        for b in sweep.ttft_batches
        for n in sweep.ttft_prompts
        if cap is None or b * n <= cap
    ]
    tbt = {(b, c) for b in sweep.tbt_batches for c in sweep.tbt_contexts}
    tbt |= {(b, sweep.knee_context) for b in sweep.knee_batches}
    tbt |= {(1, n) for n in sweep.naive_sequences}
    tbt |= {(b, c) for b in sweep.mha_batches for c in sweep.mha_contexts}
    base += [Point("base", "tbt", b, c) for b, c in sorted(tbt)]
    base += [Point("base", "naive_step", 1, n) for n in sweep.naive_sequences]
    if not mha:
        return base
    return base + [Point("mha", "tbt", b, c) for b in sweep.mha_batches for c in sweep.mha_contexts]


def slug(name: str) -> str:
    """A model name usable in a case id and a folder name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "model"


def case_id(config: ModelConfig, point: Point) -> str:
    """e.g. llama3-8b/ttft/b1_n4096, llama3-8b/tbt/b16_c8192, llama3-8b/naive_step/b1_n512."""
    length = f"c{point.seq}" if point.op == "tbt" else f"n{point.seq}"
    return f"{slug(config.name)}/{point.op}/b{point.batch}_{length}"


def phase(config: ModelConfig, roof: Roof, op: str, batch: int, seq: int) -> llm.Phase:
    """Theory's cost and time of one measurement (`theory.analysis.model_phase` in bf16)."""
    return model_phase(config, roof, op, batch, seq, DTYPE)


def held_weight_bytes(config: ModelConfig, folded: bool = False) -> int:
    """What a model run holds of the weights: the weights, and with `folded` the "fused-folded"
    backend's copies of the matrices a norm feeds (`kernels.fused_step.FoldedGains`)."""
    copies = config.norm_fed_params() * dtype_bytes(DTYPE) if folded else 0
    return config.weights_bytes(DTYPE) + copies


def fitting_layers(
    config: ModelConfig,
    memory_bytes: float,
    fraction: float = WEIGHT_FRACTION,
    folded: bool = False,
) -> int:
    """The most layers (at most the model's) whose weights take <= `fraction` of the memory,
    with `folded` the "fused-folded" backend's copies of them too (`held_weight_bytes`)."""

    def held(c: ModelConfig) -> float:
        return held_weight_bytes(c, folded)

    budget = fraction * memory_bytes
    if held(config) <= budget:
        return config.num_layers
    one = held(config.with_layers(1))
    per_layer = held(config.with_layers(2)) - one
    rest = one - per_layer
    return max(1, min(config.num_layers, int((budget - rest) // per_layer)))


# --- records -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    config: ModelConfig
    point: Point
    backend: str


def base_record(task: Task, datasheet: Roof, measured: Roof | None, identity: dict) -> Record:
    """The theory half of a record; without a measured roof the datasheet roof's bound is kept."""
    config, p = task.config, task.point
    on_datasheet = phase(config, datasheet, p.op, p.batch, p.seq)
    on_measured = phase(config, measured, p.op, p.batch, p.seq) if measured else None
    main = on_measured or on_datasheet
    return Record(
        case=case_id(config, p),
        op=p.op,
        impl=task.backend,
        dtype=DTYPE,
        batch=p.batch,
        seq=p.seq,
        m=p.batch if p.op == "tbt" else p.batch * p.seq,  # token rows through the projections
        heads=config.num_heads,
        kv_heads=config.num_kv_heads,
        head_dim=config.head_dim,
        flops=main.flops,
        bytes=main.bytes_,
        intensity=main.intensity,
        predicted_s=on_measured.time_s if on_measured else None,
        predicted_datasheet_s=on_datasheet.time_s,
        bound=main.bound,
        **{k: v for k, v in identity.items() if k in Record.__dataclass_fields__},
    )


def run_tasks(
    tasks: Iterable[Task],
    base: Callable[[Task], Record],
    measure: Callable[[Task, Record], Record],
    write: Callable[[Record], None],
    deadline: float | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> bool:
    """Measure the tasks in order, writing each record; once `clock()` passes `deadline`, the
    rest are written as skipped (with their predictions). Returns whether the deadline hit."""
    stopped = False
    for task in tasks:
        stopped = stopped or (deadline is not None and clock() >= deadline)
        record = base(task)
        if stopped:
            write(dataclasses.replace(record, status="skipped", reason=BUDGET_REASON))
        else:
            write(measure(task, record))
    return stopped


def need_bytes(config: ModelConfig, point: Point) -> int:
    """Memory a point needs beside the weights: theory's KV-cache bytes for what it caches, and
    the decoder's workspace estimate."""
    from roofbench.kernels.llama import workspace_bytes

    b, n = point.batch, point.seq
    if point.op == "ttft":
        return config.kv_cache_bytes(n, b, DTYPE) + workspace_bytes(config, b * n, b, DTYPE)
    if point.op == "naive_step":
        return workspace_bytes(config, b * n, b, DTYPE)
    return config.kv_cache_bytes(n + 1, b, DTYPE) + workspace_bytes(config, b, b, DTYPE)
