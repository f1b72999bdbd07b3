"""The model gate: before any timing, each backend's logits against the torch backend's.

Prefill and one decode step for each (batch, prompt tokens) of GATE_SHAPES, on the same weights
and tokens; a backend over the tolerance is `failed` for every point of that model and never
timed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from roofbench.bench.core.records import Record
from roofbench.bench.model.points import DTYPE, slug
from roofbench.theory.llm import ModelConfig

# Relative L2 error of logits allowed against the torch backend. bf16: seen on the CPU, a bf16
# decoder against the same rounded weights in fp32 differed by 1.2e-2 (8 layers) to 2.4e-2
# (80 layers); two bf16 implementations differ by less, and a wiring error gives O(1).
GATE_TOLERANCE = {"bf16": 5e-2, "fp16": 1e-2, "fp32": 2e-3}
# (batch, prompt tokens) of the gate: prefill, then one decode step. They cover GEMV (1 row),
# GEMM (64, 256 and 32 rows), flash prefill and split-KV decode attention.
GATE_SHAPES = ((1, 64), (32, 8))


@dataclass(frozen=True)
class GateResult:
    backend: str
    ok: bool
    rel_err: float
    max_abs_err: float
    tolerance: float
    reason: str


def _gate_logits(model, shapes, seed: int) -> list:
    """Prefill logits and one decode step's logits for each (batch, tokens) of `shapes`."""
    import torch

    gen = torch.Generator(device=model.device).manual_seed(seed)
    vocab, device = model.config.vocab_size, model.device
    out = []
    for batch, n in shapes:
        toks = torch.randint(0, vocab, (batch, n + 1), generator=gen, device=device)
        model.allocate_cache(batch, n + 1)
        out.append(model.prefill(toks[:, :n]).float())
        lens = torch.full((batch,), n, dtype=torch.int32, device=device)
        out.append(model.decode_step(toks[:, n:].contiguous(), lens).float())
    model.free_cache()
    return out


def gate(models: dict, shapes=GATE_SHAPES, seed: int = 0) -> dict[str, GateResult]:
    """Each backend's logits against the torch backend's (same weights and tokens): relative L2
    error over all outputs <= GATE_TOLERANCE[dtype], and every logit finite."""
    first = next(iter(models.values()))
    reference = models.get("torch") or first.with_backend("torch")
    tol = GATE_TOLERANCE[first.dtype_name]
    try:
        expected = _gate_logits(reference, shapes, seed)
    except Exception as err:  # the reference itself broke: nothing can be judged
        why = f"torch reference raised {type(err).__name__}: {err}"
        return {b: GateResult(b, False, math.nan, math.nan, tol, why) for b in models}
    results = {}
    for backend, model in models.items():
        try:
            got = expected if model is reference else _gate_logits(model, shapes, seed)
        except Exception as err:
            why = f"raised {type(err).__name__}: {err}"
            results[backend] = GateResult(backend, False, math.nan, math.nan, tol, why)
            continue
        rel = max(float((g - e).norm() / e.norm()) for g, e in zip(got, expected, strict=True))
        max_abs = max(float((g - e).abs().max()) for g, e in zip(got, expected, strict=True))
        finite = all(bool(g.isfinite().all()) for g in got)
        if not finite:
            why = "non-finite logits"
        elif not rel <= tol:
            why = f"logits differ from the torch backend's by {rel:.3g} (relative L2) > {tol:g}"
        else:
            why = "ok"
        results[backend] = GateResult(backend, why == "ok", rel, max_abs, tol, why)
    return results


def gate_record(config: ModelConfig, result: GateResult, identity: dict) -> Record:
    shapes = ",".join(f"b{b}_n{n}" for b, n in GATE_SHAPES)
    return Record(
        case=f"{slug(config.name)}/gate/{shapes}",
        op="gate",
        impl=result.backend,
        dtype=DTYPE,
        heads=config.num_heads,
        kv_heads=config.num_kv_heads,
        head_dim=config.head_dim,
        rel_err=result.rel_err,
        max_abs_err=result.max_abs_err,
        status="ok" if result.ok else "failed",
        reason="" if result.ok else f"gate: {result.reason}",
        **{k: v for k, v in identity.items() if k in Record.__dataclass_fields__},
    )
