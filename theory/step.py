"""A whole step of a decoder (a prefill, a decode step) predicted kernel by kernel.

The one-launch-per-phase roofline of `theory.llm` charges a step one launch and its compulsory
bytes at the roof. A real step launches hundreds of kernels (a Llama 3 8B decode step about 600:
per layer norms, rotary, projections, attention, activation, residual adds, KV append), each
with a launch floor, a fixed cost and the traffic of its own operands (DESIGN, "Where the time
goes"). Here a step is the list of kernels its decoder declares (`StepKernel`, e.g.
`kernels.llama_plan`), and its time is

    step_s = sum over kernels of count x tiers.predict(work, plan).time_s

with every kernel predicted as graph-replayed: the kernels of one step run back to back with no
flush between them (so no dirty-L2 write-back per kernel) and the GPU stays busy (the sustained
matmul peak). The time is broken down (`BREAKDOWN`) into what the step spends it on:

- `weights`: the projections' bodies (their weight read when memory-bound, FLOPs when not);
- `kv_cache`: attention's streaming of the cache (memory-bound attention) and the KV append;
- `attention`: attention's tensor-core, exp2 and ALU time (compute-bound attention);
- `lm_head`: the LM head's body;
- `elementwise`: the bodies of every other kernel (norms, rotary, activation, residual adds,
  embedding, masks, layout copies, index updates);
- `launch`, `fixed`: the launch floors and fixed costs of every kernel.

A body is a kernel's time less its launch and fixed terms (`tiers.TERMS`), so the breakdown sums
to the step's time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from roofbench.theory import tiers
from roofbench.theory.plan import LaunchPlan
from roofbench.theory.roofline import Roof
from roofbench.theory.tiers import Calibration, Work

# What a kernel of a step does (`StepKernel.kind`).
KINDS = (
    "embedding",  # the token embedding lookup
    "index",  # positions, lengths and rotary-table lookups of a decode step
    "norm",  # RMSNorm
    "projection",  # a layer's linear layers
    "bias",  # a projection's bias add
    "rotary",  # rotary position embedding of Q and K
    "kv_append",  # K and V written to the cache
    "attention",  # prefill or decode attention
    "mask",  # the key mask of an attention implementation
    "layout",  # a copy that makes a strided result contiguous
    "residual",  # a residual add
    "activation",  # SiLU(gate) x up
    "lm_head",  # the logits
)
BREAKDOWN = ("weights", "kv_cache", "attention", "lm_head", "elementwise", "launch", "fixed")
# A step's kernels follow each other with no flush and no idle gap (see the module docstring).
STEP_METHOD = "graph"


@dataclass(frozen=True)
class StepKernel:
    """One kernel (or one op call, whose `plan` may launch several) of a step, `count` times.

    `call` is what launches it in the decoder's code (a torch function such as "rms_norm", or
    an op such as "gemv"); `origin` is "decoder" for the decoder's own code, else the op whose
    implementation launches it (a mask an attention implementation builds); `source` is
    "declared" (read off our code) or "observed" (a library's kernels seen in a profiler's
    kernel list, never timed)."""

    name: str
    kind: str
    work: Work
    plan: LaunchPlan | None = None
    count: int = 1
    call: str = ""
    origin: str = "decoder"
    source: str = "declared"
    # The op call the plan belongs to ("impl:case id"), for an op's kernels: a model run
    # records each key's plan as it ran (a tuned choice depends on the process), so that the
    # step can be predicted again later from what was recorded.
    plan_key: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kernel kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.count < 1:
            raise ValueError(f"{self.name}: count must be >= 1, got {self.count}")

    @property
    def launches(self) -> int:
        """Kernels launched per occurrence: the plan's, or one."""
        return self.plan.launches if self.plan is not None else 1


@dataclass(frozen=True)
class StepPrediction:
    """A step's kernels, the tiered prediction of one occurrence of each, and the sums."""

    kernels: tuple[StepKernel, ...]
    tiered: tuple[tiers.Tiered, ...]
    breakdown: dict[str, float] = field(default_factory=dict)

    @property
    def time_s(self) -> float:
        return sum(k.count * t.time_s for k, t in zip(self.kernels, self.tiered, strict=True))

    @property
    def launches(self) -> int:
        return sum(k.count * k.launches for k in self.kernels)

    def by_kind(self) -> dict[str, float]:
        """Seconds per kernel kind (each kind's kernels, whole: launch and fixed included)."""
        out = dict.fromkeys(KINDS, 0.0)
        for kernel, tiered in zip(self.kernels, self.tiered, strict=True):
            out[kernel.kind] += kernel.count * tiered.time_s
        return out


def kernel_breakdown(kernel: StepKernel, tiered: tiers.Tiered) -> dict[str, float]:
    """One occurrence of `kernel` split into `BREAKDOWN`: launch and fixed terms as they are,
    the body (the rest) by the kernel's kind; attention's body is its memory and write-back
    terms (the cache streamed) under `kv_cache`, the rest (tensor, exp2, ALU) under
    `attention`."""
    out = dict.fromkeys(BREAKDOWN, 0.0)
    launch, fixed = tiered.terms.get("launch", 0.0), tiered.terms.get("fixed", 0.0)
    out["launch"], out["fixed"] = launch, fixed
    body = tiered.time_s - launch - fixed
    if kernel.kind == "attention":
        streamed = tiered.terms.get("memory", 0.0) + tiered.terms.get("writeback", 0.0)
        out["kv_cache"] = min(body, streamed)
        rest = body - out["kv_cache"]
        out["attention"] = rest if rest > 1e-9 * body else 0.0  # not a rounding residue
    else:
        where = {
            "projection": "weights",
            "kv_append": "kv_cache",
            "lm_head": "lm_head",
        }.get(kernel.kind, "elementwise")
        out[where] = body
    return out


def predict_step(
    kernels: Sequence[StepKernel], cal: Calibration, datasheet: Roof
) -> StepPrediction:
    """The step's time as the sum of its kernels' tiered predictions (`tiers.predict`, each
    graph-replayed, with the kernel's declared plan), with the breakdown of `BREAKDOWN`."""
    if not kernels:
        raise ValueError("a step has at least one kernel")
    tiered = tuple(
        tiers.predict(k.work, cal, datasheet, method=STEP_METHOD, plan=k.plan) for k in kernels
    )
    total = dict.fromkeys(BREAKDOWN, 0.0)
    for kernel, t in zip(kernels, tiered, strict=True):
        for term, seconds in kernel_breakdown(kernel, t).items():
            total[term] += kernel.count * seconds
    return StepPrediction(tuple(kernels), tiered, total)
