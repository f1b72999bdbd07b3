"""What `roofbench tp` measures, as data: sweeps, points, the reduced model its output is checked
on, and the theory half of each record (theory.tp: the per-GPU phase roofline of the model's
Megatron split plus its all-reduces and logits all-gather on the link).

A record's columns read as a model run's (op `ttft` or `tbt`, batch, seq), with `gpus` the TP
size; `flops` and `bytes` are one GPU's, `predicted_s` is theory.tp's step on the GPU's datasheet
roof and the calibrated link (the datasheet's when there is no calibration),
`predicted_datasheet_s` on the datasheet roof and link; `plan` spells the prediction out: the
per-GPU step, the all-reduces (count, message, time) and the logits' all-gather.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from roofbench.bench.core.records import Record
from roofbench.theory import comm, llm, tp
from roofbench.theory.llm import ModelConfig
from roofbench.theory.roofline import Roof


@dataclass(frozen=True)
class TPSweep:
    ttft_batches: tuple[int, ...]
    ttft_prompts: tuple[int, ...]
    tbt_batches: tuple[int, ...]
    tbt_contexts: tuple[int, ...]


SWEEPS = {
    "quick": TPSweep((1,), (512, 2048), (1, 16), (512, 4096)),
    "full": TPSweep((1, 4), (128, 512, 2048, 8192), (1, 4, 16, 64), (512, 2048, 8192, 32768)),
}
# The check: a prefill of CHECK_BATCH prompts of CHECK_TOKENS tokens, then CHECK_STEPS decode
# steps, on a reduced model (`check_config`) against the whole model in float64.
CHECK_BATCH, CHECK_TOKENS, CHECK_STEPS = 2, 8, 2
CHECK_LAYERS, CHECK_HIDDEN = 2, 256
# Relative L2 error of the logits allowed against float64, by the run's dtype: the model gate's
# (bench.model.gate), where a wiring error gives O(1).
CHECK_TOLERANCE = {"bf16": 5e-2, "fp16": 1e-2, "fp32": 2e-3}


@dataclass(frozen=True)
class TPPoint:
    op: str  # ttft | tbt
    batch: int
    seq: int  # the prompt (ttft) or the cached context (tbt)


def points(sweep: str, max_seq: int | None = None) -> list[TPPoint]:
    """The sweep's points in the order they are measured, those of at most `max_seq` tokens."""
    if sweep not in SWEEPS:
        raise ValueError(f"unknown sweep {sweep!r} (known: {', '.join(SWEEPS)})")
    s = SWEEPS[sweep]
    out = [TPPoint("ttft", b, n) for b in s.ttft_batches for n in s.ttft_prompts]
    out += [TPPoint("tbt", b, c) for b in s.tbt_batches for c in s.tbt_contexts]
    kept = [p for p in out if max_seq is None or p.seq <= max_seq]
    if not kept:
        raise ValueError(f"no point of sweep {sweep} has at most {max_seq} tokens")
    return kept


def check_config(config: ModelConfig, ranks: int) -> ModelConfig:
    """The model the output is checked on: the same heads, KV heads and head_dim (so each rank's
    attention has the real model's shape), CHECK_LAYERS layers, a hidden size of CHECK_HIDDEN
    and 64 intermediate and 128 vocab rows per rank."""
    tp.shard(config, ranks)
    return dataclasses.replace(
        config,
        name=f"{config.name}-check",
        num_layers=CHECK_LAYERS,
        hidden_size=CHECK_HIDDEN,
        intermediate_size=64 * ranks,
        vocab_size=128 * ranks,
        tie_word_embeddings=False,
    )


def slug(name: str) -> str:
    """A model name usable in a case id: anything but letters, digits and ._- becomes -."""
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in name) or "model"


def case_id(config: ModelConfig, ranks: int, point: TPPoint) -> str:
    """e.g. llama3-70b-tp8/tbt/b16_c4096, llama3-70b-tp2/ttft/b1_n512."""
    length = f"c{point.seq}" if point.op == "tbt" else f"n{point.seq}"
    return f"{slug(config.name)}-tp{ranks}/{point.op}/b{point.batch}_{length}"


def explain(step: tp.TPStep) -> str:
    """The prediction term by term, for the record's `plan`."""
    reduce, gather = step.all_reduce, step.all_gather
    return (
        f"per-GPU {step.per_gpu_s * 1e3:.4g} ms + {step.all_reduces} x {reduce.algorithm} "
        f"all_reduce of {reduce.size_bytes:.0f} B ({reduce.time_s * 1e6:.3g} us each) + "
        f"{gather.algorithm} all_gather of {gather.size_bytes:.0f} B ({gather.time_s * 1e6:.3g} "
        f"us) over {step.tp} GPUs"
    )


def tp_record(
    config: ModelConfig,
    ranks: int,
    point: TPPoint,
    impl: str,
    dtype: str,
    identity: dict,
    roof: Roof | None,
    calibrated: comm.Link | None,
    datasheet: comm.Link | None,
) -> Record:
    """The theory half of one point's record (no prediction without the GPU's roof)."""
    part = tp.shard(config, ranks)
    per_gpu = llm.decode_step if point.op == "tbt" else llm.prefill
    cost = per_gpu(part, roof, point.seq, point.batch, dtype) if roof else None
    chosen = calibrated or datasheet
    step = on_datasheet = None
    if roof is not None and chosen is not None:
        step = tp.phase(config, roof, chosen, ranks, point.op, point.batch, point.seq, dtype)
    if roof is not None and datasheet is not None:
        on_datasheet = tp.phase(
            config, roof, datasheet, ranks, point.op, point.batch, point.seq, dtype
        )
    return Record(
        case=case_id(config, ranks, point),
        op=point.op,
        impl=impl,
        dtype=dtype,
        batch=point.batch,
        seq=point.seq,
        m=point.batch if point.op == "tbt" else point.batch * point.seq,
        heads=part.num_heads,
        kv_heads=part.num_kv_heads,
        head_dim=part.head_dim,
        flops=cost.flops if cost else None,
        bytes=cost.bytes_ if cost else None,
        intensity=cost.intensity if cost else None,
        predicted_s=step.time_s if step else None,
        predicted_datasheet_s=on_datasheet.time_s if on_datasheet else None,
        bound=cost.bound if cost else None,
        plan=explain(step) if step else "",
        plan_source="theory" if step else "",
        gpus=ranks,
        **{k: v for k, v in identity.items() if k in Record.__dataclass_fields__},
    )


def check_record(
    config: ModelConfig, ranks: int, impl: str, dtype: str, identity: dict, rel: float, abs_: float
) -> Record:
    """The check's record: the reduced model's logits against float64 (op `gate`)."""
    tol = CHECK_TOLERANCE[dtype]
    ok = rel <= tol  # NaN fails
    reason = "" if ok else f"logits differ from float64 by {rel:.3g} (relative L2) > {tol:g}"
    shape = f"b{CHECK_BATCH}_n{CHECK_TOKENS}_steps{CHECK_STEPS}"
    return Record(
        case=f"{slug(config.name)}-tp{ranks}/gate/{shape}",
        op="gate",
        impl=impl,
        dtype=dtype,
        rel_err=rel,
        max_abs_err=abs_,
        status="ok" if ok else "failed",
        reason=reason,
        gpus=ranks,
        plan=f"checked on {config.name}-check: {CHECK_LAYERS} layers, hidden {CHECK_HIDDEN}",
        **{k: v for k, v in identity.items() if k in Record.__dataclass_fields__},
    )
