"""The kernels one step of `kernels.llama.Llama` launches, per backend and phase, with their costs.

Read off the decoder's code (`Llama.prefill`, `decode_step`, `naive_step` and the pieces they
call), one `theory.step.StepKernel` per kernel the code launches, each with its op cost from
`theory.ops`, so that `theory.step.predict_step` can predict the step kernel by kernel. A test
runs the decoder at a tiny size and counts what it calls against this list, so the two cannot
drift apart; a GPU test counts the kernels a profiler sees.

Per step (T token rows: B x N in a prefill, B in a decode step; L layers):

- decode only: the positions and lengths written (`copy_`, `add`), the rotary tables gathered at
  the positions (two `index_select`);
- the embedding lookup (`embedding`);
- per layer: two RMSNorms (torch's fused kernel), the QKV, O, gate|up and down projections (the
  backend's GEMV up to 16 rows, GEMM above; a bias add after each biased one), rotary on Q and K
  together (two `mul`, two `addcmul`, one `cat`), K and V into the cache (two `scatter_` in a
  decode step, two `copy_` in a prefill, none in a naive step), attention (the backend's), the
  attention output made contiguous where the implementation returns it heads-outer (a prefill
  on our kernel), two residual adds, SiLU and its product with up;
- the final RMSNorm (in a prefill of several sequences, after the copy of their last tokens that
  torch's fused CUDA kernel makes of a strided input: observed) and the LM head (logits of one
  token per sequence).

On the "fused" backend (`kernels.fused`) the element-wise kernels are instead: the lengths
(decode only), the embedding, per layer two `add_rms_norm` (the first layer's input norm with no
residual add), one `rope_kv_append` (Q and K rotated, K and V into the cache) and one `silu_mul`;
the final `add_rms_norm` over the last token of each sequence; the ops as on "triton".

An op call carries the plan its implementation declares for that case (our kernels' grids,
splits and partials; a vendor library counts as one kernel). The decoder calls implementations
without `out=`, so a reference's copy into `out` is not made and is dropped from its plan. The
torch decode attention gets the lengths as a device tensor and builds a key mask on the device
(`arange`, `lt`: its own code), which torch's SDPA turns into an additive mask (`zeros_like`,
`logical_not`, `masked_fill_`: observed in a profiler's kernel list on an H200 with torch 2.11).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from roofbench.theory import ops
from roofbench.theory.llm import ModelConfig
from roofbench.theory.plan import LaunchPlan
from roofbench.theory.step import StepKernel
from roofbench.theory.tiers import Work

from . import catalog
from .attention import attention_reference
from .decode_attention import decode_attention_reference
from .llama import FUSED, GEMV_MAX_M, resolve_backend
from .registry import Impl

PHASES = ("prefill", "decode", "naive")
INDEX_BYTES = 8  # token ids and positions: int64
LENGTH_BYTES = 4  # context lengths: int32
MASK_BYTES = 1  # a boolean key mask
COPY_OUT = "copy_out"  # the last kernel of a reference's plan (`kernels.spec.vendor_then_copy`)


def _calls(impl: Impl, fn) -> bool:
    """Whether `impl` runs `fn` (itself, or wrapped by `kernels.sdpa.forced`)."""
    return impl.fn is fn or getattr(impl.fn, "__wrapped__", None) is fn


def decoder_plan(impl: Impl, case) -> LaunchPlan | None:
    """The plan of one call of `impl` from the decoder: the implementation's own, less the copy
    into `out` (and the partial bytes it shares with the vendor's kernel) that a reference makes
    only when given `out=`, which the decoder never gives."""
    plan = impl.launch_plan(case)
    if plan is None or plan.kernels[-1].name != COPY_OUT or plan.launches < 2:
        return plan
    kept = tuple(dataclasses.replace(k, partial_bytes=0.0) for k in plan.kernels[:-1])
    return dataclasses.replace(plan, kernels=kept)


class _Step:
    """Collects a step's kernels."""

    def __init__(self, config: ModelConfig, impls: dict[str, str], dtype: str):
        self.config, self.dtype = config, dtype
        self.impls = {op: catalog.get_impl(op, name) for op, name in impls.items()}
        self.size = ops.dtype_bytes(dtype)
        self.kernels: list[StepKernel] = []

    def add(self, name, kind, cost, call, count=1, origin="decoder", source="declared"):
        work = Work(cost)
        self.kernels.append(StepKernel(name, kind, work, None, count, call, origin, source))

    def op(self, name: str, kind: str, op: str, count: int, **shape) -> Impl:
        impl = self.impls[op]
        case = catalog.make_case(op, dtype=self.dtype, **shape)
        plan = decoder_plan(impl, case)
        self.kernels.append(StepKernel(name, kind, case.work(), plan, count, op))
        return impl

    def linear(self, name: str, rows: int, n: int, k: int, bias: bool, count: int, kind=None):
        """x [rows, k] @ W[n, k]^T: the GEMV op up to GEMV_MAX_M rows, else GEMM; then the
        bias add (`y.add_(b)`: y and b read, y written)."""
        op = "gemv" if rows <= GEMV_MAX_M else "gemm"
        self.op(name, kind or "projection", op, count, m=rows, n=n, k=k)
        if bias:
            e = self.size
            self.add(
                f"{name}_bias",
                "bias",
                ops.elementwise((rows + 1) * n * e, rows * n * e),
                "add_",
                count,
            )


def step_kernels(
    config: ModelConfig,
    backend: str | Mapping[str, str] = "torch",
    phase: str = "decode",
    batch: int = 1,
    seq: int = 512,
    dtype: str = "bf16",
    max_seq: int | None = None,
) -> tuple[StepKernel, ...]:
    """The kernels of one step of the decoder on `backend`: `phase` "prefill" (`seq` prompt
    tokens per sequence, K and V cached), "naive" (the same forward, no cache) or "decode" (one
    token per sequence over `seq` cached ones, the cache holding `max_seq` positions: seq + 1
    by default, as a model run allocates it). Raises ValueError for an unknown phase, backend
    or a size the ops refuse."""
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {', '.join(PHASES)}, got {phase!r}")
    if batch <= 0 or seq <= 0:
        raise ValueError(f"batch and seq must be positive, got {batch}, {seq}")
    cfg, layers = config, config.num_layers
    step = _Step(cfg, resolve_backend(backend), dtype)
    if backend == FUSED:
        return _fused_kernels(step, phase, batch, seq, max_seq)
    e, h, d = step.size, cfg.hidden_size, cfg.head_dim
    decode = phase == "decode"
    rows = batch if decode else batch * seq
    half_dim = d // 2

    if decode:
        lengths = LENGTH_BYTES * batch
        step.add("positions", "index", ops.elementwise(lengths, INDEX_BYTES * batch), "copy_")
        step.add("attend_lens", "index", ops.elementwise(lengths, lengths), "add")
        table = ops.gather(batch, half_dim * e, INDEX_BYTES * batch)
        step.add("rope_tables", "index", table, "index_select", 2)
    step.add("embedding", "embedding", ops.gather(rows, h * e, INDEX_BYTES * rows), "embedding")

    # --- per layer ---------------------------------------------------------------------------
    step.add("norm", "norm", ops.rms_norm(rows, h, dtype), "rms_norm", 2 * layers)
    qkv_n = cfg.q_dim + 2 * cfg.kv_dim
    step.linear("qkv", rows, qkv_n, h, cfg.has_qkv_bias, layers)
    # Rotary over Q and K together: each half [T, Hq + Hkv, D/2] against a table of D/2 per
    # position (B positions in a decode step, N broadcast over the batch in a prefill).
    half = rows * (cfg.num_heads + cfg.num_kv_heads) * half_dim * e
    table = (batch if decode else seq) * half_dim * e
    step.add("rope_mul", "rotary", ops.elementwise(half + table, half), "mul", 2 * layers)
    step.add(
        "rope_addcmul", "rotary", ops.elementwise(2 * half + table, half), "addcmul", 2 * layers
    )
    step.add("rope_cat", "rotary", ops.elementwise(2 * half, 2 * half), "cat", layers)
    kv_row = cfg.kv_dim * e  # one token's K (or V) of one layer
    if decode:
        append = ops.gather(batch * cfg.num_kv_heads, d * e, INDEX_BYTES * batch)
        step.add("kv_append", "kv_append", append, "scatter_", 2 * layers)
    elif phase == "prefill":
        step.add(
            "kv_append",
            "kv_append",
            ops.elementwise(rows * kv_row, rows * kv_row),
            "copy_",
            2 * layers,
        )
    _attention(step, decode, batch, seq, max_seq)
    step.linear("o_proj", rows, h, cfg.q_dim, cfg.attention_bias, layers)
    step.add(
        "residual", "residual", ops.elementwise(2 * rows * h * e, rows * h * e), "add", 2 * layers
    )
    inter = cfg.intermediate_size
    step.linear("gate_up", rows, 2 * inter, h, cfg.mlp_bias, layers)
    act = rows * inter * e
    step.add("silu", "activation", ops.elementwise(act, act), "silu", layers)
    step.add("silu_x_up", "activation", ops.elementwise(2 * act, act), "mul", layers)
    step.linear("down", rows, h, inter, cfg.mlp_bias, layers)

    # --- the logits of each sequence's last token ----------------------------------------------
    if not decode and batch > 1 and seq > 1:
        # The last tokens are a strided view of the residual stream, which torch's fused CUDA
        # RMSNorm first copies to a contiguous tensor (observed; the CPU's composite norm does
        # not).
        last = batch * h * e
        step.add(
            "last_tokens",
            "layout",
            ops.elementwise(last, last),
            "rms_norm",
            1,
            "rms_norm",
            "observed",
        )
    step.add("final_norm", "norm", ops.rms_norm(batch, h, dtype), "rms_norm")
    step.linear("lm_head", batch, cfg.vocab_size, h, False, 1, kind="lm_head")
    return tuple(step.kernels)


def _attention(step: _Step, decode: bool, batch: int, seq: int, max_seq: int | None) -> None:
    """The attention op of every layer, with what its implementation or its output's layout
    adds (the torch decode attention's key mask; a heads-outer prefill output made contiguous)."""
    cfg, layers, e, d = step.config, step.config.num_layers, step.size, step.config.head_dim
    rows = batch if decode else batch * seq
    heads = {"heads": cfg.num_heads, "kv_heads": cfg.num_kv_heads, "head_dim": d}
    if decode:
        keys = max_seq if max_seq is not None else seq + 1
        impl = step.op(
            "attention",
            "attention",
            "decode_attention",
            layers,
            batch=batch,
            seq=seq + 1,
            s_max=keys,
            **heads,
        )
        if _calls(impl, decode_attention_reference):
            _key_mask(step, batch, keys, layers)
    else:
        impl = step.op(
            "attention",
            "attention",
            "prefill_attention",
            layers,
            batch=batch,
            seq=seq,
            causal=True,
            **heads,
        )
        # o.transpose(1, 2).reshape(...) copies unless the output is heads-inner in memory,
        # as torch's SDPA kernels write it ([B, N, H, D] under a [B, H, N, D] view).
        if seq > 1 and cfg.num_heads > 1 and not _calls(impl, attention_reference):
            out = rows * cfg.q_dim * e
            step.add("attention_out", "layout", ops.elementwise(out, out), "reshape", layers)


def _key_mask(step: _Step, batch: int, keys: int, layers: int) -> None:
    """The key mask the torch decode attention builds from device lengths (`arange` of the key
    positions, `lt` against the lengths: [B, keys] booleans), and the three kernels torch's SDPA
    turns it into an additive mask with (a zero fill, a `logical_not`, a masked fill)."""
    e, cells = step.size, batch * keys
    origin = "decode_attention"
    step.add(
        "key_positions", "mask", ops.elementwise(0, INDEX_BYTES * keys), "arange", layers, origin
    )
    lt = ops.elementwise(INDEX_BYTES * keys + LENGTH_BYTES * batch, MASK_BYTES * cells)
    step.add("key_mask", "mask", lt, "lt", layers, origin)
    additive = (
        ("sdpa_mask_zeros", ops.elementwise(0, e * cells), "zeros_like"),
        ("sdpa_mask_not", ops.elementwise(MASK_BYTES * cells, MASK_BYTES * cells), "logical_not"),
        ("sdpa_mask_fill", ops.elementwise((MASK_BYTES + e) * cells, e * cells), "masked_fill_"),
    )
    for name, cost, call in additive:
        step.add(name, "mask", cost, call, layers, origin, "observed")


def _fused_kernels(
    step: _Step, phase: str, batch: int, seq: int, max_seq: int | None
) -> tuple[StepKernel, ...]:
    """The kernels of a step on the "fused" backend (`kernels.fused.decode_step`, `forward`):
    per layer two norms (the first layer's input norm plain, every other one with the residual
    add before it), the four projections, one rotary + KV append, attention and one SiLU x up;
    the final norm (with the last residual add) over each sequence's last token."""
    cfg, layers, e = step.config, step.config.num_layers, step.size
    h, d, dtype = cfg.hidden_size, cfg.head_dim, step.dtype
    decode = phase == "decode"
    rows = batch if decode else batch * seq
    if decode:
        lengths = LENGTH_BYTES * batch
        step.add("attend_lens", "index", ops.elementwise(lengths, lengths), "add")
    step.add("embedding", "embedding", ops.gather(rows, h * e, INDEX_BYTES * rows), "embedding")

    def add_norm(n: int):  # delta and residual read, the residual and the normed rows written
        return ops.rms_norm(n, h, dtype) + ops.elementwise(n * h * e, n * h * e)

    step.add("norm", "norm", ops.rms_norm(rows, h, dtype), "add_rms_norm")
    step.add("add_norm", "norm", add_norm(rows), "add_rms_norm", 2 * layers - 1)
    step.linear("qkv", rows, cfg.q_dim + 2 * cfg.kv_dim, h, cfg.has_qkv_bias, layers)
    # Q|K|V rows read, the cos and sin rows of the distinct positions read (B in a decode step,
    # N shared by the batch otherwise) with a decode step's positions; Q written, and K and V
    # into the cache (or their own buffers in a naive step).
    table = 2 * (batch if decode else seq) * (d // 2) * e
    index = LENGTH_BYTES * batch if decode else 0
    qkv_bytes = rows * (cfg.q_dim + 2 * cfg.kv_dim) * e
    rope = ops.elementwise(qkv_bytes + table + index, qkv_bytes)
    step.add("rope_kv_append", "rotary", rope, "rope_kv_append", layers)
    _attention(step, decode, batch, seq, max_seq)
    step.linear("o_proj", rows, h, cfg.q_dim, cfg.attention_bias, layers)
    inter = cfg.intermediate_size
    step.linear("gate_up", rows, 2 * inter, h, cfg.mlp_bias, layers)
    act = rows * inter * e
    step.add("silu_x_up", "activation", ops.elementwise(2 * act, act), "silu_mul", layers)
    step.linear("down", rows, h, inter, cfg.mlp_bias, layers)
    step.add("final_norm", "norm", add_norm(batch), "add_rms_norm")
    step.linear("lm_head", batch, cfg.vocab_size, h, False, 1, kind="lm_head")
    return tuple(step.kernels)
