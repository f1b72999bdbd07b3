"""The "fused" backend of `kernels.llama.Llama`: a decode step or prefill on the fused
element-wise kernels (`kernels.fused`) and the GEMV's epilogues (`kernels.gemv`), as the module
docstring of `kernels.fused` describes; `kernels.llama_plan` declares what these launch."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import gemv as _gemv
from .decode_attention import decode_attention as triton_decode_attention
from .decode_rope_attention import rope_decode_attention
from .fused import add_rms_norm, rope_kv_append, silu_mul
from .gemv_pack import PACK_N, PackedWeight, pack

# The smallest batch at which a decode step launches rotary + KV append and our decode
# attention (split and combine) as programmatic dependents too, as it does every GEMV
# (`gemv(pdl=True)`); 0: never. On an H200 (Llama 3 8B fused-folded, context 512, same
# process, alternating) it made the step 1.6% faster at batch 4 and 16 (4.32 against 4.40 ms,
# 4.42 against 4.49) but 5-6% slower at batch 1 (4.23 against 3.99-4.04 ms), logits identical.
PDL_ATTENTION_MIN_BATCH = 2

# The smallest batch at which a decode step whose attention is our kernel runs rotary, the KV
# append and the attention with its combine as one kernel (`kernels.decode_rope_attention`)
# instead of three (`rope_kv_append`, `kernels.decode_attention`'s split and combine passes)
# and the lengths' add; 0: never. On an H200 (Llama 3 8B heads, 32 layers' attention back to
# back, graph replay) the one kernel took 12.5 us a layer against 13.75 at batch 16, context
# 512, but 8.2 against 7.2 at batch 1 and 11.9 against 11.0 at 4, 16.0 against 12.3 at batch 1,
# context 4096 and 43.6 against 39.8 at 32768; the whole fused-folded step at context 512 took
# 4.32 against 4.36 ms at batch 16, 3.99 against 3.99 at 1 and 4.35 against 4.26 at 4. Above
# batch 16 (one slice per sequence: no combine) it was not timed.
ONE_KERNEL_ATTENTION_MIN_BATCH = 16

# What the decoder calls them by (`Llama._fused`; `kernels.llama_plan` declares these calls).
KERNELS = {
    "add_rms_norm": add_rms_norm,
    "rope_kv_append": rope_kv_append,
    "rope_decode_attention": rope_decode_attention,
    "silu_mul": silu_mul,
    "gemv_epilogue": _gemv.gemv,  # with its epilogue (norm, bias, SiLU x up, residual)
}


def on_gemv(rows: int) -> bool:
    """Whether a step of `rows` token rows runs its projections on the epilogue GEMV."""
    return rows <= _gemv.TOKENS_PER_DOT


def folds_norm(rows: int, gains_folded: bool = False) -> bool:
    """Whether the RMSNorm runs in the next GEMV's epilogue at `rows` token rows: at one row,
    or at every GEMV row count where the norms' gains are folded into the weights. On the
    tensor-core path (2..16 rows), with the sums of squares taken as x x^T on the tensor cores,
    a norm with its gain in the K loop measured 1.20-1.26x the plain GEMV's time on an H200
    (6144x4096 and 28672x4096 at 4 and 16 rows), its gain folded into the weights 1.03-1.10x;
    so unfolded, the norm is a kernel of its own there (`add_rms_norm` without a delta) and the
    GEMV reads its output. Folded, it stays in the epilogue: with its weights packed too
    (`fold_gains`) the whole step measured 0.94x `fused`'s at one row, 0.98x at 4 and 0.95x at
    16 (Llama 3 8B, context 512; 1.03x at 4 and 16 before the packing and the tensor-core
    path's 4-stage plan)."""
    return gains_folded or rows == 1


@dataclass(frozen=True)
class FoldedGains:
    """The "fused-folded" backend's copies of the matrices a norm feeds, each scaled by that
    norm's gain along K (W diag(gain), as a serving engine may do once at load time), so that
    the GEMV's epilogue applies only 1/rms (`gemv(rms=True)`): no gain in its K loop. Packed
    (`kernels.gemv_pack`), every GEMV weight is a packed copy, O's and down's included."""

    qkv: list  # per layer: wqkv diag(attn_norm)
    gate_up: list  # per layer: w_gate_up diag(mlp_norm)
    lm_head: torch.Tensor | PackedWeight  # lm_head diag(norm)
    wo: list | None = None  # per layer, packed; None: the weights' own
    w_down: list | None = None


def fold_gains(weights, pack_n: int = PACK_N) -> FoldedGains:
    """`FoldedGains` of `kernels.llama_weights.Weights` (copies: the weights stay as they are,
    shared with the other backends), each product taken in fp32 and rounded once; with
    `pack_n` (0: not packed), packed in tiles of pack_n rows (`kernels.gemv_pack.pack`). On an
    H200 (Llama 3 8B, context 512) packed weights made one-row GEMVs 2-13% faster, the decode
    step 2.2% faster at batch 1 and 0.8% at 16, but 1.9% slower at 4."""

    def fold(w: torch.Tensor, gain: torch.Tensor | None, glu: bool = False):
        w = w if gain is None else (w.float() * gain.float()[None, :]).to(w.dtype)
        return pack(w, pack_n, glu=glu) if pack_n else w

    layers = weights.layers
    return FoldedGains(
        [fold(layer.wqkv, layer.attn_norm) for layer in layers],
        [fold(layer.w_gate_up, layer.mlp_norm, glu=True) for layer in layers],
        fold(weights.lm_head, weights.norm),
        [fold(layer.wo, None) for layer in layers] if pack_n else None,
        [fold(layer.w_down, None) for layer in layers] if pack_n else None,
    )


def _gemv_layers(model, x, attend):
    """The layers with every projection on the epilogue GEMV, over the residual stream x
    [T, hidden] (updated in place, and returned): the residual adds in O's and down's, SiLU x
    up in gate|up's, and each norm in the epilogue of the projection after it (`folds_norm`)."""
    fn, w, eps = model._fused["gemv_epilogue"], model.weights, model.config.rms_norm_eps
    folded = model._folded

    def gemv(*args, **kwargs):  # each a programmatic dependent of the kernel before it
        return fn(*args, **kwargs, pdl=True)

    def normed(gain, weight, folded_weight):
        """The GEMV's input, weight and epilogue for a norm of the stream with `gain` (the
        decision `kernels.llama_plan` declares: `folds_norm`)."""
        if not folds_norm(x.shape[0], folded is not None):
            return model._fused["add_rms_norm"](None, x, gain, eps)[0], weight, {}
        if folded is not None:
            return x, folded_weight, {"rms": True, "eps": eps}
        return x, weight, {"norm": gain, "eps": eps}

    for i, layer in enumerate(w.layers):
        qkv_w, gate_up_w = (None, None) if folded is None else (folded.qkv[i], folded.gate_up[i])
        wo, w_down = layer.wo, layer.w_down
        if folded is not None and folded.wo is not None:
            wo, w_down = folded.wo[i], folded.w_down[i]
        h, weight, norm = normed(layer.attn_norm, layer.wqkv, qkv_w)
        qkv = gemv(h, weight, bias=layer.bqkv, **norm)
        gemv(attend(i, qkv), wo, x, bias=layer.bo, residual=x)
        h, weight, norm = normed(layer.mlp_norm, layer.w_gate_up, gate_up_w)
        act = gemv(h, weight, bias=layer.b_gate_up, glu=True, **norm)
        gemv(act, w_down, x, bias=layer.b_down, residual=x)
    return x


def _gemv_logits(model, last):
    """The LM head with the final norm (in its epilogue at one row, `folds_norm`), over the
    last token rows of each sequence (a strided view of the stream in a prefill)."""
    w, eps, folded = model.weights, model.config.rms_norm_eps, model._folded
    head = model._fused["gemv_epilogue"]
    if not folds_norm(last.shape[0], folded is not None):
        last = model._fused["add_rms_norm"](None, last, w.norm, eps)[0]
        return head(last, w.lm_head, pdl=True)
    if folded is not None:
        return head(last, folded.lm_head, rms=True, eps=eps, pdl=True)
    return head(last, w.lm_head, norm=w.norm, eps=eps, pdl=True)


def _layers(model, x, batch: int, attend):
    """The layers over the residual stream x [T, hidden], updated in place: each layer's input
    norm takes the previous layer's MLP output as its residual add (the first has none);
    `attend(i, qkv)` returns layer i's attention output [T, q_dim]. Returns (the last MLP
    output, x): the final norm adds the one to the other."""
    k, w, eps = model._fused, model.weights, model.config.rms_norm_eps
    delta = None
    for i, layer in enumerate(w.layers):
        h, x = k["add_rms_norm"](delta, x, layer.attn_norm, eps)
        o = attend(i, model._linear(h, layer.wqkv, layer.bqkv))
        h, x = k["add_rms_norm"](model._linear(o, layer.wo, layer.bo), x, layer.mlp_norm, eps)
        gate_up = model._linear(h, layer.w_gate_up, layer.b_gate_up)
        delta = model._linear(k["silu_mul"](gate_up), layer.w_down, layer.b_down)
    return delta, x


def _logits(model, delta, x):
    h, _ = model._fused["add_rms_norm"](delta, x, model.weights.norm, model.config.rms_norm_eps)
    return model._linear(h, model.weights.lm_head)


def one_kernel_attention(impl: str, batch: int) -> bool:
    """Whether a decode step of `batch` sequences whose decode attention is the implementation
    named `impl` runs rotary, the KV append and attention as one kernel (our attention only,
    from `ONE_KERNEL_ATTENTION_MIN_BATCH`)."""
    return 0 < ONE_KERNEL_ATTENTION_MIN_BATCH <= batch and impl == "triton"


def decode_step(model, tokens: torch.Tensor, context_lens: torch.Tensor) -> torch.Tensor:
    """`Llama.decode_step` on the fused backend (its checks made): the new token of sequence b
    rotated at position context_lens[b] and written to the cache there, read from the device."""
    cfg, w, cache = model.config, model.weights, model.cache
    batch = tokens.shape[0]
    attention = model._fn["decode_attention"]
    one_kernel = one_kernel_attention(model.impl_names["decode_attention"], batch)
    if not one_kernel:
        torch.add(context_lens, 1, out=cache.attend_lens)
    rope = model._fused["rope_kv_append"]
    # Rotary and our attention's kernels, like the GEMVs, as programmatic dependents
    on = 0 < PDL_ATTENTION_MIN_BATCH <= batch
    pdl = {"pdl": True} if on else {}
    attention_pdl = pdl if attention is triton_decode_attention else {}

    def attend_one_kernel(i, qkv):
        heads = (cfg.num_heads, cfg.num_kv_heads)
        kv = (cache.k(i), cache.v(i))
        fn = model._fused["rope_decode_attention"]
        o = fn(qkv, cache.cos, cache.sin, *heads, context_lens, *kv, **pdl)  # [B, Hq, D]
        return o.reshape(batch, cfg.q_dim)

    def attend(i, qkv):
        k_cache, v_cache = cache.k(i), cache.v(i)
        heads = (cfg.num_heads, cfg.num_kv_heads)
        lens, kv = context_lens, (k_cache, v_cache)
        q, _, _ = rope(qkv, cache.cos, cache.sin, batch, *heads, lens, *kv, **pdl)
        o = attention(q[:, 0], *kv, cache.attend_lens, **attention_pdl)  # [B, Hq, D]
        return o.reshape(batch, cfg.q_dim)

    if one_kernel:
        attend = attend_one_kernel
    x = torch.nn.functional.embedding(tokens.reshape(batch), w.embed)
    if on_gemv(batch):
        return _gemv_logits(model, _gemv_layers(model, x, attend))
    return _logits(model, *_layers(model, x, batch, attend))


def forward(model, tokens: torch.Tensor, cache, cos: torch.Tensor, sin: torch.Tensor):
    """`Llama._forward` on the fused backend: N positions per sequence from 0, K and V written
    to `cache` (or to buffers of their own when none); logits of each sequence's last token."""
    cfg, w = model.config, model.weights
    batch, n = tokens.shape
    rope = model._fused["rope_kv_append"]
    attention = model._fn["prefill_attention"]

    def attend(i, qkv):
        dst = (None, None) if cache is None else (cache.k(i), cache.v(i))
        heads = (cfg.num_heads, cfg.num_kv_heads)
        q, k, v = rope(qkv, cos, sin, batch, *heads, None, *dst, q_heads_outer=True)
        o = attention(q, k[:, :, :n], v[:, :, :n], causal=True)  # [B, Hq, N, D]
        return o.transpose(1, 2).reshape(batch * n, cfg.q_dim)

    x = torch.nn.functional.embedding(tokens.reshape(-1), w.embed)  # [B*N, hidden]
    if on_gemv(batch * n):
        return _gemv_logits(model, _gemv_layers(model, x, attend).view(batch, n, -1)[:, -1])
    delta, x = _layers(model, x, batch, attend)
    # The final norm over each sequence's last token only (strided rows of the stream).
    return _logits(model, delta.view(batch, n, -1)[:, -1], x.view(batch, n, -1)[:, -1])
